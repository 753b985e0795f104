"""evo: coordinator-free evolution of image classifiers.

From Python (``launch.api``; see the README's "From Python")::

    import evo
    run = evo.open("runs/digits")        # or evo.init(...), evo.launch(...)
    run.individuals()                    # one row per individual (pandas)
    model = run.best()[0]                # .module(), .export(DIR), .evaluate()

``import evo`` imports nothing: the API (and what it needs) is imported on first use of one
of its names, so the torch-free workers and commands that import ``evo.*`` stay light.
"""

from __future__ import annotations

from typing import Any

API = ("open", "init", "launch", "Run", "Model")
__all__ = [*API, "EvoError"]


def __getattr__(name: str) -> Any:
    """``evo.open`` and the rest of the API, imported from ``launch.api`` when first asked for."""
    if name in API:
        from launch import api

        return getattr(api, name)
    if name == "EvoError":
        from evo.errors import EvoError

        return EvoError
    raise AttributeError(f"module 'evo' has no attribute {name!r}")

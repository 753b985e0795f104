"""Fitness modes as registered plug-ins: evaluators that stand in for training on datasets
of their own (``synthetic``: a cheap function of the DNA; ``nb201-*``: NAS-Bench-201's
tables). Every other dataset trains for real (:class:`evo.train.evaluator.TorchEvaluator`).

A mode is a class with a ``name``, the ``datasets`` it answers for, optional settings of its
own (:class:`evo.registry.Plugin`: config.json keeps them under the mode's block) and
:meth:`FitnessMode.for_run`, registered with :func:`register_mode`. Built-ins are imported on
first use; a separate package can register one through the ``evo.fitness_modes``
entry-point group. Torch-free.
"""

from __future__ import annotations

from typing import Any, ClassVar

from evo.registry import Plugin, Registry, RunView


class FitnessMode(Plugin):
    """An evaluator that answers for ``datasets`` instead of training on them."""

    datasets: ClassVar[tuple[str, ...]]

    @classmethod
    def for_run(cls, run: RunView, space: Any) -> Any:
        """The evaluator of ``run`` (its dataset is one of :attr:`datasets`)."""
        raise NotImplementedError


_REGISTRY: Registry[type[FitnessMode]] = Registry(
    "fitness mode", ("evo.train.synthetic", "evo.train.tabular"), "evo.fitness_modes")

register_mode = _REGISTRY.register
"""Class decorator: make a :class:`FitnessMode` subclass the mode named by its ``name``."""


def mode_names() -> list[str]:
    """Names of every registered fitness mode."""
    return _REGISTRY.names()


def mode_class(name: str) -> type[FitnessMode]:
    """The registered class of fitness mode ``name``; ValueError naming the known ones."""
    return _REGISTRY.get(name)


def mode_for_dataset(dataset_name: str) -> type[FitnessMode] | None:
    """The fitness mode that answers for ``dataset_name`` (None: the dataset trains for real)."""
    for name in mode_names():
        cls = mode_class(name)
        if dataset_name in cls.datasets:
            return cls
    return None

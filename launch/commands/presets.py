"""Defaults of ``evo init``: by dataset (:data:`DATASET_DEFAULTS`), and ``--preset NAME``, a
paper's search settings, filled in under the options given.

Only what the papers state (docs/SOURCES: /work/shared/SOURCES.md condenses them); a
preset's epochs become ``--steps`` once the dataset (its training-split size) is known.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from evo.config import TABULAR_DATASETS

from ..errors import UserError


@dataclass(frozen=True)
class Preset:
    """A paper's search settings, applied by ``--preset NAME`` under the options given
    explicitly. ``epochs`` become ``--steps``: that many passes over the dataset's training
    split at the run's batch size."""

    source: str
    settings: dict[str, Any]
    epochs: int
    note: str = ""


# Defaults that differ by dataset: the paper's 25,600 steps suit CIFAR on a GPU; the
# embedded digits default must finish a meaningful run on a laptop CPU in minutes.
DATASET_DEFAULTS = {
    "digits": {"population_size": 10, "steps": 400, "augment": False},
    "synthetic": {"population_size": 100, "steps": 0, "augment": False},
    "cifar10": {"population_size": 100, "steps": 25_600, "augment": True},
    "cifar100": {"population_size": 100, "steps": 25_600, "augment": True},
    # the user's own images: a search a workstation finishes in an afternoon, augmented like CIFAR
    "imagefolder": {"population_size": 20, "steps": 2_000, "augment": True},
    "npz": {"population_size": 20, "steps": 2_000, "augment": True},
    "hf": {"population_size": 20, "steps": 2_000, "augment": True},
}
# NAS-Bench-201's tables (evo.train.tabular): the benchmark's regularized-evolution baseline uses
# P=10, S=3 (D-X-Y/AutoDL-Projects scripts-search/NAS-Bench-201-algos/R-EA.sh); nothing is trained.
for _name in TABULAR_DATASETS:
    DATASET_DEFAULTS[_name] = {"population_size": 10, "tournament_size": 3, "steps": 0, "augment": False}


def defaults_text(key: str) -> str:
    """'10 for digits, 100 for the others' from DATASET_DEFAULTS (help text that cannot drift)."""
    by_value: dict = {}
    for name, d in DATASET_DEFAULTS.items():
        by_value.setdefault(d[key], []).append(name)
    return ", ".join(f"{value:,} for {'/'.join(names)}" for value, names in by_value.items())


PRESETS = {
    "nasnet-search": Preset(
        "Zoph et al. 2018 (NASNet), the search: child models of N=2 cells per stack trained 20 epochs",
        {"search_space": "nasnet", "nasnet_cells": 2}, epochs=20,
        note="their RL controller and its cosine-decayed child training are not evo's: selection stays aging "
             "and children train at the DNA's constant learning rate"),
    "amoebanet-search": Preset(
        "Real et al. 2019 (AmoebaNet), the search: aging evolution with P=100, S=25; N=3, F=24; 25 epochs",
        {"search_space": "nasnet", "selection": "aging", "population_size": 100, "tournament_size": 25,
         "nasnet_cells": 3, "nasnet_filters": 24}, epochs=25),
}


_OPTION_NAMES = {"search_space": "--search-space", "selection": "--selection", "population_size": "-P",
                 "tournament_size": "-S", "nasnet_cells": "--nasnet-cells", "nasnet_filters": "--nasnet-filters"}


def describe(preset: Preset) -> str:
    """``--search-space nasnet --nasnet-cells 2, --steps = 20 epochs`` (help text that cannot drift)."""
    options = " ".join(f"{_OPTION_NAMES[k]} {v}" for k, v in preset.settings.items())
    return f"{options}, --steps = {preset.epochs} epochs".replace("%", "%%")


def apply_preset(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the preset's settings filled in where no option was given (a copy; the
    preset's epochs are in ``preset_epochs``, turned into steps once the dataset is known)."""
    out = argparse.Namespace(**vars(args))
    out.preset_epochs = None
    preset = PRESETS.get(getattr(args, "preset", None) or "")
    if preset is None:
        return out
    space = preset.settings.get("search_space")
    if space is not None and getattr(args, "search_space", None) not in (None, space):
        raise UserError(f"--preset {args.preset} is a search of the {space} space; it cannot be used with "
                        f"--search-space {args.search_space}")
    for key, value in preset.settings.items():
        if getattr(out, key, None) is None:
            setattr(out, key, value)
    if getattr(out, "steps", None) is None:
        out.preset_epochs = preset.epochs
    return out

"""Synthetic fitness: the real worker without training, for testing the coordination layer.

Training is replaced by a cheap, deterministic function of the DNA plus seeded noise and an
optional sleep standing in for training time. Everything else (store, selection, mutation,
publish, kill) is the real thing, and each individual stores a real safetensors file of a
configurable size. This module must never import torch: hundreds of synthetic workers run
on one machine, and a torch import costs a few hundred MB per process.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from evo.config_checks import require_int, require_number
from evo.registry import RunView
from evo.train.modes import FitnessMode, register_mode
from evo.train.outcome import Outcome


@dataclass(frozen=True)
class SyntheticSettings:
    """The synthetic-fitness mode: no training, a cheap deterministic fitness of the DNA."""

    train_seconds: float = field(default=0.0, metadata={"help": "simulated training time, 0..86400"})
    weight_bytes: int = field(default=4096, metadata={"help": "size of each stored weight file, 0..2**30"})
    noise: float = field(default=0.01, metadata={"help": "sd of the seeded noise on the fitness, 0..1"})

    written_always: ClassVar[bool] = True   # config.json has always carried this block

    def __post_init__(self) -> None:
        require_number("synthetic.train_seconds", self.train_seconds, 0, 86_400)
        require_int("synthetic.weight_bytes", self.weight_bytes, 0, 2**30)
        require_number("synthetic.noise", self.noise, 0, 1)


def synthetic_fitness(dna: Any) -> float:
    """A deterministic 'validation accuracy' in [0, 1] of a DNA of any registered space
    (its space's :meth:`~evo.spaces.SearchSpace.synthetic_fitness`)."""
    from evo.spaces import space_class

    kind = dna.to_dict().get("kind", "large_scale")
    return space_class(kind).synthetic_fitness(dna)


def safetensors_blob(payload: bytes) -> bytes:
    """A valid safetensors file holding ``payload`` as one uint8 tensor (pure Python)."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + payload


@register_mode
class SyntheticEvaluator(FitnessMode):
    """Drop-in replacement for the torch evaluator (same ``evaluate`` signature).

    ``space`` gives the fitness function (:meth:`~evo.spaces.SearchSpace.synthetic_fitness`);
    ``settings`` the simulated training time, weight size and noise.
    """

    name, datasets = "synthetic", ("synthetic",)
    settings_class = SyntheticSettings
    device_name = "synthetic"

    @classmethod
    def for_run(cls, run: RunView, space: Any) -> "SyntheticEvaluator":
        return cls(space, run.settings_of("synthetic"))

    def __init__(self, space: Any, settings: SyntheticSettings):
        self.space = space
        self.settings = settings

    def prepare(self) -> None:
        """Nothing to load (the :class:`~evo.search.seams.Evaluator` contract)."""

    def evaluate(self, child, *, parent_dna=None, parent_weights: bytes | None = None, seed: int = 0,
                 progress: Callable[[], Any] | None = None) -> Outcome:
        """Fitness = synthetic_fitness(child) + N(0, noise) seeded by (DNA hash, seed)."""
        t = time.perf_counter()
        if self.settings.train_seconds > 0:
            end = time.monotonic() + self.settings.train_seconds
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(left, 1.0))
                if progress:
                    progress()
        train_s = time.perf_counter() - t
        digest = hashlib.sha256(f"{child.content_hash()}:{seed}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        fitness = self.space.synthetic_fitness(child) + float(rng.normal(0.0, self.settings.noise))
        fitness = min(1.0, max(0.0, fitness))
        weights = safetensors_blob(rng.bytes(self.settings.weight_bytes))
        inherited = 0.0
        if parent_weights is not None and child.mutation != "reset_weights":
            inherited = 1.0
        return Outcome(fitness=fitness, weights=weights, metrics={
            "train_s": train_s, "eval_s": 0.0, "build_s": 0.0, "inherit_s": 0.0,
            "inherited_fraction": inherited, "steps": 0, "synthetic": True,
        })

"""The run's configuration: one typed, frozen object, stored once as ``config.json``.

Workers read everything from the population directory, so a worker needs only its URL.
Unknown keys are an error, never silently ignored. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from dna.bounds import Bounds

SELECTIONS = ("pairwise", "aging", "random")
SEARCH_SPACES = ("large_scale", "nasnet")
CONFIG_SCHEMA = 1


class ConfigError(ValueError):
    """A run configuration that is malformed or inconsistent. One-line message."""


@dataclass(frozen=True)
class TrainSettings:
    """How each child is trained (paper: SGD, momentum 0.9, wd 1e-4, batch 50, 25,600 steps)."""

    steps: int = 25_600
    batch_size: int = 50
    momentum: float = 0.9
    weight_decay: float = 1e-4
    eval_batch_size: int = 1000
    augment: bool = True          # random crop + flip (only where the dataset defines it)
    precision: str = "auto"       # "auto" (bf16 on CUDA, fp32 on CPU) | "fp32" | "bf16"
    cuda_graphs: bool = True      # capture the training step in a CUDA graph when on CUDA

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("train: steps must be >= 0 and batch sizes >= 1")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"train: unknown precision {self.precision!r} (auto, fp32, bf16)")


@dataclass(frozen=True)
class SyntheticSettings:
    """The synthetic-fitness mode: no training, a cheap deterministic fitness of the DNA."""

    train_seconds: float = 0.0    # simulated training time (sleep)
    weight_bytes: int = 4096      # size of the (random) weight file each individual stores
    noise: float = 0.01           # sd of the seeded noise added to the fitness


@dataclass(frozen=True)
class NasnetSettings:
    """Outer structure of the NASNet space at search time (paper: N=3, F=24)."""

    cells_per_stack: int = 2
    filters: int = 16


@dataclass(frozen=True)
class RunConfig:
    """Everything a worker needs to take part in a run."""

    dataset: str = "digits"               # digits | cifar10=PATH | cifar100=PATH | synthetic
    population_size: int = 10
    selection: str = "pairwise"           # pairwise | aging | random
    tournament_size: int = 2              # S for aging; pairwise always uses 2
    search_space: str = "large_scale"     # large_scale | nasnet
    inherit_weights: bool = True
    keep_best: int = 0                    # keep the weights of the best K dead individuals
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    bounds: Bounds = field(default_factory=Bounds)
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)
    nasnet: NasnetSettings = field(default_factory=NasnetSettings)
    schema: int = CONFIG_SCHEMA

    def __post_init__(self) -> None:
        if self.population_size < 2:
            raise ConfigError("population_size must be at least 2")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"unknown selection {self.selection!r} (choose from {', '.join(SELECTIONS)})")
        if self.search_space not in SEARCH_SPACES:
            raise ConfigError(f"unknown search space {self.search_space!r} (choose from {', '.join(SEARCH_SPACES)})")
        if not 1 <= self.tournament_size <= self.population_size:
            raise ConfigError("tournament_size must be in [1, population_size]")
        if self.keep_best < 0:
            raise ConfigError("keep_best must be >= 0")
        if self.schema != CONFIG_SCHEMA:
            raise ConfigError(f"unknown config schema {self.schema!r} (this evo reads {CONFIG_SCHEMA})")

    @property
    def dataset_name(self) -> str:
        """``cifar10`` for ``cifar10=/data/cifar``; the spec itself otherwise."""
        return self.dataset.split("=", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict for JSON."""
        return asdict(self)

    def to_json(self) -> str:
        """Stable, human-readable JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: Any) -> "RunConfig":
        """Inverse of :meth:`to_dict`; unknown or mistyped keys raise ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError("config must be a JSON object")
        nested = {"train": TrainSettings, "bounds": Bounds, "synthetic": SyntheticSettings,
                  "nasnet": NasnetSettings}
        kwargs: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        for key, value in d.items():
            if key not in known:
                raise ConfigError(f"config has unknown key {key!r}")
            if key in nested:
                kwargs[key] = _nested(nested[key], value, key)
            else:
                kwargs[key] = value
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> "RunConfig":
        """Parse ``config.json`` text."""
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from None
        return cls.from_dict(d)

    def with_overrides(self, **changes: Any) -> "RunConfig":
        """A copy with top-level fields changed."""
        return replace(self, **changes)


def _nested(kind: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"config {where} must be an object")
    known = {f.name for f in fields(kind)}
    unknown = set(value) - known
    if unknown:
        raise ConfigError(f"config {where} has unknown key(s) {', '.join(sorted(unknown))}")
    try:
        return kind(**value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config {where}: {exc}") from None

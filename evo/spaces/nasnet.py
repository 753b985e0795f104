"""The NASNet cell space of the 2019 paper: a normal and a reduction cell of five
combinations each, their hidden-state/op/identity mutations, no weight inheritance (every
child trains from scratch, as in the paper), aging evolution by default. A run's initial
individuals are random cells (the paper), or all one published architecture when the config
names one (``nasnet.seed_arch``, ``evo init --seed-arch NAME``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from dna import nasnet as nas

from evo.config_checks import ConfigError, require_int
from evo.registry import RunView
from evo.spaces import SearchSpace, register_space

# Synthetic mode: how much each op is worth (separable and factorised convolutions beat
# pooling and identity, as in the papers' cells).
_OP_VALUE = {"sep3x3": 1.0, "sep5x5": 1.1, "sep7x7": 0.9, "dil3x3": 0.9, "conv1x7_7x1": 0.8,
             "avg3x3": 0.4, "max3x3": 0.5, "identity": 0.3}


@dataclass(frozen=True)
class NasnetSettings:
    """The NASNet space at search time: N cells per stack and F filters of every child (the
    2019 paper's search: N=3, F=24), and ``seed_arch``, a published architecture
    (``dna.published``) that every initial individual is instead of a random one."""

    cells_per_stack: int = field(default=3, metadata={"help": "N, 1..64, --nasnet-cells"})
    filters: int = field(default=24, metadata={"help": "F, 1..4096, --nasnet-filters"})
    seed_arch: str | None = field(default=None, metadata={"help": "a published architecture, --seed-arch"})

    written_always: ClassVar[bool] = True   # config.json has always carried this block

    def __post_init__(self) -> None:
        require_int("nasnet.cells_per_stack", self.cells_per_stack, 1, 64)
        require_int("nasnet.filters", self.filters, 1, 4096)
        if self.seed_arch is not None:
            from dna.published import canonical_name, is_published, unknown_architecture

            if not is_published(self.seed_arch):
                raise ConfigError(f"nasnet.seed_arch: {unknown_architecture(self.seed_arch)}", "nasnet.seed_arch")
            object.__setattr__(self, "seed_arch", canonical_name(self.seed_arch))

    def check_run(self, run: RunView) -> None:
        if self.seed_arch is not None and not run.uses("nasnet"):
            raise ConfigError(f"nasnet.seed_arch seeds the nasnet search space; this run's is {run.search_space!r}",
                              "nasnet.seed_arch")


@register_space
class Nasnet(SearchSpace):
    """Models of ``settings.cells_per_stack`` (N) cells per stack, ``filters`` (F)."""

    name, inherits_weights, default_selection = "nasnet", False, "aging"   # the 2019 paper's choices
    decisions = nas.DECISIONS
    settings_class = NasnetSettings
    settings: NasnetSettings

    def parse(self, obj: Any) -> nas.NasnetDNA:
        return nas.nasnet_from_dict(obj, self.bounds)

    def initial(self, rng: np.random.Generator) -> nas.NasnetDNA:
        seed = self.settings.seed_arch
        if seed is not None:
            from dna.published import published

            return published(seed).replace(mutation="initial")
        return nas.initial_nasnet(rng)

    def random(self, rng: np.random.Generator) -> nas.NasnetDNA:
        return nas.random_nasnet(rng)

    def from_decisions(self, choices: Sequence[int]) -> nas.NasnetDNA:
        return nas.nasnet_from_decisions(choices)

    def to_decisions(self, dna: nas.NasnetDNA) -> tuple[int, ...]:
        return nas.nasnet_decisions(dna)

    def build(self, dna: nas.NasnetDNA, input_shape: tuple[int, int, int], num_classes: int) -> Any:
        from dna.build_nasnet import build_nasnet

        settings = self.settings
        return build_nasnet(dna, input_shape, num_classes, cells_per_stack=settings.cells_per_stack,
                            filters=settings.filters)

    @staticmethod
    def synthetic_fitness(dna: nas.NasnetDNA) -> float:
        d = dna.to_dict()
        score = 0.0
        for cell in ("normal", "reduction"):
            for comb in d[cell]["combinations"]:
                score += _OP_VALUE.get(comb[1], 0.2) + _OP_VALUE.get(comb[3], 0.2)
        return 0.1 + 0.85 * (1 - math.exp(-score / 8.0))

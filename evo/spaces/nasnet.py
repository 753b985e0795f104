"""The NASNet cell space of the 2019 paper: a normal and a reduction cell of five
combinations each, their hidden-state/op/identity mutations, no weight inheritance (every
child trains from scratch, as in the paper), aging evolution by default. A run's initial
individuals are random cells (the paper), or all one published architecture when the config
names one (``nasnet.seed_arch``, ``evo init --seed-arch NAME``)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from dna import nasnet as nas

from evo.spaces import SearchSpace, register_space

# Synthetic mode: how much each op is worth (separable and factorised convolutions beat
# pooling and identity, as in the papers' cells).
_OP_VALUE = {"sep3x3": 1.0, "sep5x5": 1.1, "sep7x7": 0.9, "dil3x3": 0.9, "conv1x7_7x1": 0.8,
             "avg3x3": 0.4, "max3x3": 0.5, "identity": 0.3}


@register_space
class Nasnet(SearchSpace):
    """Models of ``config.nasnet.cells_per_stack`` (N) cells per stack, ``filters`` (F)."""

    name, inherits_weights, default_selection = "nasnet", False, "aging"   # the 2019 paper's choices
    decisions = nas.DECISIONS

    def parse(self, obj: Any) -> nas.NasnetDNA:
        return nas.nasnet_from_dict(obj, self.bounds)

    def initial(self, rng: np.random.Generator) -> nas.NasnetDNA:
        seed = self.config.nasnet.seed_arch
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

        settings = self.config.nasnet
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

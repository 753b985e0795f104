"""The NAS-Bench-201 cell space (Dong & Yang 2020): one cell of six edges over five ops,
15,625 cells in all; its one mutation changes an edge's op; random cells start a run (the
benchmark's regularized-evolution baseline initialises its population with random cells);
aging evolution by default; no weight inheritance (every child trains from scratch, as the
benchmark's table was made). Runs on the benchmark's tables (``evo init --dataset
nb201-cifar10``, :mod:`evo.train.tabular`) look a cell up instead of training it; on any other
dataset evo trains the benchmark's network for real (``dna.build_nasbench201``)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dna import nasbench201 as nb

from evo.spaces import SearchSpace, register_space

# Synthetic mode only: what each op is worth (convolutions beat pooling, identity and zero,
# as in the benchmark's best cells).
_OP_VALUE = {"none": 0.0, "skip_connect": 0.3, "nor_conv_1x1": 0.7, "nor_conv_3x3": 1.0, "avg_pool_3x3": 0.2}


@register_space
class Nasbench201(SearchSpace):
    """The benchmark's cell space; the network is the benchmark's skeleton (C=16, N=5)."""

    name, inherits_weights, default_selection = "nasbench201", False, "aging"
    decisions = nb.DECISIONS

    def parse(self, obj: Any) -> nb.Nb201DNA:
        return nb.nb201_from_dict(obj, self.bounds)

    def initial(self, rng: np.random.Generator) -> nb.Nb201DNA:
        return nb.random_nb201(rng)

    def random(self, rng: np.random.Generator) -> nb.Nb201DNA:
        return nb.random_nb201(rng)

    def from_decisions(self, choices: Sequence[int]) -> nb.Nb201DNA:
        return nb.nb201_from_decisions(choices)

    def to_decisions(self, dna: nb.Nb201DNA) -> tuple[int, ...]:
        return nb.nb201_decisions(dna)

    def build(self, dna: nb.Nb201DNA, input_shape: tuple[int, int, int], num_classes: int) -> Any:
        from dna.build_nasbench201 import build_nasbench201

        return build_nasbench201(dna, input_shape, num_classes)

    @staticmethod
    def synthetic_fitness(dna: nb.Nb201DNA) -> float:
        return 0.1 + 0.85 * sum(_OP_VALUE[op] for op in dna.ops) / len(dna.ops)

"""The 2017 paper's space: a learning rate plus a DAG of convolutions, identity edges,
batch-norm and ReLU (``dna.DNA``), its eleven mutations, and weight inheritance by the
id and shape of each tensor's owning vertex or edge."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import dna as dna_pkg
import mutations

from evo.spaces import SearchSpace, register_space


@register_space
class LargeScale(SearchSpace):
    """Real et al. 2017: start from the trivial one-layer model, learning rate 0.1."""

    name, inherits_weights, default_selection = "large_scale", True, "pairwise"

    def parse(self, obj: Any) -> dna_pkg.DNA:
        return dna_pkg.validate(dna_pkg.from_dict(obj), self.bounds)

    def initial(self, rng: np.random.Generator) -> dna_pkg.DNA:
        return dna_pkg.initial()

    def random(self, rng: np.random.Generator) -> dna_pkg.DNA:
        return mutations.random_dna(rng, self.bounds)

    def build(self, dna: dna_pkg.DNA, input_shape: tuple[int, int, int], num_classes: int) -> Any:
        from dna.build import build as build_model

        return build_model(dna, input_shape, num_classes, bounds=self.bounds)

    def inherit(self, parent_weights: Any, parent_dna: dna_pkg.DNA, child: dna_pkg.DNA, model: Any) -> Any:
        from dna.inherit import inherit

        return inherit(parent_weights, parent_dna, child, model)

    @staticmethod
    def synthetic_fitness(dna: dna_pkg.DNA) -> float:
        """More convolutional capacity helps with diminishing returns, very wide or very deep
        graphs stop helping, and the learning rate has a sweet spot near 0.05."""
        capacity = 0.0
        for e in dna.conv_edges:
            capacity += math.log2(1 + e.channels) * math.sqrt(e.filter_h * e.filter_w) / e.stride ** 0.5
        skips = sum(1 for e in dna.edges if e.kind == "identity") - 1
        size_penalty = max(0, len(dna.vertices) - 12) * 0.01
        lr_factor = math.exp(-((math.log10(dna.learning_rate) - math.log10(0.05)) ** 2) / 2.0)
        base = 0.1 + 0.85 * (1 - math.exp(-capacity / 25.0)) * (0.6 + 0.4 * lr_factor)
        return min(1.0, max(0.0, base + 0.005 * min(skips, 4) - size_penalty))

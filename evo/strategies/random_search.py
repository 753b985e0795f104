"""Random search, the honest baseline: every child is a fresh random architecture of the
space with the same training budget; the population is kept at P by killing the less fit
of a random pair, so the store holds the best found as evolution's would."""

from __future__ import annotations

import numpy as np

from evo.strategies import selection

from evo.strategies import Population, Proposal, Strategy, register_strategy


@register_strategy
class RandomSearch(Strategy):
    """No parents: fresh random architectures; the less fit of a random pair dies."""

    name = "random"

    def propose(self, population: Population, rng: np.random.Generator) -> Proposal:
        return Proposal(fresh=True, victim=selection.pairwise(population.members, rng)[1])

    def victim(self, population: Population, rng: np.random.Generator):
        if len(population) < 2:
            return None
        return selection.pairwise(population.members, rng)[1]

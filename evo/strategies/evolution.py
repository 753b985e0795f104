"""The two evolutionary strategies of the papers: pairwise tournaments (2017) and aging
evolution (2019). Both are pure choices over the listed population; all they keep is the
run's settings."""

from __future__ import annotations

import numpy as np

from evo.strategies import selection

from evo.strategies import Population, Proposal, Strategy, register_strategy


@register_strategy
class Pairwise(Strategy):
    """Real et al. 2017: two individuals at random; the fitter is the parent, the other dies."""

    name = "pairwise"

    def propose(self, population: Population, rng: np.random.Generator) -> Proposal:
        parent, victim = selection.pairwise(population.members, rng)
        return Proposal(parent=parent, victim=victim)

    def victim(self, population: Population, rng: np.random.Generator):
        if len(population) < 2:
            return None
        return selection.pairwise(population.members, rng)[1]


@register_strategy
class Aging(Strategy):
    """Real et al. 2019 (regularized evolution): the best of S sampled with replacement is the
    parent; the oldest individual dies, whatever its fitness."""

    name = "aging"

    def propose(self, population: Population, rng: np.random.Generator) -> Proposal:
        return Proposal(parent=selection.tournament(population.members, rng, self.config.tournament_size))

    def victim(self, population: Population, rng: np.random.Generator):
        return selection.oldest(population.members) if len(population) else None

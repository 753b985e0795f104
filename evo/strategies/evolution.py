"""The two evolutionary strategies of the papers: pairwise tournaments (2017) and aging
evolution (2019). Both are pure choices over the listed population; all they keep is the
run's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from evo.config_checks import require_int
from evo.registry import RunView
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


@dataclass(frozen=True)
class AgingSettings:
    """Aging evolution's sample size S (the 2019 paper: S=25 of P=100). It stands at
    config.json's top level as ``tournament_size``, where it always has."""

    tournament_size: int = field(default=2, metadata={"help": "S, 1..P, -S"})

    written_always: ClassVar[bool] = True

    def __post_init__(self) -> None:
        require_int("tournament_size", self.tournament_size, -2**63, 2**63 - 1)   # its range is the run's

    def check_run(self, run: RunView) -> None:
        require_int("tournament_size", self.tournament_size, 1, run.population_size)  # S <= P


@register_strategy
class Aging(Strategy):
    """Real et al. 2019 (regularized evolution): the best of S sampled with replacement is the
    parent; the oldest individual dies, whatever its fitness."""

    name = "aging"
    settings_class, settings_inline = AgingSettings, True
    settings: AgingSettings

    def propose(self, population: Population, rng: np.random.Generator) -> Proposal:
        return Proposal(parent=selection.tournament(population.members, rng, self.settings.tournament_size))

    def victim(self, population: Population, rng: np.random.Generator):
        return selection.oldest(population.members) if len(population) else None

"""Selection schemes as pure functions."""

from dataclasses import dataclass

import numpy as np
import pytest

from evo.strategies import selection


@dataclass(frozen=True)
class Info:
    id: str
    fitness: float
    birth: float


def population(n=10):
    return [Info(f"{i:04d}", fitness=(i * 7 % 10) / 10, birth=float(i)) for i in range(n)]


def test_pairwise_returns_fitter_as_parent_and_other_as_victim():
    pop = population()
    rng = np.random.default_rng(0)
    for _ in range(200):
        parent, victim = selection.pairwise(pop, rng)
        assert parent is not victim
        assert parent.fitness >= victim.fitness


def test_pairwise_picks_every_pair_uniformly_enough():
    pop = population(4)
    rng = np.random.default_rng(1)
    seen = {}
    for _ in range(3000):
        p, v = selection.pairwise(pop, rng)
        key = frozenset((p.id, v.id))
        seen[key] = seen.get(key, 0) + 1
    assert len(seen) == 6
    assert min(seen.values()) > 3000 / 6 * 0.8


def test_tournament_picks_best_of_sample():
    pop = population()
    rng = np.random.default_rng(2)
    # with S = population size and many draws, the global best wins nearly always
    wins = sum(selection.tournament(pop, rng, 50).fitness == 0.9 for _ in range(100))
    assert wins >= 99
    # with S = 1 it is uniform: the worst individual is sometimes the parent
    assert any(selection.tournament(pop, rng, 1).fitness == 0.0 for _ in range(200))


def test_oldest_is_earliest_birth():
    pop = population()
    assert selection.oldest(list(reversed(pop))).id == "0000"


def test_ties_go_to_the_older():
    a, b = Info("a", 0.5, 1.0), Info("b", 0.5, 2.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        parent, victim = selection.pairwise([b, a], rng)
        assert parent.id == "a"


def test_errors_on_tiny_populations():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        selection.pairwise([Info("a", 0.1, 0.0)], rng)
    with pytest.raises(ValueError):
        selection.tournament([], rng, 3)


def test_population_without_and_has_agree_with_a_plain_search():
    from types import SimpleNamespace

    from evo.strategies import Population

    members = tuple(SimpleNamespace(id=f"2026{i:04d}") for i in range(0, 40, 3))
    population = Population(members, 10)
    for ident in [f"2026{i:04d}" for i in range(-1, 42)]:
        listed = any(m.id == ident for m in members)
        assert population.has(ident) is listed
        assert population.without(ident).members == tuple(m for m in members if m.id != ident)
        assert population.without(ident).size == 10
    assert population.without("nobody") is population

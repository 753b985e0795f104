"""Selection schemes as pure functions over the listed population.

Each takes the live population as a sequence of records with ``id``, ``fitness`` and
``birth`` attributes (``storage.IndividualInfo``) and an explicit ``numpy.random.Generator``.
Ties in fitness go to the older individual (smaller id), so the result is deterministic for
a given generator state.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def _fitter(a, b):
    """The fitter of two; ties go to the older (smaller id)."""
    if a.fitness != b.fitness:
        return (a, b) if a.fitness > b.fitness else (b, a)
    return (a, b) if a.id < b.id else (b, a)


def pairwise(population: Sequence[T], rng: np.random.Generator) -> tuple[T, T]:
    """2017 paper: two distinct individuals at random; returns (parent, victim) = (fitter, other)."""
    if len(population) < 2:
        raise ValueError("pairwise selection needs at least two individuals")
    i, j = rng.choice(len(population), size=2, replace=False)
    return _fitter(population[int(i)], population[int(j)])


def tournament(population: Sequence[T], rng: np.random.Generator, size: int) -> T:
    """2019 paper: sample ``size`` individuals with replacement; the fittest is the parent."""
    if not population:
        raise ValueError("tournament selection needs a non-empty population")
    picks = rng.integers(0, len(population), size=size)
    best = population[int(picks[0])]
    for k in picks[1:]:
        best = _fitter(best, population[int(k)])[0]
    return best


def oldest(population: Sequence[T]) -> T:
    """The individual born first (ids sort by birth time)."""
    if not population:
        raise ValueError("empty population")
    return min(population, key=lambda p: (p.birth, p.id))

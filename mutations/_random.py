"""Random architectures from the same space, for the random-search baseline."""

from __future__ import annotations

import math

import numpy as np

from dna import DEFAULT_BOUNDS, DNA, Bounds, initial, validate

from ._mutate import applicable, mutate

# The mutations that change the architecture (learning rate, identity and reset_weights do not).
STRUCTURAL_MUTATIONS: tuple[str, ...] = (
    "insert_convolution", "remove_convolution", "alter_stride", "alter_channels", "alter_filter_size",
    "insert_identity", "add_skip", "remove_skip",
)
MAX_RANDOM_STEPS = 20


def random_learning_rate(rng: np.random.Generator, bounds: Bounds = DEFAULT_BOUNDS) -> float:
    """A learning rate drawn log-uniformly from [min_learning_rate, max_learning_rate]."""
    low, high = bounds.min_learning_rate, bounds.max_learning_rate
    value = math.exp(rng.uniform(math.log(low), math.log(high)))
    return float(min(max(value, low), high))


def random_dna(rng: np.random.Generator, bounds: Bounds = DEFAULT_BOUNDS, steps: int | None = None) -> DNA:
    """A random valid DNA: ``dna.initial()`` with a log-uniform random learning rate, then
    ``steps`` structural mutations, each chosen uniformly among those that apply.

    ``steps`` defaults to a draw from 1..``MAX_RANDOM_STEPS``. If at some point no structural
    mutation applies within ``bounds`` (tiny bounds), the walk stops there. The result has
    ``mutation="random"``; its ids come from the usual counter, so it shares nothing with
    any other individual's weights.
    """
    if steps is None:
        steps = int(rng.integers(1, MAX_RANDOM_STEPS + 1))
    if steps < 0:
        raise ValueError(f"random_dna: steps must be >= 0, got {steps}")
    current = initial(random_learning_rate(rng, bounds))
    for _ in range(steps):
        if not applicable(current, bounds, STRUCTURAL_MUTATIONS):
            break
        current = mutate(current, rng, bounds, STRUCTURAL_MUTATIONS)
    return validate(current.replace(mutation="random"), bounds)

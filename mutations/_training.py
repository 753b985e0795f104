"""Mutations that leave the architecture alone: learning rate, identity, reset weights."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dna import DNA, Bounds

from ._draws import new_learning_rate
from ._large_scale import register
from ._registry import take_ids


def _learning_rate_can_move(dna: DNA, bounds: Bounds) -> tuple[None, ...]:
    return (None,) if bounds.min_learning_rate < bounds.max_learning_rate else ()


@register("alter_learning_rate", candidates=_learning_rate_can_move)
def alter_learning_rate(dna: DNA, _: None, rng: np.random.Generator, bounds: Bounds) -> DNA:
    """Learning rate times 2**U(-1, 1), clipped to the bounds, always different.

    Applies unless the bounds pin the learning rate to one value.
    """
    lr = new_learning_rate(dna.learning_rate, rng, bounds.min_learning_rate, bounds.max_learning_rate)
    return dna.replace(learning_rate=lr)


def _always(dna: DNA, bounds: Bounds) -> tuple[None, ...]:
    return (None,)


@register("identity", candidates=_always)
def identity(dna: DNA, _: None, rng: np.random.Generator, bounds: Bounds) -> DNA:
    """The same DNA ("keep training"): the child inherits everything and trains longer."""
    return dna


@register("reset_weights", candidates=_always)
def reset_weights(dna: DNA, _: None, rng: np.random.Generator, bounds: Bounds) -> DNA:
    """The same architecture with a fresh id on every vertex and edge, so nothing is inherited.

    Weight inheritance matches tensors by id. New ids are assigned in the order of the old
    ones, so every vertex keeps the same primary (lowest-id) input edge.
    """
    old_ids = sorted([v.id for v in dna.vertices] + [e.id for e in dna.edges])
    new_ids, next_id = take_ids(dna, len(old_ids))
    fresh = dict(zip(old_ids, new_ids))
    return dna.replace(
        vertices=tuple(replace(v, id=fresh[v.id]) for v in dna.vertices),
        edges=tuple(replace(e, id=fresh[e.id], src=fresh[e.src], dst=fresh[e.dst]) for e in dna.edges),
        input_id=fresh[dna.input_id],
        output_id=fresh[dna.output_id],
        next_id=next_id,
    )

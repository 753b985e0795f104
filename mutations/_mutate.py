"""Choosing and applying one mutation: uniformly among the registered ones that apply."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from dna import DEFAULT_BOUNDS, DNA, Bounds

from ._registry import REGISTRY

# The paper's eleven, in the paper's order. The order fixes how a seed maps to a choice.
MUTATION_NAMES: tuple[str, ...] = (
    "alter_learning_rate", "identity", "reset_weights", "insert_convolution", "remove_convolution",
    "alter_stride", "alter_channels", "alter_filter_size", "insert_identity", "add_skip", "remove_skip",
)


class NoMutationApplies(ValueError):
    """None of the allowed mutations can change this DNA within the bounds. One-line message."""


def _selected(names: Iterable[str] | None) -> list[str]:
    """The allowed names in ``MUTATION_NAMES`` order, so the caller's ordering does not matter."""
    if names is None:
        return list(MUTATION_NAMES)
    wanted = set(names) if not isinstance(names, str) else {names}
    unknown = wanted - set(REGISTRY)
    if unknown:
        raise ValueError(f"unknown mutation name(s) {', '.join(sorted(map(repr, unknown)))} "
                         f"(known: {', '.join(MUTATION_NAMES)})")
    return [name for name in MUTATION_NAMES if name in wanted]


def applicable(dna: DNA, bounds: Bounds = DEFAULT_BOUNDS, names: Iterable[str] | None = None) -> list[str]:
    """Names (in ``MUTATION_NAMES`` order) of the allowed mutations that apply to ``dna``."""
    return [name for name in _selected(names) if REGISTRY[name].applies(dna, bounds)]


def mutate(dna: DNA, rng: np.random.Generator, bounds: Bounds = DEFAULT_BOUNDS,
           names: Iterable[str] | None = None) -> DNA:
    """A validated child made by one mutation, chosen uniformly among the allowed ones that apply.

    Tries the allowed mutations in the order ``rng.permutation`` gives and returns the first
    child; the child's ``mutation`` field names the mutation used. ``names`` restricts the
    choice (None: all eleven). ``dna`` must be valid within ``bounds`` and is not modified.
    Raises :class:`NoMutationApplies` if none applies (never with ``identity`` allowed).
    """
    allowed = _selected(names)
    for index in rng.permutation(len(allowed)):
        child = REGISTRY[allowed[int(index)]](dna, rng, bounds)
        if child is not None:
            return child
    raise NoMutationApplies(f"none of the mutations {', '.join(allowed) or '(none)'} applies to DNA "
                            f"{dna.content_hash()[:12]} within the bounds")

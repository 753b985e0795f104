"""Choosing and applying one mutation: uniformly among the registered ones that apply.

One implementation for every search space: the space's mutations are tried in the order
``rng.permutation`` gives, and the first child is kept, which picks uniformly among the
mutations that apply (whether one applies never depends on the generator).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from dna import DEFAULT_BOUNDS, Bounds

from ._registry import ORDER, REGISTRY

LARGE_SCALE = "large_scale"
# The paper's eleven, in the paper's order. The order fixes how a seed maps to a choice.
MUTATION_NAMES: tuple[str, ...] = (
    "alter_learning_rate", "identity", "reset_weights", "insert_convolution", "remove_convolution",
    "alter_stride", "alter_channels", "alter_filter_size", "insert_identity", "add_skip", "remove_skip",
)


class NoMutationApplies(ValueError):
    """None of the allowed mutations can change this DNA within the bounds. One-line message."""


def _selected(space: str, names: Iterable[str] | None) -> list[str]:
    """The allowed names of ``space`` in its declared order (the caller's order does not matter)."""
    if space not in ORDER:
        raise ValueError(f"no mutations are declared for search space {space!r}")
    order = ORDER[space]
    if names is None:
        return list(order)
    wanted = set(names) if not isinstance(names, str) else {names}
    unknown = wanted - set(order)
    if unknown:
        raise ValueError(f"unknown {space} mutation name(s) {', '.join(sorted(map(repr, unknown)))} "
                         f"(known: {', '.join(order)})")
    return [name for name in order if name in wanted]


def applicable(dna: Any, bounds: Bounds = DEFAULT_BOUNDS, names: Iterable[str] | None = None,
               space: str = LARGE_SCALE) -> list[str]:
    """Names (in the space's order) of the allowed mutations that apply to ``dna``."""
    return [name for name in _selected(space, names) if REGISTRY[f"{space}/{name}"].applies(dna, bounds)]


def mutate(dna: Any, rng: np.random.Generator, bounds: Bounds = DEFAULT_BOUNDS,
           names: Iterable[str] | None = None, space: str = LARGE_SCALE) -> Any:
    """A validated child made by one mutation of ``space``, chosen uniformly among the allowed
    ones that apply.

    Tries the allowed mutations in the order ``rng.permutation`` gives and returns the first
    child; the child's ``mutation`` field names the mutation used. ``names`` restricts the
    choice (None: all of the space's). ``dna`` must be valid within ``bounds`` and is not
    modified. Raises :class:`NoMutationApplies` if none applies (never with ``identity``).
    """
    allowed = _selected(space, names)
    for index in rng.permutation(len(allowed)):
        child = REGISTRY[f"{space}/{allowed[int(index)]}"](dna, rng, bounds)
        if child is not None:
            return child
    raise NoMutationApplies(f"none of the mutations {', '.join(allowed) or '(none)'} applies to DNA "
                            f"{dna.content_hash()[:12]} within the bounds")

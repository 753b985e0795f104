"""The mutation registry: every mutation registers itself here under its paper name.

A registered :class:`Mutation` is a pure function ``(dna, rng, bounds) -> DNA | None``. It
first enumerates its candidates (edges, vertices, pairs) from the DNA and the bounds alone,
so whether it applies never depends on the random generator; only then does it draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from dna import DEFAULT_BOUNDS, DNA, Bounds, validate

Candidates = Callable[[DNA, Bounds], Sequence[Any]]
Apply = Callable[[DNA, Any, np.random.Generator, Bounds], DNA]

REGISTRY: dict[str, "Mutation"] = {}


@dataclass(frozen=True)
class Mutation:
    """One named mutation: a candidate enumerator plus the change made at one candidate.

    Calling it is the pure mutation ``(dna, rng, bounds) -> DNA | None``.
    """

    name: str
    candidates: Candidates
    apply: Apply

    def applies(self, dna: DNA, bounds: Bounds = DEFAULT_BOUNDS) -> bool:
        """Whether this mutation can change ``dna`` within ``bounds`` (no randomness involved)."""
        return len(self.candidates(dna, bounds)) > 0

    def __call__(self, dna: DNA, rng: np.random.Generator, bounds: Bounds = DEFAULT_BOUNDS) -> DNA | None:
        """A new, validated child whose ``mutation`` field is this name, or None if it does not apply.

        Picks one candidate uniformly with ``rng``; ``dna`` itself is never modified. The
        parent must be valid within ``bounds``.
        """
        options = self.candidates(dna, bounds)
        if not options:
            return None
        chosen = options[int(rng.integers(len(options)))]
        child = self.apply(dna, chosen, rng, bounds)
        return validate(child.replace(mutation=self.name), bounds)


def register(name: str, candidates: Candidates) -> Callable[[Apply], Mutation]:
    """Decorator: ``apply(dna, candidate, rng, bounds) -> DNA`` becomes the mutation ``name``.

    The decorated name is bound to the registered :class:`Mutation`.
    """

    def decorate(apply: Apply) -> Mutation:
        if name in REGISTRY:
            raise ValueError(f"mutation {name!r} is registered twice")
        mutation = Mutation(name, candidates, apply)
        REGISTRY[name] = mutation
        return mutation

    return decorate


def take_ids(dna: DNA, count: int) -> tuple[list[int], int]:
    """``count`` fresh ids from the DNA's counter and the counter's new value (ids are never reused)."""
    return list(range(dna.next_id, dna.next_id + count)), dna.next_id + count

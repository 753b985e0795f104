"""The mutation registry of every search space, keyed ``"{space}/{name}"``.

A registered :class:`Mutation` is a pure function ``(dna, rng, bounds) -> DNA | None``. It
first enumerates its candidates (edges, vertices, slots, pairs) from the DNA and the bounds
alone, so whether it applies never depends on the random generator; only then does it draw.
Each space declares its mutations' order (which fixes how a seed maps to a choice) and the
validator every child goes through (:func:`declare_space`); a mutation module then
registers its functions with :func:`register`. One contract test suite runs over the whole
registry (tests/test_mutation_contract.py), so a new mutation is tested the moment it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from dna import DEFAULT_BOUNDS, Bounds

Candidates = Callable[[Any, Bounds], Sequence[Any]]
Apply = Callable[[Any, Any, np.random.Generator, Bounds], Any]
Validate = Callable[[Any, Bounds], Any]

REGISTRY: dict[str, "Mutation"] = {}
ORDER: dict[str, tuple[str, ...]] = {}        # space -> its mutation names, in draw order
_VALIDATORS: dict[str, Validate] = {}


def declare_space(space: str, order: Sequence[str], validate: Validate) -> None:
    """Declare ``space``'s mutation names (in the order draws map to them) and the validator
    ``(dna, bounds) -> dna`` (raising DNAError) that every child of its mutations passes."""
    if space in ORDER:
        raise ValueError(f"mutations of space {space!r} are declared twice")
    if len(set(order)) != len(order) or not order:
        raise ValueError(f"space {space!r}: mutation names must be distinct and not empty")
    ORDER[space] = tuple(order)
    _VALIDATORS[space] = validate


@dataclass(frozen=True)
class Mutation:
    """One named mutation of one space: a candidate enumerator plus the change made at one
    candidate. Calling it is the pure mutation ``(dna, rng, bounds) -> DNA | None``."""

    space: str
    name: str
    candidates: Candidates
    apply: Apply

    @property
    def key(self) -> str:
        """``"{space}/{name}"``: the registry key."""
        return f"{self.space}/{self.name}"

    def applies(self, dna: Any, bounds: Bounds = DEFAULT_BOUNDS) -> bool:
        """Whether this mutation can change ``dna`` within ``bounds`` (no randomness involved)."""
        return len(self.candidates(dna, bounds)) > 0

    def __call__(self, dna: Any, rng: np.random.Generator, bounds: Bounds = DEFAULT_BOUNDS) -> Any:
        """A new, validated child whose ``mutation`` field is this name, or None if it does not apply.

        Picks one candidate uniformly with ``rng``; ``dna`` itself is never modified. The
        parent must be valid within ``bounds``.
        """
        options = self.candidates(dna, bounds)
        if not options:
            return None
        chosen = options[int(rng.integers(len(options)))]
        child = self.apply(dna, chosen, rng, bounds)
        return _VALIDATORS[self.space](child.replace(mutation=self.name), bounds)


def register(name: str, candidates: Candidates, *, space: str) -> Callable[[Apply], Mutation]:
    """Decorator: ``apply(dna, candidate, rng, bounds) -> DNA`` becomes the mutation
    ``"{space}/{name}"`` (the space must have declared ``name``).

    The decorated name is bound to the registered :class:`Mutation`.
    """

    def decorate(apply: Apply) -> Mutation:
        if name not in ORDER.get(space, ()):
            raise ValueError(f"mutation {name!r} is not declared for space {space!r}")
        mutation = Mutation(space, name, candidates, apply)
        if mutation.key in REGISTRY:
            raise ValueError(f"mutation {mutation.key!r} is registered twice")
        REGISTRY[mutation.key] = mutation
        return mutation

    return decorate


def mutations_of(space: str) -> list[Mutation]:
    """The registered mutations of ``space``, in its declared order."""
    if space not in ORDER:
        raise ValueError(f"no mutations are declared for search space {space!r} "
                         f"(known: {', '.join(sorted(ORDER))})")
    return [REGISTRY[f"{space}/{name}"] for name in ORDER[space]]


def check_complete() -> None:
    """ImportError unless every declared mutation is registered (a module went missing)."""
    for space, names in ORDER.items():
        missing = [n for n in names if f"{space}/{n}" not in REGISTRY]
        if missing:
            raise ImportError(f"mutations of {space!r} declared but not registered: {', '.join(missing)}")


def take_ids(dna: Any, count: int) -> tuple[list[int], int]:
    """``count`` fresh ids from the DNA's counter and the counter's new value (ids are never reused)."""
    return list(range(dna.next_id, dna.next_id + count)), dna.next_id + count

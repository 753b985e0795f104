"""The mutations of Real et al. (2019) on the NASNet cell space: hidden-state, op, identity.

Each is a pure function ``(dna, rng) -> NasnetDNA | None`` (None: does not apply; these three
always apply). A mutation picks uniformly one of the 20 slots (cell x combination x side)
and changes exactly that slot. ``mutate_nasnet`` picks one mutation uniformly among those
that apply and returns a validated child whose ``mutation`` field names it. No torch.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from dna.bounds import DEFAULT_BOUNDS, Bounds
from dna.nasnet import CELL_NAMES, NUM_CELL_INPUTS, NUM_COMBINATIONS, OPS, Combination, NasnetDNA, validate_nasnet

NasnetMutation = Callable[[NasnetDNA, np.random.Generator], "NasnetDNA | None"]

_SLOTS = tuple((name, k, side) for name in CELL_NAMES for k in range(NUM_COMBINATIONS) for side in ("a", "b"))


def _pick_slot(rng: np.random.Generator) -> tuple[str, int, str]:
    return _SLOTS[int(rng.integers(len(_SLOTS)))]


def _with_slot(dna: NasnetDNA, name: str, k: int, side: str, **field_values: object) -> NasnetDNA:
    cell = dna.cell(name)
    c = cell.combinations[k]
    fields = {"input_a": c.input_a, "op_a": c.op_a, "input_b": c.input_b, "op_b": c.op_b}
    fields.update({f"{key}_{side}": value for key, value in field_values.items()})
    return dna.with_cell(name, cell.with_combination(k, Combination(**fields)))


def hidden_state(dna: NasnetDNA, rng: np.random.Generator) -> NasnetDNA:
    """Rewire one input of one combination (of the normal or reduction cell) to a different
    earlier hidden state. Combination ``k`` can read states ``0..k+1`` and always has at least
    one other choice, so the input always changes and no loop can form."""
    name, k, side = _pick_slot(rng)
    current = getattr(dna.cell(name).combinations[k], f"input_{side}")
    choices = [s for s in range(NUM_CELL_INPUTS + k) if s != current]
    return _with_slot(dna, name, k, side, input=choices[int(rng.integers(len(choices)))])


def op(dna: NasnetDNA, rng: np.random.Generator) -> NasnetDNA:
    """Replace one op of one combination by a different op, uniform over the other seven."""
    name, k, side = _pick_slot(rng)
    current = getattr(dna.cell(name).combinations[k], f"op_{side}")
    choices = [o for o in OPS if o != current]
    return _with_slot(dna, name, k, side, op=choices[int(rng.integers(len(choices)))])


def identity(dna: NasnetDNA, rng: np.random.Generator) -> NasnetDNA:
    """No change to the architecture (the child is retrained from scratch all the same)."""
    return dna


NASNET_REGISTRY: dict[str, NasnetMutation] = {
    "hidden_state": hidden_state,
    "op": op,
    "identity": identity,
}


def mutate_nasnet(dna: NasnetDNA, rng: np.random.Generator, names: Iterable[str] | None = None,
                  bounds: Bounds = DEFAULT_BOUNDS) -> NasnetDNA:
    """A child of ``dna`` made by one mutation, chosen uniformly among ``names`` (default: all
    of NASNET_REGISTRY) that apply; its ``mutation`` field names the one used.

    The child is validated against ``bounds``; ``dna`` itself is never modified. Raises
    ValueError for an unknown name or when none of the named mutations applies.
    """
    chosen = list(NASNET_REGISTRY) if names is None else list(names)
    unknown = [n for n in chosen if n not in NASNET_REGISTRY]
    if unknown:
        raise ValueError(f"unknown NASNet mutation(s) {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(NASNET_REGISTRY)})")
    # Trying the names in a random order and keeping the first that applies picks uniformly
    # among those that apply.
    for i in rng.permutation(len(chosen)):
        child = NASNET_REGISTRY[chosen[int(i)]](dna, rng)
        if child is not None:
            return validate_nasnet(child.replace(mutation=chosen[int(i)]), bounds)
    raise ValueError(f"no NASNet mutation among {', '.join(chosen) or '(none)'} applies")

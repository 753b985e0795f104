"""The mutations of Real et al. (2019) on the NASNet cell space: hidden-state, op, identity.

Registered as ``nasnet/hidden_state``, ``nasnet/op`` and ``nasnet/identity`` in the one
mutation registry (:mod:`mutations._registry`), so the same contract suite and the same
"uniform among those that apply" choice serve them. Each enumerates the 20 slots (cell x
combination x side) and changes exactly the one drawn. No torch.

A cell with an explicit output list (``concat``, e.g. a published cell seeding a run) keeps
it: ``op`` and ``identity`` change no wiring, and ``hidden_state`` adds to the list the state
the rewired input used to read when nothing reads it any more (the default rule's reason to
concatenate a state), so the child stays valid and differs from its parent only where the
mutation says. A cell without a list (every random cell) never gets one.
"""

from __future__ import annotations

from functools import partial
from typing import Iterable

import numpy as np

from dna.bounds import DEFAULT_BOUNDS, Bounds
from dna.nasnet import (CELL_NAMES, NUM_CELL_INPUTS, NUM_COMBINATIONS, OPS, Cell, Combination, NasnetDNA,
                        validate_nasnet)

from ._mutate import mutate
from ._registry import declare_space
from ._registry import register as _register

NASNET = "nasnet"
NASNET_MUTATIONS = ("hidden_state", "op", "identity")  # the draw order

declare_space(NASNET, NASNET_MUTATIONS, validate_nasnet)
register = partial(_register, space=NASNET)

_SLOTS = tuple((name, k, side) for name in CELL_NAMES for k in range(NUM_COMBINATIONS) for side in ("a", "b"))


def _slots(dna: NasnetDNA, bounds: Bounds) -> tuple[tuple[str, int, str], ...]:
    return _SLOTS


def _with_slot(dna: NasnetDNA, name: str, k: int, side: str, **field_values: object) -> NasnetDNA:
    cell = dna.cell(name)
    c = cell.combinations[k]
    fields = {"input_a": c.input_a, "op_a": c.op_a, "input_b": c.input_b, "op_b": c.op_b}
    fields.update({f"{key}_{side}": value for key, value in field_values.items()})
    return dna.with_cell(name, cell.with_combination(k, Combination(**fields)))


@register("hidden_state", candidates=_slots)
def hidden_state(dna: NasnetDNA, slot: tuple[str, int, str], rng: np.random.Generator, bounds: Bounds) -> NasnetDNA:
    """Rewire one input of one combination (of the normal or reduction cell) to a different
    earlier hidden state. Combination ``k`` can read states ``0..k+1`` and always has at least
    one other choice, so the input always changes and no loop can form. A cell's explicit
    ``concat`` gains the state left unread (see the module docstring)."""
    name, k, side = slot
    current = getattr(dna.cell(name).combinations[k], f"input_{side}")
    choices = [s for s in range(NUM_CELL_INPUTS + k) if s != current]
    child = _with_slot(dna, name, k, side, input=choices[int(rng.integers(len(choices)))])
    cell = child.cell(name)
    if cell.concat is not None and current in cell.unused_states() and current not in cell.concat:
        cell = Cell(cell.combinations, tuple(sorted(cell.concat + (current,))))
    return child.with_cell(name, cell.normalized())


@register("op", candidates=_slots)
def op(dna: NasnetDNA, slot: tuple[str, int, str], rng: np.random.Generator, bounds: Bounds) -> NasnetDNA:
    """Replace one op of one combination by a different op, uniform over the other seven."""
    name, k, side = slot
    current = getattr(dna.cell(name).combinations[k], f"op_{side}")
    choices = [o for o in OPS if o != current]
    return _with_slot(dna, name, k, side, op=choices[int(rng.integers(len(choices)))])


def _always(dna: NasnetDNA, bounds: Bounds) -> tuple[None]:
    return (None,)


@register("identity", candidates=_always)
def identity(dna: NasnetDNA, _: None, rng: np.random.Generator, bounds: Bounds) -> NasnetDNA:
    """No change to the architecture (the child is retrained from scratch all the same)."""
    return dna


def mutate_nasnet(dna: NasnetDNA, rng: np.random.Generator, names: Iterable[str] | None = None,
                  bounds: Bounds = DEFAULT_BOUNDS) -> NasnetDNA:
    """A child of ``dna`` made by one NASNet mutation, chosen uniformly among ``names``
    (default: all three) that apply; its ``mutation`` field names the one used.

    The child is validated against ``bounds``; ``dna`` itself is never modified. Raises
    ValueError for an unknown name or when none of the named mutations applies.
    """
    return mutate(dna, rng, bounds, names, space=NASNET)

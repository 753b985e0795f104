"""The NASNet cell search space (Zoph et al. 2018), as evolved by AmoebaNet (Real et al. 2019).

A NASNet DNA is a learning rate plus two cells: a ``normal`` cell (keeps the spatial size)
and a ``reduction`` cell (halves it). Each cell has seven hidden states. States 0 and 1 are
the cell's inputs: state 0 is the previous cell's output (h_i), state 1 the output of the
cell before it (h_{i-1}); this is the order of the NASNet reference code, so a published
cell transcribes directly. Combination ``k`` (0-based, five of them) makes state ``k + 2``
as ``op_a(state[input_a]) + op_b(state[input_b])`` and may read only states ``< k + 2``,
so a cell is acyclic by construction. The states no combination reads (the cell inputs
included) are concatenated into the cell's output.

The outer structure is not in the DNA: three stacks of ``N`` normal cells separated by two
reduction cells, ``F`` filters doubling at each reduction (see :func:`outer_plan`).

JSON (canonical: sorted keys, no whitespace)::

    {"schema": 1, "kind": "nasnet", "learning_rate": 0.1, "mutation": "initial",
     "normal": {"combinations": [[in_a, op_a, in_b, op_b], ... five ...]},
     "reduction": {"combinations": [...]}}

This module never imports torch; ``dna.build_nasnet`` builds the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .bounds import DEFAULT_BOUNDS, Bounds
from .genome import (INITIAL_LEARNING_RATE, SCHEMA_VERSION, DNAError, Genome, _common_fields, _int, _keys, _str,
                     parse_dna_json)

if TYPE_CHECKING:
    import numpy as np

KIND = "nasnet"
OPS = ("identity", "sep3x3", "sep5x5", "sep7x7", "avg3x3", "max3x3", "dil3x3", "conv1x7_7x1")
CELL_NAMES = ("normal", "reduction")
NUM_CELL_INPUTS = 2
NUM_COMBINATIONS = 5
NUM_STATES = NUM_CELL_INPUTS + NUM_COMBINATIONS
STEM_MULTIPLIER = 3  # the stem conv has STEM_MULTIPLIER * F channels, as in NASNet on CIFAR


@dataclass(frozen=True)
class Combination:
    """One pairwise combination: ``op_a(state[input_a]) + op_b(state[input_b])``."""

    input_a: int
    op_a: str
    input_b: int
    op_b: str

    @property
    def inputs(self) -> tuple[int, int]:
        return (self.input_a, self.input_b)

    def to_list(self) -> list[Any]:
        """``[input_a, op_a, input_b, op_b]``, the JSON form."""
        return [self.input_a, self.op_a, self.input_b, self.op_b]


@dataclass(frozen=True)
class Cell:
    """Five combinations; combination ``k`` makes hidden state ``k + 2``."""

    combinations: tuple[Combination, ...]

    def unused_states(self) -> tuple[int, ...]:
        """Hidden states no combination reads, ascending: the ones concatenated into the output.

        Never empty: the last combination's state cannot be read by anyone.
        """
        read = {s for c in self.combinations for s in c.inputs}
        return tuple(s for s in range(NUM_CELL_INPUTS + len(self.combinations)) if s not in read)

    def with_combination(self, k: int, combination: Combination) -> "Cell":
        """A copy with combination ``k`` replaced."""
        combos = list(self.combinations)
        combos[k] = combination
        return Cell(tuple(combos))

    def to_dict(self) -> dict[str, Any]:
        return {"combinations": [c.to_list() for c in self.combinations]}


@dataclass(frozen=True)
class NasnetDNA(Genome):
    """A learning rate plus a normal and a reduction cell; immutable.

    ``mutation`` is provenance (which mutation made it), not architecture: it is in the JSON
    but not in :meth:`content_hash`.
    """

    learning_rate: float
    normal: Cell
    reduction: Cell
    mutation: str = "initial"
    schema: int = SCHEMA_VERSION

    kind: ClassVar[str] = KIND

    def cell(self, name: str) -> Cell:
        """The ``"normal"`` or ``"reduction"`` cell."""
        if name not in CELL_NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def with_cell(self, name: str, cell: Cell) -> "NasnetDNA":
        """A copy with the named cell replaced."""
        if name not in CELL_NAMES:
            raise KeyError(name)
        return self.replace(**{name: cell})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "schema": self.schema,
            "kind": KIND,
            "learning_rate": self.learning_rate,
            "mutation": self.mutation,
            "normal": self.normal.to_dict(),
            "reduction": self.reduction.to_dict(),
        }


# ----- making DNAs -----

def random_cell(rng: "np.random.Generator") -> Cell:
    """A cell whose every input is uniform over the earlier states and every op uniform over OPS."""
    combos = []
    for k in range(NUM_COMBINATIONS):
        n = NUM_CELL_INPUTS + k
        a, b = (int(x) for x in rng.integers(0, n, size=2))
        op_a, op_b = (OPS[int(i)] for i in rng.integers(0, len(OPS), size=2))
        combos.append(Combination(a, op_a, b, op_b))
    return Cell(tuple(combos))


def random_nasnet(rng: "np.random.Generator", learning_rate: float = INITIAL_LEARNING_RATE) -> NasnetDNA:
    """A valid DNA with both cells drawn by :func:`random_cell` (normal first)."""
    return NasnetDNA(learning_rate=float(learning_rate), normal=random_cell(rng), reduction=random_cell(rng))


def initial_nasnet(rng: "np.random.Generator", learning_rate: float = INITIAL_LEARNING_RATE) -> NasnetDNA:
    """An initial individual: random cells, as Real et al. (2019) initialise the population."""
    return random_nasnet(rng, learning_rate).replace(mutation="initial")


# ----- validation and parsing -----

def validate_nasnet(dna: NasnetDNA, bounds: Bounds | None = DEFAULT_BOUNDS) -> NasnetDNA:
    """Return ``dna`` unchanged if it is a valid NASNet genome; else raise a one-line DNAError.

    Checks the schema, that the learning rate is a finite float (within ``bounds`` unless
    ``bounds`` is None), that each cell has exactly five combinations, that every op is known
    and that combination ``k`` reads only hidden states ``0 .. k+1`` (so the cell is acyclic).
    """
    if not isinstance(dna, NasnetDNA):
        raise DNAError(f"expected a NASNet DNA, got {type(dna).__name__}")
    if dna.schema != SCHEMA_VERSION:
        raise DNAError(f"unknown DNA schema version {dna.schema!r} (this evo reads version {SCHEMA_VERSION})")
    lr = dna.learning_rate
    if not isinstance(lr, float) or not math.isfinite(lr):
        raise DNAError(f"learning_rate must be a finite float, got {lr!r}"[:200])
    if bounds is not None and not bounds.min_learning_rate <= lr <= bounds.max_learning_rate:
        raise DNAError(f"learning_rate {lr:g} outside bounds [{bounds.min_learning_rate:g}, {bounds.max_learning_rate:g}]")
    if not isinstance(dna.mutation, str):
        raise DNAError(f"mutation must be a string, got {type(dna.mutation).__name__}")
    for name in CELL_NAMES:
        cell = dna.cell(name)
        if not isinstance(cell, Cell) or not isinstance(cell.combinations, tuple):
            raise DNAError(f"{name} cell is not a Cell with a tuple of combinations")
        if len(cell.combinations) != NUM_COMBINATIONS:
            raise DNAError(f"{name} cell has {len(cell.combinations)} combinations, needs exactly {NUM_COMBINATIONS}")
        for k, c in enumerate(cell.combinations):
            where = f"{name} cell combination {k}"
            if not isinstance(c, Combination):
                raise DNAError(f"{where} is not a Combination")
            for side in ("a", "b"):
                state, op = getattr(c, f"input_{side}"), getattr(c, f"op_{side}")
                if isinstance(state, bool) or not isinstance(state, int) or not 0 <= state < NUM_CELL_INPUTS + k:
                    raise DNAError(f"{where}: input_{side}={state!r} is not an earlier hidden state "
                                   f"(allowed 0..{NUM_CELL_INPUTS + k - 1}; a later one would form a loop)"[:200])
                if op not in OPS:
                    raise DNAError(f"{where}: unknown op_{side} {op!r} (known: {', '.join(OPS)})"[:300])
    return dna


_TOP_KEYS = {"schema", "kind", "learning_rate", "mutation", "normal", "reduction"}


def nasnet_from_dict(obj: Any, bounds: Bounds = DEFAULT_BOUNDS) -> NasnetDNA:
    """Parse and validate a dict (from JSON) into a NasnetDNA. Raises only DNAError.

    Unknown or missing fields, wrong types, unknown ops and forward references are errors.
    """
    obj, schema, lr = _common_fields(obj, KIND, _TOP_KEYS)
    cells = {name: _parse_cell(obj[name], name) for name in CELL_NAMES}
    dna = NasnetDNA(learning_rate=lr, normal=cells["normal"], reduction=cells["reduction"],
                    mutation=_str(obj["mutation"], "mutation"), schema=schema)
    return validate_nasnet(dna, bounds)


def nasnet_from_json(text: str | bytes, bounds: Bounds = DEFAULT_BOUNDS) -> NasnetDNA:
    """Parse and validate untrusted JSON text. Raises only DNAError."""
    return nasnet_from_dict(parse_dna_json(text), bounds)


def _parse_cell(obj: Any, name: str) -> Cell:
    obj = _keys(obj, {"combinations"}, f"{name} cell")
    raw = obj["combinations"]
    if not isinstance(raw, list):
        raise DNAError(f"{name} cell combinations must be a list, got {type(raw).__name__}")
    if len(raw) != NUM_COMBINATIONS:
        raise DNAError(f"{name} cell has {len(raw)} combinations, needs exactly {NUM_COMBINATIONS}")
    combos = []
    for k, c in enumerate(raw):
        where = f"{name} cell combination {k}"
        if not isinstance(c, list) or len(c) != 4:
            raise DNAError(f"{where} must be a list [input_a, op_a, input_b, op_b]")
        combos.append(Combination(_int(c[0], f"{where} input_a"), _str(c[1], f"{where} op_a"),
                                  _int(c[2], f"{where} input_b"), _str(c[3], f"{where} op_b")))
    return Cell(tuple(combos))


# ----- the outer structure and parameter counts -----

@dataclass(frozen=True)
class CellSlot:
    """One cell of the network: which kind, and its filter count (channels per hidden state)."""

    reduction: bool
    filters: int


def outer_plan(cells_per_stack: int, filters: int) -> tuple[CellSlot, ...]:
    """The cell sequence: N normal (F), reduction (2F), N normal (2F), reduction (4F), N normal (4F).

    Raises ValueError unless ``cells_per_stack >= 1`` and ``filters >= 2`` (the factorized
    reduction splits the filters into two halves).
    """
    if isinstance(cells_per_stack, bool) or not isinstance(cells_per_stack, int) or cells_per_stack < 1:
        raise ValueError(f"nasnet: cells_per_stack must be an integer >= 1, got {cells_per_stack!r}")
    if isinstance(filters, bool) or not isinstance(filters, int) or filters < 2:
        raise ValueError(f"nasnet: filters must be an integer >= 2, got {filters!r}")
    plan: list[CellSlot] = []
    for stack in range(3):
        if stack:
            plan.append(CellSlot(True, filters * 2**stack))
        plan.extend(CellSlot(False, filters * 2**stack) for _ in range(cells_per_stack))
    return tuple(plan)


def op_parameter_count(op: str, filters: int, stride: int) -> int:
    """Trainable parameters of one op on ``filters`` channels (convs have no bias; BN has 2 per channel)."""
    f = filters
    if op == "identity":
        return 0 if stride == 1 else f * f + 2 * f  # ReLU, 1x1 conv with stride, BN
    if op in ("avg3x3", "max3x3"):
        return 0
    if op in ("sep3x3", "sep5x5", "sep7x7"):
        k = int(op[3])
        return 2 * (k * k * f + f * f + 2 * f)  # twice: depthwise, pointwise, BN
    if op == "dil3x3":
        return 9 * f + f * f + 2 * f
    if op == "conv1x7_7x1":
        return 7 * f * f + 7 * f * f + 2 * f
    raise ValueError(f"unknown op {op!r}")


def nasnet_parameter_count(dna: NasnetDNA, input_channels: int, num_classes: int,
                           cells_per_stack: int, filters: int) -> int:
    """Trainable parameters of the model ``dna.build_nasnet.build_nasnet`` makes, without torch."""
    validate_nasnet(dna, bounds=None)
    stem = STEM_MULTIPLIER * filters
    total = 9 * input_channels * stem + 2 * stem
    # (channels, spatial level) of the previous two cells' outputs
    cur, prev = (stem, 0), (stem, 0)
    for slot in outer_plan(cells_per_stack, filters):
        f = slot.filters
        cell = dna.reduction if slot.reduction else dna.normal
        total += cur[0] * f + 2 * f  # state 0: ReLU, 1x1 conv, BN
        if prev[1] != cur[1] or prev[0] != f:  # state 1: factorized reduce, or 1x1 conv; both C*f + 2f
            total += prev[0] * f + 2 * f
        stride = 2 if slot.reduction else 1
        for c in cell.combinations:
            for state, op in ((c.input_a, c.op_a), (c.input_b, c.op_b)):
                total += op_parameter_count(op, f, stride if state < NUM_CELL_INPUTS else 1)
        unused = cell.unused_states()
        if slot.reduction:
            total += sum(f * f + 2 * f for s in unused if s < NUM_CELL_INPUTS)  # factorized reduce
        prev, cur = cur, (f * len(unused), cur[1] + slot.reduction)
    return total + cur[0] * num_classes + num_classes

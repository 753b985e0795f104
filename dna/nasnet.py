"""The NASNet cell search space (Zoph et al. 2018), as evolved by AmoebaNet (Real et al. 2019).

A NASNet DNA is a learning rate plus two cells: a ``normal`` cell (keeps the spatial size)
and a ``reduction`` cell (halves it). Each cell has seven hidden states. States 0 and 1 are
the cell's inputs: state 0 is the previous cell's output (h_i), state 1 the output of the
cell before it (h_{i-1}); this is the order of the reference code (``_cell_base`` in
tensorflow/models ``research/slim/nets/nasnet/nasnet_utils.py`` and tensorflow/tpu
``models/official/amoeba_net/network_utils.py``), so a published cell transcribes directly.
Combination ``k`` (0-based, five of them) makes state ``k + 2`` as
``op_a(state[input_a]) + op_b(state[input_b])`` and may read only states ``< k + 2``, so a
cell is acyclic by construction.

The cell's output concatenates some of its states:

- by default (``concat`` absent), the states no combination reads, cell inputs included:
  the rule of the papers' text and of every cell evolution makes from a random one;
- with an explicit ``concat`` (distinct states, ascending), exactly those. The reference
  implementations list the concatenated states per cell (``used_hiddenstates`` marks the
  others), and the published cells concatenate some states that *are* read: NASNet-A's
  normal cell outputs h_{i-1} (state 1) with the five combinations, 6 x F channels where the
  default rule gives 5. A list must contain every combination state that nothing reads (else
  it would be computed for nothing); an unread cell input may be left out. A list equal to
  the default rule is dropped when parsed, so one architecture has one JSON and one hash.

Mutations keep an explicit list valid (see :mod:`mutations.nasnet`). DNA written before
``concat`` existed has none and reads, builds and hashes as before.

The outer structure is not in the DNA: three stacks of ``N`` normal cells separated by two
reduction cells, ``F`` filters doubling at each reduction (see :func:`dna.nasnet_network.outer_plan`).

JSON (canonical: sorted keys, no whitespace)::

    {"schema": 1, "kind": "nasnet", "learning_rate": 0.1, "mutation": "initial",
     "normal": {"combinations": [[in_a, op_a, in_b, op_b], ... five ...]},
     "reduction": {"combinations": [...], "concat": [3, 4, 5, 6]}}

This module never imports torch; ``dna.build_nasnet`` builds the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from .bounds import DEFAULT_BOUNDS, Bounds
from .genome import (INITIAL_LEARNING_RATE, SCHEMA_VERSION, DNAError, Genome, check_common_fields, common_fields,
                     field_int, field_keys, field_str, parse_dna_json)

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
    """Five combinations; combination ``k`` makes hidden state ``k + 2``. ``concat``: the
    states the output concatenates, or None for the default rule (:meth:`unused_states`)."""

    combinations: tuple[Combination, ...]
    concat: tuple[int, ...] | None = None

    def unused_states(self) -> tuple[int, ...]:
        """Hidden states no combination reads, ascending: the default output rule.

        Never empty: the last combination's state cannot be read by anyone.
        """
        read = {s for c in self.combinations for s in c.inputs}
        return tuple(s for s in range(NUM_CELL_INPUTS + len(self.combinations)) if s not in read)

    def output_states(self) -> tuple[int, ...]:
        """The states the cell's output concatenates, ascending: ``concat`` if given, else
        :meth:`unused_states`."""
        return self.concat if self.concat is not None else self.unused_states()

    def with_combination(self, k: int, combination: Combination) -> "Cell":
        """A copy with combination ``k`` replaced (``concat`` kept as it is)."""
        combos = list(self.combinations)
        combos[k] = combination
        return Cell(tuple(combos), self.concat)

    def normalized(self) -> "Cell":
        """This cell, with a ``concat`` equal to the default rule dropped (same architecture)."""
        if self.concat is not None and tuple(self.concat) == self.unused_states():
            return Cell(self.combinations)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; ``concat`` only when the cell has one."""
        d: dict[str, Any] = {"combinations": [c.to_list() for c in self.combinations]}
        if self.concat is not None:
            d["concat"] = list(self.concat)
        return d


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


# ----- a controller's decisions (the NASNet paper's RNN controller, its section 3) -----

# Per cell (normal, then reduction), per combination k: its two hidden states (each one of
# the 2 + k states made so far), then the op applied to each (one of OPS); the paper's fifth
# step, how to combine, is always addition in this space.
DECISIONS = tuple(n for _cell in CELL_NAMES for k in range(NUM_COMBINATIONS)
                  for n in (NUM_CELL_INPUTS + k, NUM_CELL_INPUTS + k, len(OPS), len(OPS)))


def nasnet_decisions(dna: NasnetDNA) -> tuple[int, ...]:
    """The DNA as a controller's decisions (see :data:`DECISIONS`); a cell's ``concat`` is
    not a decision (a controller's cells use the default output rule)."""
    out: list[int] = []
    for name in CELL_NAMES:
        for c in dna.cell(name).combinations:
            out += [c.input_a, c.input_b, OPS.index(c.op_a), OPS.index(c.op_b)]
    return tuple(out)


def nasnet_from_decisions(choices: Sequence[int], learning_rate: float = INITIAL_LEARNING_RATE) -> NasnetDNA:
    """The DNA a controller's decisions describe (inverse of :func:`nasnet_decisions` for
    cells with the default output rule); DNAError unless each choice is in its range."""
    choices = tuple(choices)
    if len(choices) != len(DECISIONS) or any(not isinstance(c, int) or not 0 <= c < n
                                             for c, n in zip(choices, DECISIONS)):
        raise DNAError(f"a NASNet DNA takes {len(DECISIONS)} choices within {DECISIONS}, got {choices!r}"[:300])
    cells = []
    for i in range(len(CELL_NAMES)):
        part = choices[i * 4 * NUM_COMBINATIONS:(i + 1) * 4 * NUM_COMBINATIONS]
        cells.append(Cell(tuple(Combination(part[4 * k], OPS[part[4 * k + 2]], part[4 * k + 1], OPS[part[4 * k + 3]])
                                for k in range(NUM_COMBINATIONS))))
    return NasnetDNA(learning_rate=float(learning_rate), normal=cells[0], reduction=cells[1])


# ----- validation and parsing -----

def validate_nasnet(dna: NasnetDNA, bounds: Bounds | None = DEFAULT_BOUNDS) -> NasnetDNA:
    """Return ``dna`` unchanged if it is a valid NASNet genome; else raise a one-line DNAError.

    Checks the schema, that the learning rate is a finite float (within ``bounds`` unless
    ``bounds`` is None), that each cell has exactly five combinations, that every op is known
    and that combination ``k`` reads only hidden states ``0 .. k+1`` (so the cell is acyclic).
    """
    if not isinstance(dna, NasnetDNA):
        raise DNAError(f"expected a NASNet DNA, got {type(dna).__name__}")
    check_common_fields(dna, bounds)
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
        if cell.concat is not None:
            _check_concat(cell, name)
    return dna


def _check_concat(cell: Cell, name: str) -> None:
    concat = cell.concat
    where = f"{name} cell concat"
    if not isinstance(concat, tuple) or not concat:
        raise DNAError(f"{where} must be a non-empty list of hidden states")
    for s in concat:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < NUM_STATES:
            raise DNAError(f"{where}: {s!r} is not a hidden state (0..{NUM_STATES - 1})"[:200])
    if any(a >= b for a, b in zip(concat, concat[1:])):
        raise DNAError(f"{where} must list distinct hidden states in ascending order, got {list(concat)}")
    dead = [s for s in cell.unused_states() if s >= NUM_CELL_INPUTS and s not in concat]
    if dead:
        raise DNAError(f"{where} {list(concat)} leaves out state(s) {dead}, which no combination reads "
                       "(they would be computed for nothing)")


_TOP_KEYS = {"schema", "kind", "learning_rate", "mutation", "normal", "reduction"}


def nasnet_from_dict(obj: Any, bounds: Bounds = DEFAULT_BOUNDS) -> NasnetDNA:
    """Parse and validate a dict (from JSON) into a NasnetDNA. Raises only DNAError.

    Unknown or missing fields, wrong types, unknown ops, forward references and a bad
    ``concat`` are errors. A ``concat`` equal to the default rule is dropped.
    """
    obj, schema, lr = common_fields(obj, KIND, _TOP_KEYS)
    cells = {name: _parse_cell(obj[name], name) for name in CELL_NAMES}
    dna = NasnetDNA(learning_rate=lr, normal=cells["normal"], reduction=cells["reduction"],
                    mutation=field_str(obj["mutation"], "mutation"), schema=schema)
    validate_nasnet(dna, bounds)
    return dna.replace(normal=dna.normal.normalized(), reduction=dna.reduction.normalized())


def nasnet_from_json(text: str | bytes, bounds: Bounds = DEFAULT_BOUNDS) -> NasnetDNA:
    """Parse and validate untrusted JSON text. Raises only DNAError."""
    return nasnet_from_dict(parse_dna_json(text), bounds)


def _parse_cell(obj: Any, name: str) -> Cell:
    if isinstance(obj, dict) and "concat" in obj:
        obj = field_keys(obj, {"combinations", "concat"}, f"{name} cell")
        raw_concat = obj["concat"]
        if not isinstance(raw_concat, list):
            raise DNAError(f"{name} cell concat must be a list of hidden states, got {type(raw_concat).__name__}")
        if len(raw_concat) > NUM_STATES:
            raise DNAError(f"{name} cell concat has {len(raw_concat)} entries; a cell has {NUM_STATES} states")
        concat: tuple[int, ...] | None = tuple(field_int(s, f"{name} cell concat entry") for s in raw_concat)
    else:
        obj = field_keys(obj, {"combinations"}, f"{name} cell")
        concat = None
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
        combos.append(Combination(field_int(c[0], f"{where} input_a"), field_str(c[1], f"{where} op_a"),
                                  field_int(c[2], f"{where} input_b"), field_str(c[3], f"{where} op_b")))
    return Cell(tuple(combos), concat)

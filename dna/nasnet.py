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
reduction cells, ``F`` filters doubling at each reduction (see :func:`outer_plan`).

JSON (canonical: sorted keys, no whitespace)::

    {"schema": 1, "kind": "nasnet", "learning_rate": 0.1, "mutation": "initial",
     "normal": {"combinations": [[in_a, op_a, in_b, op_b], ... five ...]},
     "reduction": {"combinations": [...], "concat": [3, 4, 5, 6]}}

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
    obj, schema, lr = _common_fields(obj, KIND, _TOP_KEYS)
    cells = {name: _parse_cell(obj[name], name) for name in CELL_NAMES}
    dna = NasnetDNA(learning_rate=lr, normal=cells["normal"], reduction=cells["reduction"],
                    mutation=_str(obj["mutation"], "mutation"), schema=schema)
    validate_nasnet(dna, bounds)
    return dna.replace(normal=dna.normal.normalized(), reduction=dna.reduction.normalized())


def nasnet_from_json(text: str | bytes, bounds: Bounds = DEFAULT_BOUNDS) -> NasnetDNA:
    """Parse and validate untrusted JSON text. Raises only DNAError."""
    return nasnet_from_dict(parse_dna_json(text), bounds)


def _parse_cell(obj: Any, name: str) -> Cell:
    if isinstance(obj, dict) and "concat" in obj:
        obj = _keys(obj, {"combinations", "concat"}, f"{name} cell")
        raw_concat = obj["concat"]
        if not isinstance(raw_concat, list):
            raise DNAError(f"{name} cell concat must be a list of hidden states, got {type(raw_concat).__name__}")
        if len(raw_concat) > NUM_STATES:
            raise DNAError(f"{name} cell concat has {len(raw_concat)} entries; a cell has {NUM_STATES} states")
        concat: tuple[int, ...] | None = tuple(_int(s, f"{name} cell concat entry") for s in raw_concat)
    else:
        obj = _keys(obj, {"combinations"}, f"{name} cell")
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
        combos.append(Combination(_int(c[0], f"{where} input_a"), _str(c[1], f"{where} op_a"),
                                  _int(c[2], f"{where} input_b"), _str(c[3], f"{where} op_b")))
    return Cell(tuple(combos), concat)


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


AUX_HEAD_POOL, AUX_HEAD_STRIDE, AUX_HEAD_PROJECTION, AUX_HEAD_CHANNELS = 5, 3, 128, 768


@dataclass(frozen=True)
class CellWiring:
    """How one cell of the network is wired: what its two inputs are and what it outputs.

    ``prev`` says how state 1 (h_{i-1}) is made: ``"stem"`` (the first cell: the stem's
    output itself, ``3F`` channels, untouched, as the reference's ``_reduce_prev_layer``
    does when there is no earlier cell), ``"factorized"`` (h_{i-1} is twice the size of h_i:
    ReLU, factorized reduction), ``"conv1x1"`` (ReLU, 1x1 conv, BN: only its channel count
    differs) or ``"identity"``. ``state_channels`` are the channels of states 0 and 1 as the
    ops see them; every combination state has ``slot.filters``. ``level`` counts the
    reductions before the cell (its inputs are at ``ceil(H / 2**level)``).
    """

    slot: CellSlot
    cur_channels: int
    prev_channels: int
    prev: str
    state_channels: tuple[int, int]
    out_channels: int
    level: int


def network_wiring(dna: NasnetDNA, cells_per_stack: int, filters: int) -> tuple[CellWiring, ...]:
    """The wiring of every cell of :func:`outer_plan`, in order (the reference's CIFAR network:
    ``_build_nasnet_base`` in tensorflow/models nasnet.py with the CIFAR stem, which is also
    ``_build_network_base`` in tensorflow/tpu amoeba_net/model_builder.py with a basic stem)."""
    stem = STEM_MULTIPLIER * filters
    cur, prev = (stem, 0), None          # (channels, level) of the last two outputs
    wiring = []
    for slot in outer_plan(cells_per_stack, filters):
        f = slot.filters
        if prev is None:
            how, state1 = "stem", cur[0]
        elif prev[1] != cur[1]:
            how, state1 = "factorized", f
        elif prev[0] != f:
            how, state1 = "conv1x1", f
        else:
            how, state1 = "identity", f
        cell = dna.reduction if slot.reduction else dna.normal
        out = f * len(cell.output_states())
        wiring.append(CellWiring(slot, cur[0], prev[0] if prev else cur[0], how, (f, state1), out, cur[1]))
        prev, cur = cur, (out, cur[1] + slot.reduction)
    return tuple(wiring)


def aux_head_position(cells_per_stack: int) -> int:
    """Index (in :func:`outer_plan`) of the cell whose output feeds the auxiliary head: the last
    normal cell of the middle stack, the input of the second reduction cell, as in the
    references (``aux_head_cell_idxes = [reduction_indices[1] - 1]``: tensorflow/models
    nasnet.py, tensorflow/tpu amoeba_net/model_builder.py)."""
    return 2 * cells_per_stack


def aux_head_pool(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(pool kernel, pooled size) of the auxiliary head on a ``height`` x ``width`` map: a 5x5
    average pool with stride 3 and no padding (the references), over the whole map where it is
    smaller than 5."""
    kh, kw = min(AUX_HEAD_POOL, height), min(AUX_HEAD_POOL, width)
    return (kh, kw), ((height - kh) // AUX_HEAD_STRIDE + 1, (width - kw) // AUX_HEAD_STRIDE + 1)


def op_parameter_count(op: str, filters: int, stride: int, in_channels: int | None = None) -> int:
    """Trainable parameters of one op from ``in_channels`` (default ``filters``) to ``filters``
    channels, as ``dna.build_nasnet.make_op`` builds it (convs have no bias; BN has 2 per channel)."""
    f = filters
    c = f if in_channels is None else in_channels
    adapt = c * f + 2 * f  # a 1x1 conv and BN to f channels
    if op == "identity":
        return 0 if stride == 1 and c == f else adapt  # ReLU, 1x1 conv with stride, BN
    if op in ("avg3x3", "max3x3"):
        return 0 if c == f else adapt  # pool, then 1x1 conv and BN when the channels differ
    if op in ("sep3x3", "sep5x5", "sep7x7"):
        k = int(op[3])
        return (k * k * c + c * f + 2 * f) + (k * k * f + f * f + 2 * f)  # twice: depthwise, pointwise, BN
    if op == "dil3x3":
        return 9 * c + c * f + 2 * f
    if op == "conv1x7_7x1":
        r = f // 4
        if r < 1:  # too few channels for the bottleneck (the reference's rule)
            return 7 * c * f + 2 * f + 7 * f * f + 2 * f
        return c * r + 2 * r + 2 * (7 * r * r + 2 * r) + r * f + 2 * f
    raise ValueError(f"unknown op {op!r}")


def nasnet_parameter_count(dna: NasnetDNA, input_channels: int, num_classes: int,
                           cells_per_stack: int, filters: int, *, aux_head: bool = False,
                           image_size: tuple[int, int] = (32, 32)) -> int:
    """Trainable parameters of the model ``dna.build_nasnet.build_nasnet`` makes, without torch.

    With ``aux_head`` the auxiliary head's are included; its last conv covers the pooled map,
    so its size depends on ``image_size`` (height, width), which nothing else does.
    """
    validate_nasnet(dna, bounds=None)
    stem = STEM_MULTIPLIER * filters
    total = 9 * input_channels * stem + 2 * stem
    wiring = network_wiring(dna, cells_per_stack, filters)
    for w in wiring:
        f = w.slot.filters
        cell = dna.reduction if w.slot.reduction else dna.normal
        total += w.cur_channels * f + 2 * f  # state 0: ReLU, 1x1 conv, BN
        if w.prev in ("factorized", "conv1x1"):  # both C*f + 2f
            total += w.prev_channels * f + 2 * f
        stride = 2 if w.slot.reduction else 1
        channels = list(w.state_channels) + [f] * len(cell.combinations)
        for c in cell.combinations:
            for state, op in ((c.input_a, c.op_a), (c.input_b, c.op_b)):
                total += op_parameter_count(op, f, stride if state < NUM_CELL_INPUTS else 1, channels[state])
        for s in cell.output_states():
            if (w.slot.reduction and s < NUM_CELL_INPUTS) or channels[s] != f:
                total += channels[s] * f + 2 * f  # factorized reduction, or 1x1 conv + BN
    total += wiring[-1].out_channels * num_classes + num_classes
    if aux_head:
        feeding = wiring[aux_head_position(cells_per_stack)]
        h, w_ = (math.ceil(d / 2 ** (feeding.level + feeding.slot.reduction)) for d in image_size)
        _, (ph, pw) = aux_head_pool(h, w_)
        p, c = AUX_HEAD_PROJECTION, AUX_HEAD_CHANNELS
        total += feeding.out_channels * p + 2 * p + p * c * ph * pw + 2 * c + c * num_classes + num_classes
    return total

"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020, arXiv 2001.00326).

A cell is a DAG of four nodes: node 0 is the cell's input, node ``j`` (1..3) sums one op
applied to every earlier node, and node 3 is the cell's output. Its six edges, in the
benchmark's own order (its architecture strings ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``),
are ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2``; each carries one of five ops, so the space has
5**6 = 15,625 cells. The same cell is used everywhere in the network (``dna.build_nasbench201``
builds the benchmark's macro skeleton around it).

The DNA also holds a learning rate because every evo genome does (the worker trains a child
at its DNA's rate); no mutation changes it, and the benchmark's own training (its table) does
not depend on it.

JSON (canonical: sorted keys, no whitespace)::

    {"schema": 1, "kind": "nasbench201", "learning_rate": 0.1, "mutation": "initial",
     "ops": ["nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3"]}

Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from .bounds import DEFAULT_BOUNDS, Bounds
from .genome import (INITIAL_LEARNING_RATE, SCHEMA_VERSION, DNAError, Genome, check_common_fields, common_fields,
                     field_str, parse_dna_json)

if TYPE_CHECKING:
    import numpy as np

KIND = "nasbench201"
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")   # the benchmark's order
NUM_NODES = 4
EDGES = tuple((j, i) for j in range(1, NUM_NODES) for i in range(j))   # (to, from), the benchmark's order
NUM_EDGES = len(EDGES)
NUM_CELLS = len(OPS) ** NUM_EDGES
DECISIONS = (len(OPS),) * NUM_EDGES   # a controller picks one op per edge


@dataclass(frozen=True)
class Nb201DNA(Genome):
    """One cell: ``ops[k]`` is the op on edge ``EDGES[k]``; immutable.

    ``mutation`` is provenance, not architecture: it is in the JSON but not in
    :meth:`content_hash`.
    """

    ops: tuple[str, ...]
    learning_rate: float = INITIAL_LEARNING_RATE
    mutation: str = "initial"
    schema: int = SCHEMA_VERSION

    kind: ClassVar[str] = KIND

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"schema": self.schema, "kind": KIND, "learning_rate": self.learning_rate,
                "mutation": self.mutation, "ops": list(self.ops)}

    def arch_str(self) -> str:
        """The benchmark's architecture string, e.g. ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``."""
        nodes = []
        for j in range(1, NUM_NODES):
            nodes.append("|" + "|".join(f"{self.ops[k]}~{i}" for k, (to, i) in enumerate(EDGES) if to == j) + "|")
        return "+".join(nodes)

    def table_key(self) -> str:
        """Six digits, the index in ``OPS`` of each edge's op in edge order (``"333333"`` is all
        3x3 convolutions): the key of the cell in the benchmark tables ``evo.train.tabular`` reads."""
        return "".join(str(OPS.index(op)) for op in self.ops)


def random_nb201(rng: "np.random.Generator", learning_rate: float = INITIAL_LEARNING_RATE) -> Nb201DNA:
    """A cell with every edge's op uniform over ``OPS`` (uniform over the 15,625 cells)."""
    return Nb201DNA(ops=tuple(OPS[int(i)] for i in rng.integers(0, len(OPS), size=NUM_EDGES)),
                    learning_rate=float(learning_rate))


def from_table_key(key: str, learning_rate: float = INITIAL_LEARNING_RATE) -> Nb201DNA:
    """The cell of a table key (inverse of :meth:`Nb201DNA.table_key`); DNAError if malformed."""
    if not isinstance(key, str) or len(key) != NUM_EDGES or any(c not in "01234" for c in key):
        raise DNAError(f"not a NAS-Bench-201 cell key (six digits 0-4): {key!r}"[:200])
    return Nb201DNA(ops=tuple(OPS[int(c)] for c in key), learning_rate=float(learning_rate))


def nb201_decisions(dna: Nb201DNA) -> tuple[int, ...]:
    """The cell as a controller's decisions: the index in ``OPS`` of each edge's op, in edge
    order (one decision of ``len(OPS)`` choices per edge, :data:`DECISIONS`)."""
    return tuple(OPS.index(op) for op in dna.ops)


def nb201_from_decisions(choices: Sequence[int], learning_rate: float = INITIAL_LEARNING_RATE) -> Nb201DNA:
    """The cell a controller's decisions describe (inverse of :func:`nb201_decisions`);
    DNAError unless there is one choice in ``range(len(OPS))`` per edge."""
    choices = tuple(choices)
    if len(choices) != NUM_EDGES or any(not isinstance(c, int) or not 0 <= c < len(OPS) for c in choices):
        raise DNAError(f"a NAS-Bench-201 cell takes {NUM_EDGES} choices in 0..{len(OPS) - 1}, got {choices!r}"[:200])
    return Nb201DNA(ops=tuple(OPS[c] for c in choices), learning_rate=float(learning_rate))


def validate_nb201(dna: Nb201DNA, bounds: Bounds | None = DEFAULT_BOUNDS) -> Nb201DNA:
    """Return ``dna`` unchanged if it is a valid cell; else raise a one-line DNAError.

    Checks the schema, a finite learning rate (within ``bounds`` unless None), exactly six
    ops, each one of ``OPS``.
    """
    if not isinstance(dna, Nb201DNA):
        raise DNAError(f"expected a NAS-Bench-201 DNA, got {type(dna).__name__}")
    check_common_fields(dna, bounds)
    if not isinstance(dna.ops, tuple) or len(dna.ops) != NUM_EDGES:
        raise DNAError(f"a NAS-Bench-201 cell has exactly {NUM_EDGES} ops (one per edge)")
    for k, op in enumerate(dna.ops):
        if op not in OPS:
            raise DNAError(f"edge {EDGES[k][0]}<-{EDGES[k][1]}: unknown op {op!r} (known: {', '.join(OPS)})"[:300])
    return dna


_TOP_KEYS = {"schema", "kind", "learning_rate", "mutation", "ops"}


def nb201_from_dict(obj: Any, bounds: Bounds = DEFAULT_BOUNDS) -> Nb201DNA:
    """Parse and validate an untrusted dict (from JSON) into an Nb201DNA. Raises only DNAError.

    Unknown or missing fields, wrong types, a wrong number of ops and unknown ops are errors.
    """
    obj, schema, lr = common_fields(obj, KIND, _TOP_KEYS)
    raw = obj["ops"]
    if not isinstance(raw, list):
        raise DNAError(f"ops must be a list of {NUM_EDGES} op names, got {type(raw).__name__}")
    if len(raw) != NUM_EDGES:
        raise DNAError(f"ops has {len(raw)} entries; a NAS-Bench-201 cell has exactly {NUM_EDGES}")
    ops = tuple(field_str(op, f"ops[{k}]") for k, op in enumerate(raw))
    dna = Nb201DNA(ops=ops, learning_rate=lr, mutation=field_str(obj["mutation"], "mutation"), schema=schema)
    return validate_nb201(dna, bounds)


def nb201_from_json(text: str | bytes, bounds: Bounds = DEFAULT_BOUNDS) -> Nb201DNA:
    """Parse and validate untrusted JSON text. Raises only DNAError."""
    return nb201_from_dict(parse_dna_json(text), bounds)

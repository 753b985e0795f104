"""The large-scale-evolution genome (Real et al. 2017) as plain, immutable data.

A DNA is a learning rate plus a directed acyclic graph. Vertices are activations
(``linear`` or ``bn_relu``: batch-norm then ReLU); edges are ``identity`` connections or
``conv`` convolutions carrying mutable integers (filter height/width, output channels,
stride). One input vertex receives the image; one output vertex feeds global average
pooling and a linear classifier.

Every vertex and edge has an integer id drawn from one counter (``next_id``). Ids are never
reused and survive mutation, which is what lets a child inherit its parent's weights:
a tensor belongs to the vertex or edge whose id it carries.

This module never imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from .strict_json import UntrustedJSONError, parse_json

SCHEMA_VERSION = 1
VERTEX_KINDS = ("linear", "bn_relu")
EDGE_KINDS = ("identity", "conv")
INITIAL_LEARNING_RATE = 0.1


class DNAError(ValueError):
    """A DNA that does not parse or does not validate. The message is one line."""


@dataclass(frozen=True)
class Vertex:
    """An activation: ``linear`` (pass-through) or ``bn_relu`` (batch-norm, then ReLU)."""

    id: int
    kind: str = "bn_relu"


@dataclass(frozen=True)
class Edge:
    """A connection from vertex ``src`` to vertex ``dst``.

    ``identity`` edges pass their input through unchanged and carry no parameters (the
    numeric fields are 0, 0, 0 and stride 1). ``conv`` edges are 2-d convolutions with
    ``same`` padding: output channels ``channels``, kernel ``filter_h`` x ``filter_w``
    (odd sizes), stride ``stride`` (a power of two).
    """

    id: int
    src: int
    dst: int
    kind: str = "identity"
    filter_h: int = 0
    filter_w: int = 0
    channels: int = 0
    stride: int = 1

    @property
    def is_conv(self) -> bool:
        return self.kind == "conv"


class Genome:
    """What every kind of DNA (a frozen dataclass with a ``to_dict()``) shares: its canonical
    JSON, its content hash and changed copies."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with ``kind``, ``mutation`` and the kind's own fields."""
        raise NotImplementedError

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace); the kind's parser reads it back to an equal DNA."""
        return canonical_json(self.to_dict())

    def content_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON without ``mutation``; the same in every process."""
        return content_hash_of(self.to_dict())

    def replace(self, **changes: Any):
        """A copy with some fields changed (the DNA itself is never modified)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class DNA(Genome):
    """A learning rate plus a DAG of activations and edges; immutable.

    ``mutation`` records which mutation made this DNA (``"initial"`` for a fresh one); it is
    provenance, not architecture, so it is left out of :meth:`content_hash`.
    """

    learning_rate: float
    vertices: tuple[Vertex, ...]
    edges: tuple[Edge, ...]
    input_id: int
    output_id: int
    next_id: int
    mutation: str = "initial"
    schema: int = SCHEMA_VERSION

    # ----- lookups (cheap; DNAs are small) -----
    def vertex(self, vertex_id: int) -> Vertex:
        """The vertex with this id; KeyError if absent."""
        for v in self.vertices:
            if v.id == vertex_id:
                return v
        raise KeyError(vertex_id)

    def edge(self, edge_id: int) -> Edge:
        """The edge with this id; KeyError if absent."""
        for e in self.edges:
            if e.id == edge_id:
                return e
        raise KeyError(edge_id)

    def incoming(self, vertex_id: int) -> tuple[Edge, ...]:
        """Edges ending at ``vertex_id``, sorted by id (the first is the primary input)."""
        return tuple(sorted((e for e in self.edges if e.dst == vertex_id), key=lambda e: e.id))

    def outgoing(self, vertex_id: int) -> tuple[Edge, ...]:
        """Edges leaving ``vertex_id``, sorted by id."""
        return tuple(sorted((e for e in self.edges if e.src == vertex_id), key=lambda e: e.id))

    @property
    def conv_edges(self) -> tuple[Edge, ...]:
        return tuple(e for e in self.edges if e.kind == "conv")

    # ----- serialisation -----
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; identity edges omit the convolution fields."""
        edges = []
        for e in self.edges:
            d: dict[str, Any] = {"id": e.id, "src": e.src, "dst": e.dst, "kind": e.kind}
            if e.kind == "conv":
                d.update(filter_h=e.filter_h, filter_w=e.filter_w, channels=e.channels, stride=e.stride)
            edges.append(d)
        return {
            "schema": self.schema,
            "kind": "large_scale",
            "learning_rate": self.learning_rate,
            "input_id": self.input_id,
            "output_id": self.output_id,
            "next_id": self.next_id,
            "mutation": self.mutation,
            "vertices": [{"id": v.id, "kind": v.kind} for v in self.vertices],
            "edges": edges,
        }


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal data gives equal text in every process."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def content_hash_of(dna_dict: dict[str, Any]) -> str:
    """SHA-256 (hex) of a DNA dict's canonical JSON without its ``mutation`` (provenance) field.

    Shared by every DNA kind and by the store, so a hash computed from stored JSON equals
    ``DNA.content_hash()``.
    """
    return hashlib.sha256(canonical_json({k: v for k, v in dna_dict.items() if k != "mutation"}).encode()).hexdigest()


def initial(learning_rate: float = INITIAL_LEARNING_RATE) -> DNA:
    """The paper's starting individual: no convolution, only the classifier on the input.

    input vertex --identity--> output vertex --> global pooling --> linear classifier.
    """
    return DNA(
        learning_rate=learning_rate,
        vertices=(Vertex(0, "linear"), Vertex(1, "linear")),
        edges=(Edge(2, 0, 1, "identity"),),
        input_id=0,
        output_id=1,
        next_id=3,
    )


# ----- parsing untrusted input -----

_TOP_KEYS = {"schema", "kind", "learning_rate", "input_id", "output_id", "next_id", "mutation",
             "vertices", "edges"}
_VERTEX_KEYS = {"id", "kind"}
_IDENTITY_KEYS = {"id", "src", "dst", "kind"}
_CONV_KEYS = _IDENTITY_KEYS | {"filter_h", "filter_w", "channels", "stride"}


def check_common_fields(dna: Any, bounds: Any = None) -> None:
    """The checks every genome kind shares: the schema version, a finite float learning rate
    (within ``bounds``' learning-rate range unless ``bounds`` is None) and a string mutation
    name; a one-line DNAError naming the first problem."""
    if dna.schema != SCHEMA_VERSION:
        raise DNAError(f"unknown DNA schema version {dna.schema!r} (this evo reads version {SCHEMA_VERSION})"[:200])
    lr = dna.learning_rate
    if not isinstance(lr, float) or not math.isfinite(lr):
        raise DNAError(f"learning_rate must be a finite float, got {lr!r}"[:200])
    if bounds is not None and not bounds.min_learning_rate <= lr <= bounds.max_learning_rate:
        raise DNAError(f"learning_rate {lr:g} outside bounds "
                       f"[{bounds.min_learning_rate:g}, {bounds.max_learning_rate:g}]")
    if not isinstance(dna.mutation, str):
        raise DNAError(f"mutation must be a string, got {type(dna.mutation).__name__}")


# Reading a DNA's JSON fields, for every DNA kind's parser (dna.nasnet, dna.nasbench201): the
# value, or DNAError (one line) naming ``where`` it was.

def field_int(value: Any, where: str) -> int:
    """An integer (not a bool) of at most 2**53 in magnitude."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DNAError(f"{where} must be an integer, got {type(value).__name__}")
    if abs(value) > 2**53:
        raise DNAError(f"{where} is out of range: {value}")
    return value


def field_str(value: Any, where: str, max_len: int = 64) -> str:
    """A string of at most ``max_len`` characters."""
    if not isinstance(value, str):
        raise DNAError(f"{where} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise DNAError(f"{where} is too long ({len(value)} characters)")
    return value


def field_keys(obj: Any, expected: set[str], where: str) -> dict[str, Any]:
    """A JSON object with exactly the keys ``expected``."""
    if not isinstance(obj, dict):
        raise DNAError(f"{where} must be an object, got {type(obj).__name__}")
    unknown = set(obj) - expected
    if unknown:
        names = ', '.join(sorted(map(repr, unknown)))  # repr: a key may hold a newline
        raise DNAError(f"{where} has unknown field(s): {names}"[:200])
    missing = expected - set(obj)
    if missing:
        raise DNAError(f"{where} is missing field(s): {', '.join(sorted(missing))}")
    return obj


def common_fields(obj: Any, kind: str, keys: set[str]) -> tuple[dict[str, Any], int, float]:
    """What the JSON object of every DNA kind has: this evo's schema version, ``kind``, exactly
    the fields ``keys``, a finite ``learning_rate``. Returns (the object, schema, learning
    rate); DNAError (one line) for anything else."""
    if not isinstance(obj, dict):
        raise DNAError(f"DNA must be a JSON object, got {type(obj).__name__}")
    if "schema" not in obj:
        raise DNAError("DNA has no schema field")
    schema = obj["schema"]
    if isinstance(schema, bool) or not isinstance(schema, int) or schema != SCHEMA_VERSION:
        raise DNAError(f"unknown DNA schema version {schema!r} (this evo reads version {SCHEMA_VERSION})"[:200])
    if obj.get("kind") != kind:
        raise DNAError(f"unknown DNA kind {obj.get('kind')!r} (expected {kind!r})"[:200])
    obj = field_keys(obj, keys, "DNA")
    lr = obj["learning_rate"]
    if (isinstance(lr, bool) or not isinstance(lr, (int, float))
            or (isinstance(lr, int) and abs(lr) > 2**53) or not math.isfinite(lr)):  # huge int: OverflowError
        raise DNAError(f"learning_rate must be a finite number, got {lr!r}"[:200])
    return obj, schema, float(lr)


def from_dict(obj: Any) -> DNA:
    """Parse a dict (from JSON) into a DNA, checking its structure strictly.

    Raises :class:`DNAError` for anything malformed; does not check graph validity or
    bounds (use :func:`dna.validate` or :func:`from_json`, which does both).
    """
    obj, schema, lr = common_fields(obj, "large_scale", _TOP_KEYS)
    vertices_raw, edges_raw = obj["vertices"], obj["edges"]
    if not isinstance(vertices_raw, list) or not isinstance(edges_raw, list):
        raise DNAError("vertices and edges must be lists")
    if len(vertices_raw) > 100_000 or len(edges_raw) > 100_000:
        raise DNAError("DNA has far too many vertices or edges")
    vertices = []
    for i, v in enumerate(vertices_raw):
        v = field_keys(v, _VERTEX_KEYS, f"vertex #{i}")
        kind = field_str(v["kind"], f"vertex #{i} kind")
        if kind not in VERTEX_KINDS:
            raise DNAError(f"vertex #{i} has unknown kind {kind!r} (known: {', '.join(VERTEX_KINDS)})")
        vertices.append(Vertex(field_int(v["id"], f"vertex #{i} id"), kind))
    edges = []
    for i, e in enumerate(edges_raw):
        if not isinstance(e, dict):
            raise DNAError(f"edge #{i} must be an object, got {type(e).__name__}")
        kind = field_str(e.get("kind"), f"edge #{i} kind")
        if kind == "identity":
            e = field_keys(e, _IDENTITY_KEYS, f"edge #{i}")
            edges.append(Edge(field_int(e["id"], f"edge #{i} id"), field_int(e["src"], f"edge #{i} src"),
                              field_int(e["dst"], f"edge #{i} dst"), "identity"))
        elif kind == "conv":
            e = field_keys(e, _CONV_KEYS, f"edge #{i}")
            edges.append(Edge(
                field_int(e["id"], f"edge #{i} id"), field_int(e["src"], f"edge #{i} src"),
                field_int(e["dst"], f"edge #{i} dst"), "conv",
                filter_h=field_int(e["filter_h"], f"edge #{i} filter_h"),
                filter_w=field_int(e["filter_w"], f"edge #{i} filter_w"),
                channels=field_int(e["channels"], f"edge #{i} channels"),
                stride=field_int(e["stride"], f"edge #{i} stride"),
            ))
        else:
            raise DNAError(f"edge #{i} has unknown kind {kind!r} (known: {', '.join(EDGE_KINDS)})")
    return DNA(
        learning_rate=lr,
        vertices=tuple(vertices),
        edges=tuple(edges),
        input_id=field_int(obj["input_id"], "input_id"),
        output_id=field_int(obj["output_id"], "output_id"),
        next_id=field_int(obj["next_id"], "next_id"),
        mutation=field_str(obj["mutation"], "mutation"),
        schema=schema,
    )


def parse_dna_json(text: str | bytes) -> Any:
    """Bounded, strict JSON (:func:`dna.strict_json.parse_json`); every failure (bad UTF-8,
    syntax, deep nesting, numbers out of range, too large) is a one-line DNAError."""
    try:
        return parse_json(text, "DNA")
    except UntrustedJSONError as exc:
        raise DNAError(str(exc)) from None

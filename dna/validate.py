"""Validation of a DNA against structural rules and a run's bounds. Pure, no torch."""

from __future__ import annotations

from typing import Any

from .bounds import DEFAULT_BOUNDS, Bounds
from .genome import DNA, EDGE_KINDS, VERTEX_KINDS, DNAError, check_common_fields, from_dict, parse_dna_json
from .graph import reachable_from, topological_order


def validate(dna: DNA, bounds: Bounds = DEFAULT_BOUNDS) -> DNA:
    """Return ``dna`` unchanged if it is a valid genome within ``bounds``.

    Raises :class:`DNAError` with a one-line message naming the first problem found:
    unknown schema, unknown kinds, duplicate or out-of-counter ids, dangling edges, self
    loops, parallel edges, cycles, vertices unreachable from the input or with no path to
    the output, counts or parameters out of bounds.
    """
    check_common_fields(dna, bounds)
    if len(dna.vertices) > bounds.max_vertices:
        raise DNAError(f"{len(dna.vertices)} vertices exceed the bound of {bounds.max_vertices}")
    if len(dna.edges) > bounds.max_edges:
        raise DNAError(f"{len(dna.edges)} edges exceed the bound of {bounds.max_edges}")

    vertex_ids = [v.id for v in dna.vertices]
    all_ids = vertex_ids + [e.id for e in dna.edges]
    if len(set(all_ids)) != len(all_ids):
        dup = next(i for i in all_ids if all_ids.count(i) > 1)
        raise DNAError(f"id {dup} is used more than once")
    for i in all_ids:
        if not 0 <= i < dna.next_id:
            raise DNAError(f"id {i} is outside [0, next_id={dna.next_id})")
    vset = set(vertex_ids)
    for v in dna.vertices:
        if v.kind not in VERTEX_KINDS:
            raise DNAError(f"vertex {v.id} has unknown kind {v.kind!r}")
    if dna.input_id not in vset:
        raise DNAError(f"input vertex {dna.input_id} does not exist")
    if dna.output_id not in vset:
        raise DNAError(f"output vertex {dna.output_id} does not exist")
    if dna.input_id == dna.output_id:
        raise DNAError("input and output are the same vertex")
    if dna.vertex(dna.input_id).kind != "linear":
        raise DNAError(f"input vertex {dna.input_id} must be linear")

    pairs = set()
    for e in dna.edges:
        if e.kind not in EDGE_KINDS:
            raise DNAError(f"edge {e.id} has unknown kind {e.kind!r}")
        if e.src not in vset or e.dst not in vset:
            missing = e.src if e.src not in vset else e.dst
            raise DNAError(f"edge {e.id} is dangling: vertex {missing} does not exist")
        if e.src == e.dst:
            raise DNAError(f"edge {e.id} is a self loop on vertex {e.src}")
        if e.dst == dna.input_id:
            raise DNAError(f"edge {e.id} enters the input vertex")
        if e.src == dna.output_id:
            raise DNAError(f"edge {e.id} leaves the output vertex")
        if (e.src, e.dst) in pairs:
            raise DNAError(f"edge {e.id} duplicates another edge from {e.src} to {e.dst}")
        pairs.add((e.src, e.dst))
        _check_edge_params(e, bounds)

    topological_order(dna)  # raises on a cycle
    unreachable = vset - reachable_from(dna, dna.input_id)
    if unreachable:
        raise DNAError(f"vertex {min(unreachable)} is unreachable from the input")
    dead = vset - reachable_from(dna, dna.output_id, forward=False)
    if dead:
        raise DNAError(f"vertex {min(dead)} is a dead end (no path to the output)")
    return dna


def _check_edge_params(e: Any, bounds: Bounds) -> None:
    if e.kind == "identity":
        if (e.filter_h, e.filter_w, e.channels, e.stride) != (0, 0, 0, 1):
            raise DNAError(f"identity edge {e.id} carries convolution parameters")
        return
    for name in ("filter_h", "filter_w"):
        f = getattr(e, name)
        if not (1 <= f <= bounds.max_filter_size and f % 2 == 1):
            raise DNAError(f"conv edge {e.id} {name}={f} is not an odd size in [1, {bounds.max_filter_size}]")
    if not 1 <= e.channels <= bounds.max_channels:
        raise DNAError(f"conv edge {e.id} channels={e.channels} outside [1, {bounds.max_channels}]")
    s = e.stride
    if not (1 <= s <= bounds.max_stride and s & (s - 1) == 0):
        raise DNAError(f"conv edge {e.id} stride={s} is not a power of two in [1, {bounds.max_stride}]")


def from_json(text: str | bytes, bounds: Bounds = DEFAULT_BOUNDS) -> DNA:
    """Parse and validate untrusted JSON text. Raises only :class:`DNAError`."""
    return validate(from_dict(parse_dna_json(text)), bounds)

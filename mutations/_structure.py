"""Mutations of the graph: insert or remove a convolution, insert a one-to-one connection,
add or remove a skip connection.

Edges that survive keep their ids, so their weights can be inherited; new vertices and
edges take fresh ids from ``next_id``. A vertex's primary input is its lowest-id incoming
edge, and the insertions below never change which edge that is.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dna import DNA, Bounds, DNAError, Edge, Vertex, reachable_from, validate

from ._channels import symbolic_channels
from ._large_scale import register
from ._registry import take_ids

# Output channels of a convolution inserted right after a vertex whose channel count is the
# input image's (unknown to the DNA). Downstream shapes then change: a real architecture change.
DEFAULT_INSERTED_CHANNELS = 16
INSERTED_FILTER_SIZE = 3


def _room_for_vertex_and_edge(dna: DNA, bounds: Bounds) -> tuple[int, ...]:
    if len(dna.vertices) + 1 > bounds.max_vertices or len(dna.edges) + 1 > bounds.max_edges:
        return ()
    return tuple(e.id for e in dna.edges)


def _split_edge(dna: DNA, edge_id: int, new_edge: Edge, new_vertex: Vertex, next_id: int) -> DNA:
    """Route edge ``edge_id`` (u -> v) through ``new_vertex`` w: ``new_edge`` is u -> w, the old edge w -> v.

    The old edge keeps its id, so v's incoming edge ids (and its primary input) are unchanged.
    """
    edges = tuple(replace(e, src=new_vertex.id) if e.id == edge_id else e for e in dna.edges)
    return dna.replace(vertices=dna.vertices + (new_vertex,), edges=edges + (new_edge,), next_id=next_id)


@register("insert_convolution", candidates=_room_for_vertex_and_edge)
def insert_convolution(dna: DNA, edge_id: int, rng: np.random.Generator, bounds: Bounds) -> DNA:
    """Put a new bn_relu vertex w and a new 3x3, stride-1 convolution u -> w before edge u -> v.

    The convolution outputs C(u) channels (see :func:`symbolic_channels`), so w has u's
    shape and the old edge's weights keep their shape. Where C(u) is the input's unknown
    count, it outputs ``DEFAULT_INSERTED_CHANNELS`` (clipped to the bounds) instead, and the
    shapes downstream of w change.
    """
    u = dna.edge(edge_id).src
    channels = symbolic_channels(dna)[u]
    if channels is None:
        channels = min(DEFAULT_INSERTED_CHANNELS, bounds.max_channels)
    size = min(INSERTED_FILTER_SIZE, bounds.max_filter_size)
    (w, c), next_id = take_ids(dna, 2)
    conv = Edge(c, u, w, "conv", filter_h=size, filter_w=size, channels=channels, stride=1)
    return _split_edge(dna, edge_id, conv, Vertex(w, "bn_relu"), next_id)


@register("insert_identity", candidates=_room_for_vertex_and_edge)
def insert_identity(dna: DNA, edge_id: int, rng: np.random.Generator, bounds: Bounds) -> DNA:
    """Put a new bn_relu vertex w and a new identity edge u -> w before edge u -> v.

    No shape anywhere changes ("insert one-to-one" in the paper).
    """
    u = dna.edge(edge_id).src
    (w, c), next_id = take_ids(dna, 2)
    return _split_edge(dna, edge_id, Edge(c, u, w, "identity"), Vertex(w, "bn_relu"), next_id)


def _without_convolution(dna: DNA, edge_id: int, bounds: Bounds) -> DNA | None:
    """Conv u -> w removed together with w, w's outgoing edges re-attached to u; None if invalid."""
    conv = dna.edge(edge_id)
    u, w = conv.src, conv.dst
    if not conv.is_conv or w == dna.output_id or len(dna.incoming(w)) != 1:
        return None
    already = {e.dst for e in dna.outgoing(u)}
    if any(e.dst in already for e in dna.outgoing(w)):
        return None
    child = dna.replace(
        vertices=tuple(v for v in dna.vertices if v.id != w),
        edges=tuple(replace(e, src=u) if e.src == w else e for e in dna.edges if e.id != edge_id),
    )
    return _valid_or_none(child, bounds)


def _valid_or_none(child: DNA, bounds: Bounds) -> DNA | None:
    try:
        return validate(child, bounds)
    except DNAError:
        return None


def _removable_convolutions(dna: DNA, bounds: Bounds) -> tuple[int, ...]:
    return tuple(e.id for e in dna.conv_edges if _without_convolution(dna, e.id, bounds) is not None)


@register("remove_convolution", candidates=_removable_convolutions)
def remove_convolution(dna: DNA, edge_id: int, rng: np.random.Generator, bounds: Bounds) -> DNA:
    """Remove a convolution u -> w that is w's only input, and w with it.

    w's outgoing edges now start at u and keep their ids. Candidates that would duplicate an
    edge or break the graph are skipped; w is never the output.
    """
    child = _without_convolution(dna, edge_id, bounds)
    assert child is not None, "candidates are checked in _removable_convolutions"
    return child


def _skip_pairs(dna: DNA, bounds: Bounds) -> tuple[tuple[int, int], ...]:
    if len(dna.edges) + 1 > bounds.max_edges:
        return ()
    linked = {(e.src, e.dst) for e in dna.edges}
    ids = sorted(v.id for v in dna.vertices)
    descendants = {vid: reachable_from(dna, vid) for vid in ids}
    return tuple(
        (u, v) for u in ids if u != dna.output_id
        for v in ids
        # u in descendants[v] means v is an ancestor of u (or u itself): the edge would close a cycle.
        if v != dna.input_id and (u, v) not in linked and u not in descendants[v]
    )


@register("add_skip", candidates=_skip_pairs)
def add_skip(dna: DNA, pair: tuple[int, int], rng: np.random.Generator, bounds: Bounds) -> DNA:
    """A new identity edge u -> v between two unlinked vertices, keeping the graph acyclic.

    Its id is the newest, so it is never v's primary input: it is resized to v's shape.
    """
    u, v = pair
    (e,), next_id = take_ids(dna, 1)
    return dna.replace(edges=dna.edges + (Edge(e, u, v, "identity"),), next_id=next_id)


def _without_edge(dna: DNA, edge_id: int, bounds: Bounds) -> DNA | None:
    return _valid_or_none(dna.replace(edges=tuple(e for e in dna.edges if e.id != edge_id)), bounds)


def _removable_skips(dna: DNA, bounds: Bounds) -> tuple[int, ...]:
    return tuple(e.id for e in dna.edges
                 if not e.is_conv and len(dna.incoming(e.dst)) > 1
                 and _without_edge(dna, e.id, bounds) is not None)


@register("remove_skip", candidates=_removable_skips)
def remove_skip(dna: DNA, edge_id: int, rng: np.random.Generator, bounds: Bounds) -> DNA:
    """Remove an identity edge whose removal leaves a valid graph (every vertex still fed,
    reachable from the input and with a path to the output)."""
    child = _without_edge(dna, edge_id, bounds)
    assert child is not None, "candidates are checked in _removable_skips"
    return child

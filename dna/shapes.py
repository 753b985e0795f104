"""Shape inference and parameter counts for a DNA, in pure Python (no torch).

Convolutions use ``same`` padding, so a stride-``s`` conv maps H to ceil(H / s). Where
several edges meet at a vertex, the primary edge (lowest id) fixes the vertex's shape; the
others are resized to it (see ``dna.build``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .genome import DNA, Edge
from .graph import topological_order

Shape = tuple[int, int, int]  # (channels, height, width)
T = TypeVar("T")


def edge_output_shape(edge: Edge, src_shape: Shape) -> Shape:
    """Shape an edge produces from its source vertex's shape."""
    c, h, w = src_shape
    if edge.kind == "identity":
        return src_shape
    s = edge.stride
    return (edge.channels, -(-h // s), -(-w // s))


def along_primary_edges(dna: DNA, at_input: T, through: Callable[[Edge, T], T]) -> dict[int, T]:
    """A value for every vertex, computed as a vertex's shape is: the input vertex has
    ``at_input``; every other vertex has ``through(primary, value of primary.src)``, where
    ``primary`` is its lowest-id incoming edge. The DNA must be acyclic with an incoming edge
    at every non-input vertex (any valid DNA)."""
    values: dict[int, T] = {dna.input_id: at_input}
    for vid in topological_order(dna):
        if vid != dna.input_id:
            primary = dna.incoming(vid)[0]
            values[vid] = through(primary, values[primary.src])
    return values


def infer_shapes(dna: DNA, input_shape: Shape) -> dict[int, Shape]:
    """(channels, height, width) of every vertex for an input of ``input_shape``."""
    return along_primary_edges(dna, tuple(input_shape), edge_output_shape)  # type: ignore[arg-type]


def count_parameters(dna: DNA, input_shape: Shape, num_classes: int) -> int:
    """Trainable parameters of the model ``dna.build.build`` makes (convs have no bias)."""
    shapes = infer_shapes(dna, input_shape)
    total = 0
    for e in dna.conv_edges:
        total += shapes[e.src][0] * e.channels * e.filter_h * e.filter_w
    for v in dna.vertices:
        if v.kind == "bn_relu" and v.id != dna.input_id:
            total += 2 * shapes[v.id][0]
    out_c = shapes[dna.output_id][0]
    return total + out_c * num_classes + num_classes

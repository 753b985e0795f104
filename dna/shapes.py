"""Shape inference and parameter counts for a DNA, in pure Python (no torch).

Convolutions use ``same`` padding, so a stride-``s`` conv maps H to ceil(H / s). Where
several edges meet at a vertex, the primary edge (lowest id) fixes the vertex's shape; the
others are resized to it (see ``dna.build``).
"""

from __future__ import annotations

from .genome import DNA
from .graph import topological_order

Shape = tuple[int, int, int]  # (channels, height, width)


def edge_output_shape(edge, src_shape: Shape) -> Shape:
    """Shape an edge produces from its source vertex's shape."""
    c, h, w = src_shape
    if edge.kind == "identity":
        return src_shape
    s = edge.stride
    return (edge.channels, -(-h // s), -(-w // s))


def infer_shapes(dna: DNA, input_shape: Shape) -> dict[int, Shape]:
    """(channels, height, width) of every vertex for an input of ``input_shape``."""
    shapes: dict[int, Shape] = {dna.input_id: tuple(input_shape)}  # type: ignore[dict-item]
    for vid in topological_order(dna):
        if vid == dna.input_id:
            continue
        primary = dna.incoming(vid)[0]
        shapes[vid] = edge_output_shape(primary, shapes[primary.src])
    return shapes


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

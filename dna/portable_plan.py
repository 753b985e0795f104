"""The plain-data plan of a large-scale network, computed from its DNA (torch-free).

:class:`dna.portable.EvoNet` builds a network from this plan alone, so the plan is what an
export stores to rebuild the model without evo. The plan is JSON data::

    {"kind": "large_scale", "input_shape": [C, H, W], "num_classes": K,
     "convs": [{"name": "e5", "in": 3, "out": 16, "kernel": [3, 3], "stride": 1}, ...],
     "norms": [{"name": "v3", "channels": 16}, ...],
     "classifier_in": 16,
     "steps": [{"vertex": 3, "slot": 1, "norm": "v3", "release": [0],
                "inflows": [{"conv": "e5", "src": 0, "size": null, "channels": 16,
                             "target_channels": 16}, ...]}, ...],
     "output_slot": 2}

Vertices run in topological order, each in its own activation slot (the input is slot 0).
A step sums its inflows, primary (lowest edge id) first; an inflow whose spatial size
differs from the vertex's is resized to ``size``, and its channels are truncated or
zero-padded to ``target_channels``. ``release`` lists slots no later step reads.
"""

from __future__ import annotations

from typing import Any

from .genome import DNA
from .graph import topological_order
from .shapes import Shape, edge_output_shape, infer_shapes


def architecture(dna: DNA, input_shape: Shape, num_classes: int) -> dict[str, Any]:
    """The plan of ``dna``'s network for images of ``input_shape`` and ``num_classes`` classes.

    ``dna`` must already be valid (``dna.validate``); the result is JSON-serialisable.
    """
    shapes = infer_shapes(dna, tuple(input_shape))
    order = topological_order(dna)
    slot = {vid: i for i, vid in enumerate([dna.input_id] + [v for v in order if v != dna.input_id])}
    last_use: dict[int, int] = {}
    for e in dna.edges:
        last_use[e.src] = max(last_use.get(e.src, 0), slot[e.dst])
    norm_ids = {v.id for v in dna.vertices if v.kind == "bn_relu" and v.id != dna.input_id}
    steps = []
    for vid in order:
        if vid == dna.input_id:
            continue
        target = shapes[vid]
        inflows = []
        for e in dna.incoming(vid):
            c, h, w = edge_output_shape(e, shapes[e.src])
            inflows.append({
                "conv": f"e{e.id}" if e.is_conv else None,
                "src": slot[e.src],
                "size": None if (h, w) == target[1:] else [target[1], target[2]],
                "channels": c,
                "target_channels": target[0],
            })
        release = sorted(slot[u] for u, last in last_use.items() if last == slot[vid] and u != dna.output_id)
        steps.append({"vertex": vid, "slot": slot[vid], "inflows": inflows,
                      "norm": f"v{vid}" if vid in norm_ids else None, "release": release})
    convs = [{"name": f"e{e.id}", "in": shapes[e.src][0], "out": e.channels,
              "kernel": [e.filter_h, e.filter_w], "stride": e.stride}
             for e in sorted(dna.conv_edges, key=lambda e: e.id)]
    norms = [{"name": f"v{vid}", "channels": shapes[vid][0]} for vid in sorted(norm_ids)]
    return {
        "kind": "large_scale", "input_shape": list(input_shape), "num_classes": num_classes,
        "convs": convs, "norms": norms, "classifier_in": shapes[dna.output_id][0],
        "steps": steps, "output_slot": slot[dna.output_id],
    }

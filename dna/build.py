"""Build a PyTorch model from a DNA (imports torch; ``import dna`` does not import this module).

The model follows ``docs/design.md``: vertices run in topological order; each non-input vertex
sums the outputs of its incoming edges. The primary edge (lowest id) fixes the vertex's shape;
every other edge's output is resized to it -- nearest (zeroth-order) interpolation in space,
truncation or zero-padding in channels. ``bn_relu`` vertices apply BatchNorm2d then ReLU.
The output vertex feeds global average pooling and a linear classifier.

State-dict names carry the id of the vertex or edge that owns each tensor, which is what
weight inheritance (``dna.inherit``) matches on:

- ``vertices.v{id}.*``  BatchNorm2d of a ``bn_relu`` vertex
- ``edges.e{id}.weight``  Conv2d of a ``conv`` edge (no bias)
- ``classifier.weight``, ``classifier.bias``

The forward pass follows a plan computed once at build time, so it has no data-dependent
Python control flow, no ``.item()`` and no host sync: it can be captured in a CUDA graph.
It works on CPU and CUDA, in channels_last memory format and under bf16 autocast.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .bounds import DEFAULT_BOUNDS, Bounds
from .genome import DNA
from .graph import topological_order
from .shapes import Shape, edge_output_shape, infer_shapes
from .validate import validate

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class _Inflow:
    """One incoming edge of a vertex, as the forward pass applies it."""

    conv: str | None                   # key in EvoNet.edges, None for an identity edge
    src: int                           # activation slot of the source vertex
    size: tuple[int, int] | None       # spatial size to resize to (None: already right)
    channels: int                      # channels the edge produces
    target_channels: int               # channels of the destination vertex


@dataclass(frozen=True)
class _Step:
    """Compute one non-input vertex: sum its inflows, then optionally BN + ReLU."""

    vertex_id: int
    slot: int
    inflows: tuple[_Inflow, ...]       # the primary first
    bn: str | None                     # key in EvoNet.vertices, None for a linear vertex
    release: tuple[int, ...]           # slots no later step reads (freed to save memory)


class EvoNet(nn.Module):
    """The network a DNA describes. Build it with :func:`build`.

    ``forward(x)`` maps a batch ``(N, C, H, W)`` (``input_shape`` per image) to logits
    ``(N, num_classes)``. Attributes: ``dna``, ``input_shape``, ``num_classes`` and
    ``vertex_shapes`` (vertex id -> (channels, height, width), as ``dna.infer_shapes``).
    """

    def __init__(self, dna: DNA, input_shape: Shape, num_classes: int) -> None:
        super().__init__()
        self.dna = dna
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        shapes = infer_shapes(dna, self.input_shape)
        self.vertex_shapes: dict[int, Shape] = shapes

        self.vertices = nn.ModuleDict()
        self.edges = nn.ModuleDict()
        for e in sorted(dna.conv_edges, key=lambda e: e.id):
            self.edges[f"e{e.id}"] = nn.Conv2d(
                shapes[e.src][0], e.channels, kernel_size=(e.filter_h, e.filter_w),
                stride=e.stride, padding=(e.filter_h // 2, e.filter_w // 2), bias=False)
        for v in sorted(dna.vertices, key=lambda v: v.id):
            if v.kind == "bn_relu" and v.id != dna.input_id:
                self.vertices[f"v{v.id}"] = nn.BatchNorm2d(shapes[v.id][0])
        self.classifier = nn.Linear(shapes[dna.output_id][0], num_classes)

        self._steps, self._output_slot = _plan(dna, shapes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images; the same ops every call (CUDA-graph capturable)."""
        acts = self._run(x, keep_all=False)
        h = acts[self._output_slot].mean(dim=(2, 3))
        return self.classifier(h)

    def activations(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every vertex's output for ``x``, keyed by vertex id (for tests and inspection)."""
        acts = self._run(x, keep_all=True)
        slots = {self.dna.input_id: 0}
        slots.update({s.vertex_id: s.slot for s in self._steps})
        return {vid: acts[slot] for vid, slot in slots.items()}

    def _run(self, x: torch.Tensor, keep_all: bool) -> list[torch.Tensor | None]:
        acts: list[torch.Tensor | None] = [None] * (len(self._steps) + 1)
        acts[0] = x
        for step in self._steps:
            total = None
            for flow in step.inflows:
                y = acts[flow.src]
                if flow.conv is not None:
                    y = self.edges[flow.conv](y)
                if total is None:        # the primary edge: it defines the shape
                    total = y
                    continue
                if flow.size is not None:
                    y = F.interpolate(y, size=flow.size, mode="nearest")
                if flow.channels > flow.target_channels:
                    y = y[:, : flow.target_channels]
                elif flow.channels < flow.target_channels:
                    y = F.pad(y, (0, 0, 0, 0, 0, flow.target_channels - flow.channels))
                # Under autocast an identity edge may bring fp32 while convs give bf16.
                total = total + y.to(total.dtype)
            if step.bn is not None:
                total = F.relu(self.vertices[step.bn](total))
            acts[step.slot] = total
            if not keep_all:
                for slot in step.release:
                    acts[slot] = None
        return acts

    def extra_repr(self) -> str:
        return (f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
                f"vertices={len(self.dna.vertices)}, edges={len(self.dna.edges)}")


def _plan(dna: DNA, shapes: dict[int, Shape]) -> tuple[tuple[_Step, ...], int]:
    order = topological_order(dna)
    slot = {vid: i for i, vid in enumerate([dna.input_id] + [v for v in order if v != dna.input_id])}
    last_use: dict[int, int] = {}
    for e in dna.edges:
        last_use[e.src] = max(last_use.get(e.src, 0), slot[e.dst])
    bn_ids = {v.id for v in dna.vertices if v.kind == "bn_relu" and v.id != dna.input_id}
    steps = []
    for vid in order:
        if vid == dna.input_id:
            continue
        target = shapes[vid]
        inflows = []
        for e in dna.incoming(vid):
            c, h, w = edge_output_shape(e, shapes[e.src])
            inflows.append(_Inflow(
                conv=f"e{e.id}" if e.is_conv else None,
                src=slot[e.src],
                size=None if (h, w) == target[1:] else (target[1], target[2]),
                channels=c,
                target_channels=target[0],
            ))
        release = tuple(sorted(slot[u] for u, last in last_use.items()
                               if last == slot[vid] and u != dna.output_id))
        steps.append(_Step(vid, slot[vid], tuple(inflows), f"v{vid}" if vid in bn_ids else None, release))
    return tuple(steps), slot[dna.output_id]


def build(dna: DNA, input_shape: Sequence[int], num_classes: int, *,
          bounds: Bounds = DEFAULT_BOUNDS, generator: torch.Generator | None = None) -> EvoNet:
    """The model for ``dna``: validated first, freshly initialised, on the CPU in fp32.

    ``input_shape`` is ``(channels, height, width)`` of one image. Raises ``DNAError`` (one
    line) for an invalid DNA and ``ValueError`` for a bad shape or class count. Weights use
    PyTorch's default initialisation, drawn from ``generator`` when one is given (so a build
    can be reproduced). Move the result with ``.to(device, memory_format=...)``.
    """
    shape = _check_input_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"build: num_classes must be a positive integer, got {num_classes!r}")
    validate(dna, bounds)
    model = EvoNet(dna, shape, num_classes)
    if generator is not None:
        _reinitialise(model, generator)
    return model


def _check_input_shape(input_shape: Sequence[int]) -> Shape:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"build: input_shape must be 3 positive integers (channels, height, width), "
                         f"got {input_shape!r}"[:200])
    return shape  # type: ignore[return-value]


@torch.no_grad()
def _reinitialise(model: EvoNet, generator: torch.Generator) -> None:
    """PyTorch's default initialisation, but drawn from ``generator``."""
    for conv in model.edges.values():
        nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5), generator=generator)
    for bn in model.vertices.values():
        bn.reset_parameters()
    lin = model.classifier
    nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(lin.in_features)
    nn.init.uniform_(lin.bias, -bound, bound, generator=generator)


def param_count(model: nn.Module) -> int:
    """Number of trainable parameter elements (those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"fp32"`` or ``"bf16"``: ``"auto"`` means bf16 on CUDA and fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device | str,
             precision: str = "auto") -> contextlib.AbstractContextManager:
    """A context in which forward passes run at ``precision`` on ``device``'s type.

    bf16 is ``torch.autocast(device_type, dtype=torch.bfloat16)``; fp32 is a no-op context.
    Parameters stay fp32 either way (the optimizer updates fp32 weights).
    """
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def logits(model: nn.Module, x: torch.Tensor, precision: str = "auto") -> torch.Tensor:
    """``model(x)`` under :func:`autocast` for ``x``'s device, returned as fp32 logits."""
    with autocast(x.device, precision):
        out = model(x)
    return out.float()

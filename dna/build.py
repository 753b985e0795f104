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

The forward pass follows a plan computed once at build time (``dna.portable_plan``), so it
has no data-dependent Python control flow, no ``.item()`` and no host sync: it can be
captured in a CUDA graph. It works on CPU and CUDA, in channels_last memory format and under
bf16 autocast. The network module itself is ``dna.portable_net.PlanNet`` (torch and the
standard library only), which ``evo best --export`` copies verbatim beside the weights; this
module adds validation and seeded initialisation (the trainer, ``evo.train.training``, owns precision).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .bounds import DEFAULT_BOUNDS, Bounds
from .genome import DNA
from .portable_net import PlanNet
from .portable_plan import architecture
from .shapes import Shape, infer_shapes
from .validate import validate


class EvoNet(PlanNet):
    """The network a DNA describes. Build it with :func:`build`.

    ``forward(x)`` maps a batch ``(N, C, H, W)`` (``input_shape`` per image) to logits
    ``(N, num_classes)``. Attributes: ``dna``, ``input_shape``, ``num_classes``, ``plan`` (the
    JSON plan ``PlanNet`` builds from, as an export stores it) and ``vertex_shapes``
    (vertex id -> (channels, height, width), as ``dna.infer_shapes``).
    """

    def __init__(self, dna: DNA, input_shape: Shape, num_classes: int) -> None:
        super().__init__(architecture(dna, tuple(input_shape), num_classes))
        self.dna = dna
        self.vertex_shapes: dict[int, Shape] = infer_shapes(dna, self.input_shape)

    def activations(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every vertex's output for ``x``, keyed by vertex id (for tests and inspection)."""
        acts = self._run(x, keep_all=True)
        slots = {self.dna.input_id: 0}
        slots.update({s.vertex: s.slot for s in self._steps})
        return {vid: acts[slot] for vid, slot in slots.items()}

    def extra_repr(self) -> str:
        return (f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
                f"vertices={len(self.dna.vertices)}, edges={len(self.dna.edges)}")


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

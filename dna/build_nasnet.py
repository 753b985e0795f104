"""Build a torch model from a NASNet DNA (``dna.nasnet``), with NASNet's conventions.

Network: stem (3x3 conv to ``3 * F`` channels, BN), then the cells of
:func:`dna.nasnet.outer_plan` (N normal, reduction, N normal, reduction, N normal; filters
F, 2F, 4F), then ReLU, global average pooling and a linear classifier. The stem has no ReLU
because every cell starts its ops with one.

Inside a cell (``f`` filters):
- state 0 (the previous cell's output) goes through ReLU, 1x1 conv, BN to ``f`` channels;
- state 1 (the cell before that) goes through a factorized reduction when it is twice the
  spatial size of state 0 (just after a reduction cell), else ReLU, 1x1 conv, BN when its
  channel count is not ``f``, else nothing;
- every op is ReLU, conv, BN; a separable conv is applied twice (no BN or ReLU between its
  depthwise and pointwise parts); in a reduction cell, ops reading states 0 or 1 have stride
  2 (an identity becomes ReLU, 1x1 conv with stride 2, BN) and the others stride 1;
- the output concatenates the states no combination reads; in a reduction cell an unread
  cell input goes through a factorized reduction first, so channels = ``f`` * #unused.

Convs have no bias. All structure is fixed at construction: ``forward`` has no
data-dependent Python control flow, so a CUDA graph can capture it. This module imports torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nasnet import NUM_CELL_INPUTS, STEM_MULTIPLIER, Cell, NasnetDNA, outer_plan, validate_nasnet


def _relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


def _separable(c: int, kernel: int, stride: int, dilation: int = 1) -> nn.Sequential:
    """ReLU, depthwise conv, pointwise conv, BN."""
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(c, c, kernel, stride, pad, dilation=dilation, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c),
    )


class FactorizedReduce(nn.Module):
    """Halve the spatial size without losing pixels: ReLU, two 1x1 stride-2 convs on inputs
    offset by one pixel, concatenated to ``c_out`` channels, BN."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_even = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_odd = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_even(x), self.conv_odd(shifted)], dim=1))


def make_op(op: str, filters: int, stride: int) -> nn.Module:
    """The module for one op name of ``dna.nasnet.OPS`` on ``filters`` channels (in = out)."""
    f = filters
    if op == "identity":
        return nn.Identity() if stride == 1 else _relu_conv_bn(f, f, 1, stride)
    if op == "avg3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if op == "max3x3":
        return nn.MaxPool2d(3, stride, 1)
    if op in ("sep3x3", "sep5x5", "sep7x7"):
        k = int(op[3])
        return nn.Sequential(_separable(f, k, stride), _separable(f, k, 1))
    if op == "dil3x3":
        return _separable(f, 3, stride, dilation=2)
    if op == "conv1x7_7x1":
        return nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(f, f, (1, 7), (1, stride), (0, 3), bias=False),
            nn.Conv2d(f, f, (7, 1), (stride, 1), (3, 0), bias=False),
            nn.BatchNorm2d(f),
        )
    raise ValueError(f"unknown op {op!r}")


class NasnetCell(nn.Module):
    """One cell: two inputs, five pairwise combinations, concatenation of the unused states."""

    def __init__(self, cell: Cell, cur_channels: int, prev_channels: int, prev_is_larger: bool,
                 filters: int, reduction: bool) -> None:
        super().__init__()
        f = filters
        self.preprocess0 = _relu_conv_bn(cur_channels, f, 1)
        if prev_is_larger:
            self.preprocess1: nn.Module = FactorizedReduce(prev_channels, f)
        elif prev_channels != f:
            self.preprocess1 = _relu_conv_bn(prev_channels, f, 1)
        else:
            self.preprocess1 = nn.Identity()
        stride = 2 if reduction else 1
        ops = []
        for c in cell.combinations:
            for state, op in ((c.input_a, c.op_a), (c.input_b, c.op_b)):
                ops.append(make_op(op, f, stride if state < NUM_CELL_INPUTS else 1))
        self.ops = nn.ModuleList(ops)
        self.inputs = tuple(c.inputs for c in cell.combinations)
        self.unused = cell.unused_states()
        self.finalize = nn.ModuleList(
            FactorizedReduce(f, f) if reduction and s < NUM_CELL_INPUTS else nn.Identity() for s in self.unused)
        self.out_channels = f * len(self.unused)

    def forward(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(cur), self.preprocess1(prev)]
        for k, (a, b) in enumerate(self.inputs):
            states.append(self.ops[2 * k](states[a]) + self.ops[2 * k + 1](states[b]))
        return torch.cat([fin(states[s]) for fin, s in zip(self.finalize, self.unused)], dim=1)


class NasnetModel(nn.Module):
    """Stem, the cells of the outer plan, ReLU, global average pooling, linear classifier."""

    def __init__(self, dna: NasnetDNA, input_channels: int, num_classes: int,
                 cells_per_stack: int, filters: int) -> None:
        super().__init__()
        stem = STEM_MULTIPLIER * filters
        self.stem = nn.Sequential(nn.Conv2d(input_channels, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem))
        cells = []
        cur, prev, prev_is_larger = stem, stem, False
        for slot in outer_plan(cells_per_stack, filters):
            cell = NasnetCell(dna.reduction if slot.reduction else dna.normal, cur, prev, prev_is_larger,
                              slot.filters, slot.reduction)
            cells.append(cell)
            prev, cur, prev_is_larger = cur, cell.out_channels, slot.reduction
        self.cells = nn.ModuleList(cells)
        self.classifier = nn.Linear(cur, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cur = prev = self.stem(x)
        for cell in self.cells:
            prev, cur = cur, cell(cur, prev)
        return self.classifier(F.relu(cur).mean(dim=(2, 3)))


def build_nasnet(dna: NasnetDNA, input_shape: tuple[int, int, int], num_classes: int,
                 cells_per_stack: int = 2, filters: int = 16) -> NasnetModel:
    """A freshly initialised model for ``dna`` on images of ``input_shape`` (channels, height, width).

    Raises DNAError for an invalid DNA and a one-line ValueError for bad settings
    (``cells_per_stack >= 1``, ``filters >= 2``, ``num_classes >= 1``, positive input dims).
    Any image size works: each reduction maps H to ceil(H / 2) (8x8 ends at 2x2).
    """
    validate_nasnet(dna, bounds=None)
    shape = tuple(input_shape)
    if len(shape) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"nasnet: input_shape must be three positive integers (C, H, W), got {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"nasnet: num_classes must be an integer >= 1, got {num_classes!r}")
    outer_plan(cells_per_stack, filters)  # raises on bad N or F
    return NasnetModel(dna, shape[0], num_classes, cells_per_stack, filters)

"""Build a torch model from a NASNet DNA (``dna.nasnet``), as the reference implementations do.

The references, read for every detail below (transcribed, not copied):
tensorflow/models ``research/slim/nets/nasnet/nasnet.py`` and ``nasnet_utils.py`` (NASNet-A,
Zoph et al. 2018) and tensorflow/tpu ``models/official/amoeba_net/model_builder.py`` and
``network_utils.py`` (AmoebaNet, Real et al. 2019). Built at the papers' CIFAR-10 sizes,
NASNet-A (N=6, F=32) has 3.35M parameters and AmoebaNet-A (N=6, F=36) 3.22M without the
auxiliary head; the papers report 3.3M and 3.2M.

Network: a stem, then the cells of :func:`dna.nasnet_network.outer_plan` (N normal, reduction,
N normal, reduction, N normal; filters F, 2F, 4F), then ReLU, global average pooling and a
linear classifier. The stem (``stem=``, see :mod:`dna.nasnet_network`) is the reference's CIFAR
stem (3x3 conv to ``3 * F`` channels, BN) or its ImageNet stem (3x3 stride-2 unpadded conv to 32
channels, BN, then the DNA's reduction cell at ``F // 4`` and at ``F // 2`` filters: the first
two entries of ``model.cells``). The stem convolution has no ReLU because every cell starts
its ops with one.

Inside a cell (``f`` filters; :func:`dna.nasnet_network.network_wiring` says which case applies):

- state 0 (h_i, the previous cell's output) goes through ReLU, 1x1 conv, BN to ``f`` channels;
- state 1 (h_{i-1}) is, in the first cell, the stem convolution's output itself (``3F`` or 32
  channels, no ReLU, no conv: the reference's ``_reduce_prev_layer`` returns the current input when there
  is no earlier cell); after a reduction it goes through ReLU and a factorized reduction
  (two 1x1 stride-2 convs on inputs offset by one pixel, concatenated, BN); when only its
  channel count differs, through ReLU, 1x1 conv, BN; else nothing;
- every op maps its input's channels to ``f``: a separable conv is ReLU, depthwise,
  pointwise, BN, applied twice (the first pointwise does the channel change); ``dil3x3`` is one
  such layer with dilation 2; ``identity`` is nothing unless it must stride or change
  channels (then ReLU, 1x1 conv, BN); a pool is followed by 1x1 conv and BN (no ReLU) only
  when the channels differ; ``conv1x7_7x1`` has the reference's bottleneck: ReLU, 1x1 conv to
  ``f // 4``, BN, ReLU, 1x7 conv, BN, ReLU, 7x1 conv, BN, ReLU, 1x1 conv to ``f``, BN (no
  bottleneck when ``f // 4`` is 0: ReLU, 1x7, BN, ReLU, 7x1, BN). In a reduction cell, ops
  reading states 0 or 1 have stride 2 and the others stride 1;
- the output concatenates :meth:`dna.nasnet.Cell.output_states` (the explicit ``concat`` list,
  or the states no combination reads). As in the reference's ``_combine_unused_states``, a
  concatenated state that is larger than the output (a cell input of a reduction cell) goes
  through a factorized reduction, and one with other than ``f`` channels (the stem in the
  first cell) through 1x1 conv and BN, both without a ReLU first.

Final training (the interface ``evo retrain`` trains through; docs/design.md "Final models"):

- ``model.drop_path_prob`` (float in [0, 1), default 0) is ScheduledDropPath's current
  probability: in training mode, when above 0, each op output except ``identity`` is zeroed
  per example with that probability and the kept ones are scaled by ``1 / (1 - p)``
  (``drop_path`` in both references, which also skip ``none``). Eval mode never drops. The
  value is held in a (non-persistent) buffer of every cell, so a CUDA graph captured with
  ``drop_path_prob > 0`` follows later changes; it is not in the state dict.
- ``build_nasnet(..., aux_head=True)`` adds the auxiliary classifier (``aux_head.*``) on the
  output of cell :func:`dna.nasnet_network.aux_head_position`: ReLU, average pool 5x5 stride 3 without
  padding (the whole map when it is smaller), 1x1 conv to 128, BN, ReLU, conv to 768 over the
  remaining map, BN, ReLU, linear (the references' ``_build_aux_head``). In training mode
  ``model(x)`` is then ``(logits, aux_logits)``; otherwise the logits. The body's parameter
  names and shapes do not depend on ``aux_head``.

Convs have no bias. All structure is fixed at construction: ``forward`` has no
data-dependent Python control flow, so a CUDA graph can capture it. This module imports torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nasnet import NUM_CELL_INPUTS, Cell, NasnetDNA, validate_nasnet
from .nasnet_network import (AUX_HEAD_CHANNELS, AUX_HEAD_PROJECTION, AUX_HEAD_STRIDE, CIFAR, IMAGENET, CellWiring,
                             aux_head_pool, aux_head_position, check_stem, choose_stem, feature_size, network_wiring,
                             outer_plan, stem_channels)


def _relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """1x1 conv and BN without a ReLU: the references' channel adjustment after a pool and in
    the output concatenation."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


def _separable(c_in: int, c_out: int, kernel: int, stride: int, dilation: int = 1) -> nn.Sequential:
    """ReLU, depthwise conv, pointwise conv, BN."""
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(c_in, c_in, kernel, stride, pad, dilation=dilation, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
    )


class FactorizedReduce(nn.Module):
    """Halve the spatial size without losing pixels: (ReLU,) two 1x1 stride-2 convs on inputs
    offset by one pixel, concatenated to ``c_out`` channels, BN."""

    def __init__(self, c_in: int, c_out: int, relu: bool = True) -> None:
        super().__init__()
        self.relu = relu
        self.conv_even = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_odd = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relu:
            x = F.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_even(x), self.conv_odd(shifted)], dim=1))


def _factorized_1x7_7x1(c_in: int, f: int, stride: int) -> nn.Sequential:
    r = f // 4
    if r < 1:
        return nn.Sequential(
            nn.ReLU(), nn.Conv2d(c_in, f, (1, 7), (1, stride), (0, 3), bias=False), nn.BatchNorm2d(f),
            nn.ReLU(), nn.Conv2d(f, f, (7, 1), (stride, 1), (3, 0), bias=False), nn.BatchNorm2d(f))
    return nn.Sequential(
        nn.ReLU(), nn.Conv2d(c_in, r, 1, bias=False), nn.BatchNorm2d(r),
        nn.ReLU(), nn.Conv2d(r, r, (1, 7), (1, stride), (0, 3), bias=False), nn.BatchNorm2d(r),
        nn.ReLU(), nn.Conv2d(r, r, (7, 1), (stride, 1), (3, 0), bias=False), nn.BatchNorm2d(r),
        nn.ReLU(), nn.Conv2d(r, f, 1, bias=False), nn.BatchNorm2d(f))


def make_op(op: str, filters: int, stride: int, in_channels: int | None = None) -> nn.Module:
    """The module for one op name of ``dna.nasnet.OPS``, from ``in_channels`` (default
    ``filters``) to ``filters`` channels."""
    f = filters
    c = f if in_channels is None else in_channels
    if op == "identity":
        return nn.Identity() if stride == 1 and c == f else _relu_conv_bn(c, f, 1, stride)
    if op in ("avg3x3", "max3x3"):
        pool = (nn.AvgPool2d(3, stride, 1, count_include_pad=False) if op == "avg3x3"
                else nn.MaxPool2d(3, stride, 1))
        return pool if c == f else nn.Sequential(pool, _conv_bn(c, f))
    if op in ("sep3x3", "sep5x5", "sep7x7"):
        k = int(op[3])
        return nn.Sequential(_separable(c, f, k, stride), _separable(f, f, k, 1))
    if op == "dil3x3":
        return _separable(c, f, 3, stride, dilation=2)
    if op == "conv1x7_7x1":
        return _factorized_1x7_7x1(c, f, stride)
    raise ValueError(f"unknown op {op!r}")


def drop_path(x: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """Zero whole examples of ``x`` with probability ``prob`` (a 0-d tensor), scale the rest by
    ``1 / (1 - prob)``."""
    keep = 1.0 - prob
    mask = (torch.rand((x.shape[0], 1, 1, 1), device=x.device) < keep).to(x.dtype)
    return x * (mask / keep).to(x.dtype)


class NasnetCell(nn.Module):
    """One cell: two inputs, five pairwise combinations, the concatenation of its output states."""

    def __init__(self, cell: Cell, wiring: CellWiring) -> None:
        super().__init__()
        f = wiring.slot.filters
        reduction = wiring.slot.reduction
        self.preprocess0 = _relu_conv_bn(wiring.cur_channels, f, 1)
        if wiring.prev == "factorized":
            self.preprocess1: nn.Module = FactorizedReduce(wiring.prev_channels, f)
        elif wiring.prev == "conv1x1":
            self.preprocess1 = _relu_conv_bn(wiring.prev_channels, f, 1)
        else:  # "identity", or "stem": the first cell reads the stem's output as it is
            self.preprocess1 = nn.Identity()
        channels = list(wiring.state_channels) + [f] * len(cell.combinations)
        stride = 2 if reduction else 1
        ops, droppable = [], []
        for c in cell.combinations:
            for state, op in ((c.input_a, c.op_a), (c.input_b, c.op_b)):
                ops.append(make_op(op, f, stride if state < NUM_CELL_INPUTS else 1, channels[state]))
                droppable.append(op != "identity")
        self.ops = nn.ModuleList(ops)
        self.droppable = tuple(droppable)
        self.inputs = tuple(c.inputs for c in cell.combinations)
        self.outputs = cell.output_states()
        finalize: list[nn.Module] = []
        for s in self.outputs:
            if reduction and s < NUM_CELL_INPUTS:
                finalize.append(FactorizedReduce(channels[s], f, relu=False))
            elif channels[s] != f:
                finalize.append(_conv_bn(channels[s], f))
            else:
                finalize.append(nn.Identity())
        self.finalize = nn.ModuleList(finalize)
        self.out_channels = wiring.out_channels
        self.register_buffer("drop_path_prob", torch.zeros(()), persistent=False)
        self.dropping = False  # set with the model's drop_path_prob: whether forward drops at all

    def forward(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(cur), self.preprocess1(prev)]
        drop = self.training and self.dropping
        for k, (a, b) in enumerate(self.inputs):
            outs = []
            for j, s in ((2 * k, a), (2 * k + 1, b)):
                y = self.ops[j](states[s])
                if drop and self.droppable[j]:
                    y = drop_path(y, self.drop_path_prob)
                outs.append(y)
            states.append(outs[0] + outs[1])
        return torch.cat([fin(states[s]) for fin, s in zip(self.finalize, self.outputs)], dim=1)


class AuxHead(nn.Module):
    """The references' auxiliary classifier on a ``channels`` x ``height`` x ``width`` map."""

    def __init__(self, channels: int, height: int, width: int, num_classes: int) -> None:
        super().__init__()
        kernel, pooled = aux_head_pool(height, width)
        p, c = AUX_HEAD_PROJECTION, AUX_HEAD_CHANNELS
        self.features = nn.Sequential(
            nn.ReLU(), nn.AvgPool2d(kernel, AUX_HEAD_STRIDE, 0, count_include_pad=False),
            nn.Conv2d(channels, p, 1, bias=False), nn.BatchNorm2d(p), nn.ReLU(),
            nn.Conv2d(p, c, pooled, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.Flatten())
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class NasnetModel(nn.Module):
    """Stem, the cells of the outer plan, ReLU, global average pooling, linear classifier; and,
    when built with ``aux_head=True``, the auxiliary head (training mode only). ``stem_type``
    is ``"cifar"`` or ``"imagenet"``; with the ImageNet stem, ``cells`` starts with its two
    reduction cells."""

    def __init__(self, dna: NasnetDNA, input_shape: tuple[int, int, int], num_classes: int,
                 cells_per_stack: int, filters: int, aux_head: bool = False, stem: str = CIFAR) -> None:
        super().__init__()
        conv0 = stem_channels(stem, filters)
        self.stem_type = stem
        self.stem = (nn.Sequential(nn.Conv2d(input_shape[0], conv0, 3, 2, 0, bias=False), nn.BatchNorm2d(conv0))
                     if stem == IMAGENET else
                     nn.Sequential(nn.Conv2d(input_shape[0], conv0, 3, 1, 1, bias=False), nn.BatchNorm2d(conv0)))
        wiring = network_wiring(dna, cells_per_stack, filters, stem)
        self.cells = nn.ModuleList(NasnetCell(dna.reduction if w.slot.reduction else dna.normal, w) for w in wiring)
        self.classifier = nn.Linear(wiring[-1].out_channels, num_classes)
        self.aux_position = aux_head_position(cells_per_stack, stem) if aux_head else -1
        if aux_head:
            feeding = wiring[self.aux_position]
            level = feeding.level + feeding.slot.reduction
            self.aux_head = AuxHead(feeding.out_channels, feature_size(stem, input_shape[1], level),
                                    feature_size(stem, input_shape[2], level), num_classes)
        self._drop_path_prob = 0.0

    @property
    def drop_path_prob(self) -> float:
        """ScheduledDropPath's current probability (0: no drop path); see the module docstring."""
        return self._drop_path_prob

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        p = float(value)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {value!r}")
        self._drop_path_prob = p
        for cell in self.cells:
            cell.drop_path_prob.fill_(p)
            cell.dropping = p > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        cur = prev = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            prev, cur = cur, cell(cur, prev)
            if i == self.aux_position and self.training:
                aux = self.aux_head(cur)
        logits = self.classifier(F.relu(cur).mean(dim=(2, 3)))
        return logits if aux is None else (logits, aux)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(body, auxiliary head) trainable parameters of a model; the aux head's are the
    ``aux_head.*`` ones (0 for a model without one)."""
    body = aux = 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            if name.startswith("aux_head."):
                aux += p.numel()
            else:
                body += p.numel()
    return body, aux


def build_nasnet(dna: NasnetDNA, input_shape: tuple[int, int, int], num_classes: int,
                 cells_per_stack: int = 3, filters: int = 24, aux_head: bool = False,
                 stem: str = CIFAR) -> NasnetModel:
    """A freshly initialised model for ``dna`` on images of ``input_shape`` (channels, height, width).

    ``aux_head``: add the auxiliary classifier (for final training; see the module docstring);
    ``model.drop_path_prob`` starts at 0. ``stem``: ``"cifar"`` (default: the model as it has
    always been built), ``"imagenet"``, or ``"auto"`` (:func:`dna.nasnet_network.choose_stem`:
    ImageNet above 64 px if ``filters >= 8``); ``model.stem_type`` says which was built. Raises DNAError for an
    invalid DNA and a one-line ValueError for bad settings (``cells_per_stack >= 1``,
    ``filters >= 2``, ``num_classes >= 1``, positive input dims; the ImageNet stem needs
    ``filters >= 8`` and images of at least 3x3). Any image size works: each reduction maps H
    to ceil(H / 2) (8x8 ends at 2x2).
    """
    validate_nasnet(dna, bounds=None)
    shape = tuple(input_shape)
    if len(shape) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"nasnet: input_shape must be three positive integers (C, H, W), got {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"nasnet: num_classes must be an integer >= 1, got {num_classes!r}")
    outer_plan(cells_per_stack, filters)  # raises on bad N or F
    chosen = choose_stem(stem, shape, filters)
    check_stem(chosen, filters, shape[1], shape[2])
    return NasnetModel(dna, shape, num_classes, cells_per_stack, filters, aux_head=bool(aux_head), stem=chosen)

"""The NAS-Bench-201 network around one cell (torch).

The benchmark's macro skeleton (Dong & Yang, ICLR 2020, arXiv 2001.00326, Figure 1; the
``TinyNetwork`` of D-X-Y/AutoDL-Projects ``lib/models/cell_infers/tiny_network.py``, its cell
``InferCell`` in ``cells.py`` and its ops in ``lib/models/cell_operations.py``), written here
from that description:

- stem: 3x3 convolution to C=16 channels (no bias) + BatchNorm;
- three stages of N=5 cells with C, 2C, 4C channels (16/32/64), separated by a residual
  reduction block: ReLU-conv3x3(stride 2)-BN, ReLU-conv3x3-BN, plus a shortcut of 2x2
  average pooling (stride 2) and a 1x1 convolution (no bias);
- head: BatchNorm, ReLU, global average pooling, linear classifier.

Inside a cell, node ``j`` is the sum over earlier nodes ``i`` of ``op_{j<-i}(node_i)``; the
cell's output is node 3. Ops keep the channel count and the spatial size: ``none`` gives
zeros, ``skip_connect`` the identity, ``nor_conv_kxk`` ReLU-conv(k, padding k//2, no
bias)-BN, ``avg_pool_3x3`` 3x3 average pooling (stride 1, padding 1, padding not counted).
A ``none`` edge contributes nothing, so it holds no module; a node all of whose inputs are
``none`` is zero, as in the reference.

State-dict names: ``stem.*``, ``cells.{index}.edges.{j}_{i}.*`` (``index`` counts cells and
reduction blocks together, 0..16), ``cells.{index}.conv_a|conv_b|shortcut.*``,
``lastact.*``, ``classifier.*``.
"""

from __future__ import annotations

import torch
from torch import nn

from .nasbench201 import EDGES, NUM_NODES, Nb201DNA, validate_nb201

CHANNELS = 16          # C of the benchmark
CELLS_PER_STAGE = 5    # N of the benchmark


def _relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


def make_op(name: str, channels: int) -> nn.Module | None:
    """The module of one edge's op at ``channels`` channels, stride 1 (None for ``none``)."""
    if name == "none":
        return None
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return _relu_conv_bn(channels, channels, 1, 1)
    if name == "nor_conv_3x3":
        return _relu_conv_bn(channels, channels, 3, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}")


class Nb201Cell(nn.Module):
    """One cell: four nodes, six edges, channels and spatial size kept."""

    def __init__(self, ops: tuple[str, ...], channels: int):
        super().__init__()
        self.edges = nn.ModuleDict()
        self.inputs: list[list[tuple[str, int]]] = [[] for _ in range(NUM_NODES)]
        for (j, i), name in zip(EDGES, ops):
            module = make_op(name, channels)
            if module is not None:
                key = f"{j}_{i}"
                self.edges[key] = module
                self.inputs[j].append((key, i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, NUM_NODES):
            terms = [self.edges[key](nodes[i]) for key, i in self.inputs[j]]
            node = terms[0] if terms else torch.zeros_like(x)
            for t in terms[1:]:
                node = node + t
            nodes.append(node)
        return nodes[-1]


class ResidualReduction(nn.Module):
    """The benchmark's reduction block: a ResNet basic block with stride 2 that doubles channels."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = _relu_conv_bn(c_in, c_out, 3, 2)
        self.conv_b = _relu_conv_bn(c_out, c_out, 3, 1)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2, padding=0),
                                      nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class Nb201Network(nn.Module):
    """Stem, 3 stages of ``cells_per_stage`` cells with reductions between, BN-ReLU-GAP-linear."""

    def __init__(self, dna: Nb201DNA, in_channels: int, num_classes: int, channels: int = CHANNELS,
                 cells_per_stage: int = CELLS_PER_STAGE):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        blocks: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                blocks.append(ResidualReduction(c, 2 * c))
                c *= 2
            blocks.extend(Nb201Cell(dna.ops, c) for _ in range(cells_per_stage))
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.cells:
            x = block(x)
        x = self.lastact(x).mean(dim=(2, 3))
        return self.classifier(x)


def build_nasbench201(dna: Nb201DNA, input_shape: tuple[int, int, int], num_classes: int, *,
                      channels: int = CHANNELS, cells_per_stage: int = CELLS_PER_STAGE) -> Nb201Network:
    """A fresh network of ``dna``'s cell for inputs of ``input_shape`` (C, H, W): the benchmark's
    skeleton (C=16, N=5) unless ``channels``/``cells_per_stage`` say otherwise. The DNA is
    validated first (DNAError)."""
    validate_nb201(dna, None)
    return Nb201Network(dna, int(input_shape[0]), int(num_classes), channels, cells_per_stage)

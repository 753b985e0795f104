"""The outer structure of a NASNet network and its size, without torch.

Which cells a network of ``N`` cells per stack and ``F`` filters has (:func:`outer_plan`), what
each cell reads (:func:`network_wiring`), where the auxiliary head sits
(:func:`aux_head_position`), and parameter counts that match :mod:`dna.build_nasnet` exactly
(a test builds and counts both). The genome itself is :mod:`dna.nasnet`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .nasnet import NUM_CELL_INPUTS, STEM_MULTIPLIER, NasnetDNA, validate_nasnet

@dataclass(frozen=True)
class CellSlot:
    """One cell of the network: which kind, and its filter count (channels per hidden state)."""

    reduction: bool
    filters: int


def outer_plan(cells_per_stack: int, filters: int) -> tuple[CellSlot, ...]:
    """The cell sequence: N normal (F), reduction (2F), N normal (2F), reduction (4F), N normal (4F).

    Raises ValueError unless ``cells_per_stack >= 1`` and ``filters >= 2`` (the factorized
    reduction splits the filters into two halves).
    """
    if isinstance(cells_per_stack, bool) or not isinstance(cells_per_stack, int) or cells_per_stack < 1:
        raise ValueError(f"nasnet: cells_per_stack must be an integer >= 1, got {cells_per_stack!r}")
    if isinstance(filters, bool) or not isinstance(filters, int) or filters < 2:
        raise ValueError(f"nasnet: filters must be an integer >= 2, got {filters!r}")
    plan: list[CellSlot] = []
    for stack in range(3):
        if stack:
            plan.append(CellSlot(True, filters * 2**stack))
        plan.extend(CellSlot(False, filters * 2**stack) for _ in range(cells_per_stack))
    return tuple(plan)


AUX_HEAD_POOL, AUX_HEAD_STRIDE, AUX_HEAD_PROJECTION, AUX_HEAD_CHANNELS = 5, 3, 128, 768


@dataclass(frozen=True)
class CellWiring:
    """How one cell of the network is wired: what its two inputs are and what it outputs.

    ``prev`` says how state 1 (h_{i-1}) is made: ``"stem"`` (the first cell: the stem's
    output itself, ``3F`` channels, untouched, as the reference's ``_reduce_prev_layer``
    does when there is no earlier cell), ``"factorized"`` (h_{i-1} is twice the size of h_i:
    ReLU, factorized reduction), ``"conv1x1"`` (ReLU, 1x1 conv, BN: only its channel count
    differs) or ``"identity"``. ``state_channels`` are the channels of states 0 and 1 as the
    ops see them; every combination state has ``slot.filters``. ``level`` counts the
    reductions before the cell (its inputs are at ``ceil(H / 2**level)``).
    """

    slot: CellSlot
    cur_channels: int
    prev_channels: int
    prev: str
    state_channels: tuple[int, int]
    out_channels: int
    level: int


def network_wiring(dna: NasnetDNA, cells_per_stack: int, filters: int) -> tuple[CellWiring, ...]:
    """The wiring of every cell of :func:`outer_plan`, in order (the reference's CIFAR network:
    ``_build_nasnet_base`` in tensorflow/models nasnet.py with the CIFAR stem, which is also
    ``_build_network_base`` in tensorflow/tpu amoeba_net/model_builder.py with a basic stem)."""
    stem = STEM_MULTIPLIER * filters
    cur, prev = (stem, 0), None          # (channels, level) of the last two outputs
    wiring = []
    for slot in outer_plan(cells_per_stack, filters):
        f = slot.filters
        if prev is None:
            how, state1 = "stem", cur[0]
        elif prev[1] != cur[1]:
            how, state1 = "factorized", f
        elif prev[0] != f:
            how, state1 = "conv1x1", f
        else:
            how, state1 = "identity", f
        cell = dna.reduction if slot.reduction else dna.normal
        out = f * len(cell.output_states())
        wiring.append(CellWiring(slot, cur[0], prev[0] if prev else cur[0], how, (f, state1), out, cur[1]))
        prev, cur = cur, (out, cur[1] + slot.reduction)
    return tuple(wiring)


def aux_head_position(cells_per_stack: int) -> int:
    """Index (in :func:`outer_plan`) of the cell whose output feeds the auxiliary head: the last
    normal cell of the middle stack, the input of the second reduction cell, as in the
    references (``aux_head_cell_idxes = [reduction_indices[1] - 1]``: tensorflow/models
    nasnet.py, tensorflow/tpu amoeba_net/model_builder.py)."""
    return 2 * cells_per_stack


def aux_head_pool(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(pool kernel, pooled size) of the auxiliary head on a ``height`` x ``width`` map: a 5x5
    average pool with stride 3 and no padding (the references), over the whole map where it is
    smaller than 5."""
    kh, kw = min(AUX_HEAD_POOL, height), min(AUX_HEAD_POOL, width)
    return (kh, kw), ((height - kh) // AUX_HEAD_STRIDE + 1, (width - kw) // AUX_HEAD_STRIDE + 1)


def op_parameter_count(op: str, filters: int, stride: int, in_channels: int | None = None) -> int:
    """Trainable parameters of one op from ``in_channels`` (default ``filters``) to ``filters``
    channels, as ``dna.build_nasnet.make_op`` builds it (convs have no bias; BN has 2 per channel)."""
    f = filters
    c = f if in_channels is None else in_channels
    adapt = c * f + 2 * f  # a 1x1 conv and BN to f channels
    if op == "identity":
        return 0 if stride == 1 and c == f else adapt  # ReLU, 1x1 conv with stride, BN
    if op in ("avg3x3", "max3x3"):
        return 0 if c == f else adapt  # pool, then 1x1 conv and BN when the channels differ
    if op in ("sep3x3", "sep5x5", "sep7x7"):
        k = int(op[3])
        return (k * k * c + c * f + 2 * f) + (k * k * f + f * f + 2 * f)  # twice: depthwise, pointwise, BN
    if op == "dil3x3":
        return 9 * c + c * f + 2 * f
    if op == "conv1x7_7x1":
        r = f // 4
        if r < 1:  # too few channels for the bottleneck (the reference's rule)
            return 7 * c * f + 2 * f + 7 * f * f + 2 * f
        return c * r + 2 * r + 2 * (7 * r * r + 2 * r) + r * f + 2 * f
    raise ValueError(f"unknown op {op!r}")


def nasnet_parameter_count(dna: NasnetDNA, input_channels: int, num_classes: int,
                           cells_per_stack: int, filters: int, *, aux_head: bool = False,
                           image_size: tuple[int, int] = (32, 32)) -> int:
    """Trainable parameters of the model ``dna.build_nasnet.build_nasnet`` makes, without torch.

    With ``aux_head`` the auxiliary head's are included; its last conv covers the pooled map,
    so its size depends on ``image_size`` (height, width), which nothing else does.
    """
    validate_nasnet(dna, bounds=None)
    stem = STEM_MULTIPLIER * filters
    total = 9 * input_channels * stem + 2 * stem
    wiring = network_wiring(dna, cells_per_stack, filters)
    for w in wiring:
        f = w.slot.filters
        cell = dna.reduction if w.slot.reduction else dna.normal
        total += w.cur_channels * f + 2 * f  # state 0: ReLU, 1x1 conv, BN
        if w.prev in ("factorized", "conv1x1"):  # both C*f + 2f
            total += w.prev_channels * f + 2 * f
        stride = 2 if w.slot.reduction else 1
        channels = list(w.state_channels) + [f] * len(cell.combinations)
        for c in cell.combinations:
            for state, op in ((c.input_a, c.op_a), (c.input_b, c.op_b)):
                total += op_parameter_count(op, f, stride if state < NUM_CELL_INPUTS else 1, channels[state])
        for s in cell.output_states():
            if (w.slot.reduction and s < NUM_CELL_INPUTS) or channels[s] != f:
                total += channels[s] * f + 2 * f  # factorized reduction, or 1x1 conv + BN
    total += wiring[-1].out_channels * num_classes + num_classes
    if aux_head:
        feeding = wiring[aux_head_position(cells_per_stack)]
        h, w_ = (math.ceil(d / 2 ** (feeding.level + feeding.slot.reduction)) for d in image_size)
        _, (ph, pw) = aux_head_pool(h, w_)
        p, c = AUX_HEAD_PROJECTION, AUX_HEAD_CHANNELS
        total += feeding.out_channels * p + 2 * p + p * c * ph * pw + 2 * c + c * num_classes + num_classes
    return total

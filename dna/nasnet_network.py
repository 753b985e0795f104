"""The outer structure of a NASNet network and its size, without torch.

Which cells a network of ``N`` cells per stack and ``F`` filters has (:func:`outer_plan`), what
each cell reads (:func:`network_wiring`), where the auxiliary head sits
(:func:`aux_head_position`), and parameter counts that match :mod:`dna.build_nasnet` exactly
(a test builds and counts both). The genome itself is :mod:`dna.nasnet`.

Two stems, as in the reference code (tensorflow/models ``research/slim/nets/nasnet/nasnet.py``:
``_cifar_stem`` and ``_imagenet_stem``; tensorflow/tpu ``amoeba_net/model_builder.py`` has the
same ImageNet stem):

- ``cifar``: a 3x3 stride-1 convolution to ``3 * F`` channels and BN; every cell then runs at
  the input's full size (the papers' CIFAR-10 networks);
- ``imagenet``: a 3x3 stride-2 convolution without padding to 32 channels and BN
  (``conv0``: NASNet-A mobile's ``int(32 * stem_multiplier)`` with multiplier 1, AmoebaNet's
  ``stem_reduction_size`` 32), then two *stem cells*: the DNA's reduction cell at ``F // 4``
  and then ``F // 2`` filters (the references' filter scaling ``1 / 2**2`` doubled per stem
  cell, truncated to an integer as they do), each halving the size. A 224-px image reaches
  the first normal cell at 28 px, the last stack at 7 px (NASNet-A mobile: N=4, F=44).

``auto`` picks by input size (:func:`choose_stem`): the ImageNet stem when both the height and
the width are above :data:`AUTO_IMAGENET_ABOVE` (64) pixels (and ``F >= 8``, which its first
cell needs), else the CIFAR stem; so the
built-in datasets (8 to 32 px) and every run capped at 64 px keep the CIFAR stem. The
auxiliary head is the same in both (the references' ``_build_aux_head``, "used for all models
across all datasets"), on the last normal cell of the middle stack; with the ImageNet stem it
sees a 14x14 map at 224 px instead of 112x112.
"""

from __future__ import annotations

from dataclasses import dataclass

from .nasnet import NUM_CELL_INPUTS, NUM_COMBINATIONS, STEM_MULTIPLIER, NasnetDNA, validate_nasnet

CIFAR, IMAGENET, AUTO = "cifar", "imagenet", "auto"
STEMS = (CIFAR, IMAGENET)
STEM_CHOICES = (CIFAR, IMAGENET, AUTO)
AUTO_IMAGENET_ABOVE = 64        # auto: the ImageNet stem when height and width are both above this
IMAGENET_STEM_CHANNELS = 32     # conv0 of the references' ImageNet stem
IMAGENET_STEM_CELLS = 2         # reduction cells in the ImageNet stem, at F // 4 and F // 2 filters
IMAGENET_STEM_MIN_FILTERS = 8   # the first stem cell's F // 4 filters must be >= 2 (factorized reduction)


def choose_stem(stem: str, input_shape: tuple[int, int, int], filters: int) -> str:
    """``"cifar"`` or ``"imagenet"``: ``stem`` itself, or for ``"auto"`` the ImageNet stem when
    the input's height and width (``input_shape`` is channels, height, width) are both above
    :data:`AUTO_IMAGENET_ABOVE` pixels and ``filters`` is at least
    :data:`IMAGENET_STEM_MIN_FILTERS` (else the CIFAR stem). ValueError (one line) for any
    other ``stem``."""
    if stem not in STEM_CHOICES:
        raise ValueError(f"nasnet: stem must be one of {', '.join(STEM_CHOICES)}, got {stem!r}"[:200])
    if stem != AUTO:
        return stem
    large = min(input_shape[1], input_shape[2]) > AUTO_IMAGENET_ABOVE
    return IMAGENET if large and filters >= IMAGENET_STEM_MIN_FILTERS else CIFAR


def check_stem(stem: str, filters: int, height: int, width: int) -> None:
    """ValueError (one line) unless ``stem`` (``cifar`` or ``imagenet``) can be built with
    ``filters`` for a ``height`` x ``width`` input: the ImageNet stem needs ``F >= 8`` and an
    image of at least 3x3 (its unpadded first convolution)."""
    if stem not in STEMS:
        raise ValueError(f"nasnet: stem must be cifar or imagenet here, got {stem!r}"[:200])
    if stem == IMAGENET:
        if filters < IMAGENET_STEM_MIN_FILTERS:
            raise ValueError(f"nasnet: the imagenet stem needs filters >= {IMAGENET_STEM_MIN_FILTERS} "
                             f"(its first cell has F // 4 >= 2), got {filters}")
        if min(height, width) < 3:
            raise ValueError(f"nasnet: the imagenet stem needs images of at least 3x3 pixels, got {height}x{width}")


def stem_channels(stem: str, filters: int) -> int:
    """Output channels of the stem's convolution: ``3 * F`` (CIFAR) or 32 (ImageNet)."""
    return IMAGENET_STEM_CHANNELS if stem == IMAGENET else STEM_MULTIPLIER * filters


def feature_size(stem: str, size: int, level: int) -> int:
    """The height (or width) of a map after the stem's convolution and ``level`` stride-2 steps
    (stem cells and reduction cells alike), for an input ``size`` pixels high: the ImageNet
    stem's convolution maps ``s`` to ``(s - 3) // 2 + 1``, each reduction ``s`` to ``ceil(s / 2)``."""
    s = (size - 3) // 2 + 1 if stem == IMAGENET else size
    for _ in range(level):
        s = -(-s // 2)
    return s


@dataclass(frozen=True)
class CellSlot:
    """One cell of the network: which kind, its filter count (channels per hidden state), and
    whether it is one of the ImageNet stem's cells (always a reduction cell)."""

    reduction: bool
    filters: int
    stem: bool = False


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


def network_plan(cells_per_stack: int, filters: int, stem: str = CIFAR) -> tuple[CellSlot, ...]:
    """Every cell after the stem's convolution, in order: with the ImageNet stem, its two
    reduction cells (``F // 4``, ``F // 2`` filters) and then :func:`outer_plan`; with the CIFAR
    stem, :func:`outer_plan` alone."""
    plan = outer_plan(cells_per_stack, filters)
    if stem == IMAGENET:
        if filters < IMAGENET_STEM_MIN_FILTERS:
            raise ValueError(f"nasnet: the imagenet stem needs filters >= {IMAGENET_STEM_MIN_FILTERS} "
                             f"(its first cell has F // 4 >= 2), got {filters}")
        scaled = [filters * 2**k // 2**IMAGENET_STEM_CELLS for k in range(IMAGENET_STEM_CELLS)]
        plan = tuple(CellSlot(True, f, stem=True) for f in scaled) + plan
    elif stem != CIFAR:
        raise ValueError(f"nasnet: stem must be cifar or imagenet here, got {stem!r}"[:200])
    return plan


AUX_HEAD_POOL, AUX_HEAD_STRIDE, AUX_HEAD_PROJECTION, AUX_HEAD_CHANNELS = 5, 3, 128, 768


@dataclass(frozen=True)
class CellWiring:
    """How one cell of the network is wired: what its two inputs are and what it outputs.

    ``prev`` says how state 1 (h_{i-1}) is made: ``"stem"`` (the first cell: the stem
    convolution's output itself, ``3F`` or 32 channels, untouched, as the reference's
    ``_reduce_prev_layer`` does when there is no earlier cell), ``"factorized"`` (h_{i-1} is twice the size of h_i:
    ReLU, factorized reduction), ``"conv1x1"`` (ReLU, 1x1 conv, BN: only its channel count
    differs) or ``"identity"``. ``state_channels`` are the channels of states 0 and 1 as the
    ops see them; every combination state has ``slot.filters``. ``level`` counts the
    stride-2 cells before the cell (its input is ``feature_size(stem, H, level)`` high).
    """

    slot: CellSlot
    cur_channels: int
    prev_channels: int
    prev: str
    state_channels: tuple[int, int]
    out_channels: int
    level: int


def network_wiring(dna: NasnetDNA, cells_per_stack: int, filters: int,
                   stem: str = CIFAR) -> tuple[CellWiring, ...]:
    """The wiring of every cell of :func:`network_plan`, in order (the references' networks:
    ``_build_nasnet_base`` in tensorflow/models nasnet.py, ``_build_network_base`` in
    tensorflow/tpu amoeba_net/model_builder.py, with ``stem`` ``"cifar"`` or ``"imagenet"``).
    With the ImageNet stem the first normal cell reads the second stem cell's output (h_i) and
    the first stem cell's (h_{i-1}, twice as large: factorized reduction), as the references'
    ``cell_outputs[-2]`` does."""
    cur, prev = (stem_channels(stem, filters), 0), None   # (channels, level) of the last two outputs
    wiring = []
    for slot in network_plan(cells_per_stack, filters, stem):
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


def aux_head_position(cells_per_stack: int, stem: str = CIFAR) -> int:
    """Index (in :func:`network_plan`) of the cell whose output feeds the auxiliary head: the
    last normal cell of the middle stack, the input of the second reduction cell, as in the
    references (``aux_head_cell_idxes = [reduction_indices[1] - 1]``: tensorflow/models
    nasnet.py, tensorflow/tpu amoeba_net/model_builder.py); the ImageNet stem's two cells
    come before it."""
    return 2 * cells_per_stack + (IMAGENET_STEM_CELLS if stem == IMAGENET else 0)


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
                           image_size: tuple[int, int] = (32, 32), stem: str = CIFAR) -> int:
    """Trainable parameters of the model ``dna.build_nasnet.build_nasnet`` makes, without torch.

    With ``aux_head`` the auxiliary head's are included; its last conv covers the pooled map,
    so its size depends on ``image_size`` (height, width), which nothing else does. ``stem``:
    ``"cifar"`` or ``"imagenet"`` (resolve ``"auto"`` with :func:`choose_stem` first).
    """
    validate_nasnet(dna, bounds=None)
    conv0 = stem_channels(stem, filters)
    total = 9 * input_channels * conv0 + 2 * conv0
    wiring = network_wiring(dna, cells_per_stack, filters, stem)
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
        feeding = wiring[aux_head_position(cells_per_stack, stem)]
        h, w_ = (feature_size(stem, d, feeding.level + feeding.slot.reduction) for d in image_size)
        _, (ph, pw) = aux_head_pool(h, w_)
        p, c = AUX_HEAD_PROJECTION, AUX_HEAD_CHANNELS
        total += feeding.out_channels * p + 2 * p + p * c * ph * pw + 2 * c + c * num_classes + num_classes
    return total


# Training memory, without torch. What one image's forward pass keeps for the backward pass,
# whatever the cells are: each cell's two input preparations (ReLU, 1x1 convolution, BN: three
# maps each, at the cell's input size), every op as the largest op keeps them (a separable
# convolution: ReLU, depthwise, pointwise and BN, twice: eight maps at the cell's output size),
# each combination's sum, and every state in the concatenated output.
MAPS_PER_PREPARATION = 3
MAPS_PER_OP = 8
FLOAT_BYTES = 4   # float32; bf16 autocast keeps less, so this is the upper side


def activation_elements(cells_per_stack: int, filters: int, stem: str, input_shape: tuple[int, int, int]) -> int:
    """Elements of the activations that training one image through a network of
    ``cells_per_stack`` cells per stack, ``filters`` filters and ``stem`` (``cifar`` or
    ``imagenet``) keeps for the backward pass, for any cells of the space (every op counted as
    a separable convolution and every state as concatenated): an estimate from above, made for
    ``evo init``'s memory check, not an exact count."""
    c, h, w = input_shape
    check_stem(stem, filters, h, w)
    conv0 = stem_channels(stem, filters)
    total = c * h * w + 2 * conv0 * feature_size(stem, h, 0) * feature_size(stem, w, 0)   # input, conv, BN
    level = 0
    for slot in network_plan(cells_per_stack, filters, stem):
        f = slot.filters
        inside = feature_size(stem, h, level) * feature_size(stem, w, level)
        level += slot.reduction
        out = feature_size(stem, h, level) * feature_size(stem, w, level)
        total += NUM_CELL_INPUTS * MAPS_PER_PREPARATION * f * inside
        total += NUM_COMBINATIONS * (2 * MAPS_PER_OP + 1) * f * out + (NUM_CELL_INPUTS + NUM_COMBINATIONS) * f * out
    return total


def training_bytes(cells_per_stack: int, filters: int, stem: str, input_shape: tuple[int, int, int],
                   batch_size: int) -> int:
    """Bytes of activations that a training step on ``batch_size`` images keeps
    (:func:`activation_elements` per image, in float32): the bulk of a NASNet child's training
    memory at image sizes above CIFAR's (weights, gradients and momentum are a few MiB)."""
    return batch_size * FLOAT_BYTES * activation_elements(cells_per_stack, filters, stem, input_shape)

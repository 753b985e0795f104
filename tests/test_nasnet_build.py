"""Building NASNet models (dna.build_nasnet): NASNet-A by hand arithmetic, shapes, random cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dna.build_nasnet import build_nasnet
from dna.genome import DNAError
from dna.nasnet import (Cell, Combination, nasnet_from_json, nasnet_parameter_count, random_nasnet)
from mutations.nasnet import mutate_nasnet

# NASNet-A (Zoph et al. 2018, Figure 4), written from the figure in this DNA's notation:
# state 0 = h_i (previous cell), state 1 = h_{i-1}; combination k makes state k + 2.
NASNET_A_JSON = """{
  "schema": 1, "kind": "nasnet", "learning_rate": 0.1, "mutation": "initial",
  "normal": {"combinations": [
    [0, "sep5x5", 1, "sep3x3"],
    [1, "sep5x5", 1, "sep3x3"],
    [0, "avg3x3", 1, "identity"],
    [1, "avg3x3", 1, "avg3x3"],
    [0, "sep3x3", 0, "identity"]]},
  "reduction": {"combinations": [
    [0, "sep5x5", 1, "sep7x7"],
    [0, "max3x3", 1, "sep7x7"],
    [0, "avg3x3", 1, "sep5x5"],
    [3, "identity", 2, "avg3x3"],
    [2, "sep3x3", 0, "max3x3"]]}
}"""


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These models are tiny: one thread is faster, and a busy 2-core machine makes
    multi-threaded kernels spin for seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _cell_output_shapes(model, x):
    shapes = []
    hooks = [c.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for c in model.cells]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def test_nasnet_a_parses_and_has_the_hand_computed_parameter_count():
    # NASNet-A's cells under the default output rule (no concat list): the arithmetic checks
    # the ops, the preprocessing and the first cell reading the stem as it is.
    dna = nasnet_from_json(NASNET_A_JSON)
    assert dna.normal.unused_states() == (2, 3, 4, 5, 6)   # output 5f
    assert dna.reduction.unused_states() == (4, 5, 6)      # output 3f
    model = build_nasnet(dna, (3, 32, 32), 10, cells_per_stack=2, filters=8)

    # By hand, from the op definitions: convs have no bias, BN has 2 parameters per channel.
    def sep(k, f, c=None):  # ReLU, depthwise k x k, pointwise 1x1 (c -> f), BN; then again f -> f
        c = f if c is None else c
        return (k * k * c + c * f + 2 * f) + (k * k * f + f * f + 2 * f)

    def conv1x1_bn(c_in, f):   # also the parameter count of a factorized reduction
        return c_in * f + 2 * f

    def normal_ops(f):    # sep5+sep3, sep5+sep3, avg+id, avg+avg, sep3+id
        return 2 * sep(5, f) + 3 * sep(3, f)

    def first_normal_ops(f, stem):  # state 1 is the stem's output (stem channels): every op on it adapts
        return (sep(5, f) + sep(3, f, stem) + sep(5, f, stem) + sep(3, f, stem)      # combinations 0, 1
                + conv1x1_bn(stem, f)                                                # identity from the stem
                + 2 * conv1x1_bn(stem, f)                                            # two avg pools from it
                + sep(3, f))                                                         # combination 4

    def reduction_ops(f):  # sep5+sep7, max+sep7, avg+sep5, id(stride 1)+avg, sep3+max
        return 2 * sep(5, f) + 2 * sep(7, f) + sep(3, f)

    stem = 3 * 3 * 3 * 24 + 2 * 24                                               # 3F = 24 channels
    cells = [
        conv1x1_bn(24, 8) + first_normal_ops(8, 24),                           # 24, stem as is -> 40 @32
        conv1x1_bn(40, 8) + conv1x1_bn(24, 8) + normal_ops(8),                 # 40,24 -> 40
        conv1x1_bn(40, 16) + conv1x1_bn(40, 16) + reduction_ops(16),           # 40,40 -> 48 @16
        conv1x1_bn(48, 16) + conv1x1_bn(40, 16) + normal_ops(16),              # prev reduced: 48,40 -> 80
        conv1x1_bn(80, 16) + conv1x1_bn(48, 16) + normal_ops(16),              # 80,48 -> 80
        conv1x1_bn(80, 32) + conv1x1_bn(80, 32) + reduction_ops(32),           # 80,80 -> 96 @8
        conv1x1_bn(96, 32) + conv1x1_bn(80, 32) + normal_ops(32),              # prev reduced: 96,80 -> 160
        conv1x1_bn(160, 32) + conv1x1_bn(96, 32) + normal_ops(32),             # 160,96 -> 160
    ]
    classifier = 160 * 10 + 10
    expected = stem + sum(cells) + classifier
    assert expected == 104_210  # the arithmetic above, evaluated once with pencil and paper
    assert _count(model) == expected
    assert nasnet_parameter_count(dna, 3, 10, 2, 8) == expected

    shapes = _cell_output_shapes(model, torch.randn(2, 3, 32, 32))
    assert shapes == [(40, 32, 32), (40, 32, 32), (48, 16, 16), (80, 16, 16), (80, 16, 16),
                      (96, 8, 8), (160, 8, 8), (160, 8, 8)]


def test_small_digits_images_end_at_two_by_two():
    dna = nasnet_from_json(NASNET_A_JSON)
    model = build_nasnet(dna, (1, 8, 8), 10, cells_per_stack=1, filters=4)
    shapes = _cell_output_shapes(model, torch.randn(3, 1, 8, 8))
    assert [s[1:] for s in shapes] == [(8, 8), (4, 4), (4, 4), (2, 2), (2, 2)]
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_an_unread_cell_input_is_concatenated_and_reduced_in_a_reduction_cell():
    reads_only_state_0 = Cell(tuple(Combination(0, "sep3x3", 0, "identity") for _ in range(5)))
    dna = random_nasnet(np.random.default_rng(0)).replace(normal=reads_only_state_0, reduction=reads_only_state_0)
    assert reads_only_state_0.unused_states() == (1, 2, 3, 4, 5, 6)
    model = build_nasnet(dna, (3, 9, 9), 5, cells_per_stack=1, filters=4)  # odd sizes: 9 -> 5 -> 3
    shapes = _cell_output_shapes(model, torch.randn(2, 3, 9, 9))
    assert shapes == [(24, 9, 9), (48, 5, 5), (48, 5, 5), (96, 3, 3), (96, 3, 3)]
    assert _count(model) == nasnet_parameter_count(dna, 3, 5, 1, 4)


def _train_step(model, x, y):
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(loss)


SETTINGS = [  # (input shape, N, F): the digits size and the CIFAR size
    ((1, 8, 8), 1, 4),
    ((3, 32, 32), 2, 6),
]


@pytest.mark.parametrize("input_shape,n,f", SETTINGS)
@settings(deadline=None, max_examples=15)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(0, 40))
def test_every_cell_reached_by_mutation_builds_and_trains(input_shape, n, f, seed, length):
    rng = np.random.default_rng(seed)
    dna = random_nasnet(rng)
    for _ in range(length):
        dna = mutate_nasnet(dna, rng)
    torch.manual_seed(seed % 1000)
    model = build_nasnet(dna, input_shape, 10, cells_per_stack=n, filters=f)
    assert _count(model) == nasnet_parameter_count(dna, input_shape[0], 10, n, f)
    x = torch.randn(2, *input_shape)
    _train_step(model, x, torch.tensor([1, 7]))
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 10)


def test_forward_has_no_data_dependent_control_flow():
    dna = random_nasnet(np.random.default_rng(1))
    model = build_nasnet(dna, (3, 16, 16), 10, cells_per_stack=1, filters=4).eval()
    traced = torch.fx.symbolic_trace(model)  # fails on Python control flow that depends on tensors
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


def test_bad_settings_and_bad_dna_give_one_line_errors():
    dna = random_nasnet(np.random.default_rng(2))
    for kwargs, message in [
        (dict(cells_per_stack=0), "cells_per_stack must be an integer >= 1"),
        (dict(filters=1), "filters must be an integer >= 2"),
        (dict(input_shape=(3, 32)), "input_shape must be three positive integers"),
        (dict(input_shape=(3, 0, 32)), "input_shape must be three positive integers"),
        (dict(num_classes=0), "num_classes must be an integer >= 1"),
    ]:
        args = dict(dna=dna, input_shape=(3, 8, 8), num_classes=10, cells_per_stack=1, filters=4) | kwargs
        with pytest.raises(ValueError, match=message):
            build_nasnet(**args)
    broken = dna.replace(normal=Cell(dna.normal.combinations[:3]))
    with pytest.raises(DNAError, match="normal cell has 3 combinations"):
        build_nasnet(broken, (3, 8, 8), 10, cells_per_stack=1, filters=4)

"""Building NASNet models (dna.build_nasnet): NASNet-A by hand arithmetic, shapes, random cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dna.build_nasnet import build_nasnet
from dna.genome import DNAError
from dna.nasnet import Cell, Combination, nasnet_from_json, random_nasnet
from dna.nasnet_network import nasnet_parameter_count
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


@pytest.mark.slow  # builds and trains 15 networks per shape (~8 s each on a loaded 2-core machine)
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


# ----- the references' op and cell details -----

def test_conv1x7_7x1_has_the_reference_bottleneck():
    from dna.build_nasnet import make_op
    from dna.nasnet_network import op_parameter_count

    # f = 16: ReLU, 1x1 to f/4 = 4, BN | ReLU, 1x7, BN | ReLU, 7x1, BN | ReLU, 1x1 back to 16, BN
    by_hand = (16 * 4 + 2 * 4) + (7 * 4 * 4 + 2 * 4) + (7 * 4 * 4 + 2 * 4) + (4 * 16 + 2 * 16)
    assert by_hand == 408  # the full-width 1x7 + 7x1 pair it replaces had 7*16*16*2 + 32 = 3,616
    op = make_op("conv1x7_7x1", 16, 2)
    assert _count(op) == op_parameter_count("conv1x7_7x1", 16, 2) == by_hand
    assert op(torch.randn(1, 16, 9, 9)).shape == (1, 16, 5, 5)
    # reading the stem (24 channels) in the first cell: only the first 1x1 grows
    assert _count(make_op("conv1x7_7x1", 16, 1, 24)) == op_parameter_count("conv1x7_7x1", 16, 1, 24) == by_hand + 8 * 4
    # f // 4 == 0: no bottleneck, as the reference (ReLU, 1x7, BN, ReLU, 7x1, BN)
    assert _count(make_op("conv1x7_7x1", 2, 1)) == op_parameter_count("conv1x7_7x1", 2, 1) == 7 * 2 * 2 * 2 + 2 * 2 * 2


def test_the_first_cell_reads_the_stem_as_it_is_and_published_cells_build_with_their_concat():
    from dna.published import PUBLISHED

    for name, p in PUBLISHED.items():
        model = build_nasnet(p.dna, (3, 9, 9), 5, cells_per_stack=1, filters=4)  # 9 -> 5 -> 3
        first = model.cells[0]
        assert isinstance(first.preprocess1, torch.nn.Identity)   # h_{i-1} of the first cell: the stem (12 channels)
        reads_stem = [m for k, (a, b) in enumerate(first.inputs) for m, s in ((first.ops[2 * k], a), (first.ops[2 * k + 1], b))
                      if s == 1]
        assert reads_stem
        for op in reads_stem:  # every op on it maps 12 channels to 4 (a pool through 1x1 conv + BN)
            first_conv = next(c for c in op.modules() if isinstance(c, torch.nn.Conv2d))
            assert first_conv.in_channels == 12
        n_out = [len(p.dna.normal.output_states()), len(p.dna.reduction.output_states())]
        shapes = _cell_output_shapes(model, torch.randn(2, 3, 9, 9))
        assert shapes == [(4 * n_out[0], 9, 9), (8 * n_out[1], 5, 5), (8 * n_out[0], 5, 5),
                          (16 * n_out[1], 3, 3), (16 * n_out[0], 3, 3)], name
        assert _count(model) == nasnet_parameter_count(p.dna, 3, 5, 1, 4), name


# ----- what final training uses: the auxiliary head and ScheduledDropPath -----

@pytest.mark.parametrize("input_shape,pooled", [((3, 32, 32), (4, 4)), ((1, 8, 8), (1, 1)), ((3, 9, 11), (1, 1))])
def test_the_aux_head_sits_before_the_second_reduction_and_only_trains(input_shape, pooled):
    from dna.build_nasnet import parameter_counts
    from dna.published import published

    dna = published("amoebanet-a")
    torch.manual_seed(0)
    with_aux = build_nasnet(dna, input_shape, 10, cells_per_stack=2, filters=8, aux_head=True)
    plain = build_nasnet(dna, input_shape, 10, cells_per_stack=2, filters=8)
    assert with_aux.aux_position == 4  # N normal, reduction, N normal: the last normal cell of the middle stack
    conv = [m for m in with_aux.aux_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert conv[0].in_channels == with_aux.cells[4].out_channels and conv[1].kernel_size == pooled
    body = {k: v.shape for k, v in with_aux.state_dict().items() if not k.startswith("aux_head.")}
    assert body == {k: v.shape for k, v in plain.state_dict().items()}  # final weights load without the head
    assert all(k.startswith("aux_head.") for k in set(with_aux.state_dict()) - set(plain.state_dict()))
    body_count, aux_count = parameter_counts(with_aux)
    h, w = input_shape[1:]
    assert body_count == _count(plain) == nasnet_parameter_count(dna, input_shape[0], 10, 2, 8)
    assert body_count + aux_count == nasnet_parameter_count(dna, input_shape[0], 10, 2, 8, aux_head=True,
                                                            image_size=(h, w))
    x, y = torch.randn(3, *input_shape), torch.tensor([0, 1, 2])
    with_aux.train()
    logits, aux_logits = with_aux(x)
    assert logits.shape == aux_logits.shape == (3, 10)
    (torch.nn.functional.cross_entropy(logits, y) + 0.4 * torch.nn.functional.cross_entropy(aux_logits, y)).backward()
    assert all(p.grad is not None for p in with_aux.parameters())
    with_aux.eval()
    with torch.no_grad():
        assert with_aux(x).shape == (3, 10)


def test_drop_path_drops_whole_examples_of_every_op_but_identity_and_only_in_training():
    from dna.build_nasnet import drop_path

    torch.manual_seed(0)
    out = drop_path(torch.ones(4000, 2, 3, 3), torch.tensor(0.25))
    per_example = out.flatten(1)
    assert ((per_example == 0).all(1) | (per_example == 1 / 0.75).all(1)).all()  # whole examples, rescaled
    assert 0.2 < (per_example[:, 0] == 0).float().mean().item() < 0.3              # 1000 +- 27 of 4000 expected

    dna = random_nasnet(np.random.default_rng(4))
    model = build_nasnet(dna, (3, 8, 8), 10, cells_per_stack=1, filters=4)
    keys = set(model.state_dict())
    x = torch.randn(4, 3, 8, 8)
    model.train()

    def run(p, seed):
        model.drop_path_prob = p
        torch.manual_seed(seed)
        with torch.no_grad():
            return model(x)

    assert model.drop_path_prob == 0.0
    torch.testing.assert_close(run(0.0, 1), run(0.0, 2))        # nothing random without drop path
    torch.testing.assert_close(run(0.5, 1), run(0.5, 1))        # seeded
    assert not torch.allclose(run(0.5, 1), run(0.5, 2))         # the masks differ
    model.eval()
    torch.testing.assert_close(run(0.5, 1), run(0.0, 2))        # eval never drops
    assert set(model.state_dict()) == keys                      # the probability is not a weight
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="drop_path_prob must be in"):
            model.drop_path_prob = bad

    only_identity = Cell(tuple(Combination(k + 1, "identity", k, "identity") for k in range(5)))
    model = build_nasnet(dna.replace(normal=only_identity, reduction=only_identity), (3, 8, 8), 10,
                         cells_per_stack=1, filters=4).train()
    torch.testing.assert_close(run(0.9, 1), run(0.0, 2))        # identity ops (strided ones too) never drop

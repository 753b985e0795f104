"""dna.build: models built from hand-made and random DNAs agree with the DNA's own arithmetic."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dna
from dna import DNA, DNAError, Edge, Vertex
from dna.build import EvoNet, build, param_count


def conv(eid: int, src: int, dst: int, channels: int, fh: int = 3, fw: int = 3, stride: int = 1) -> Edge:
    return Edge(eid, src, dst, "conv", filter_h=fh, filter_w=fw, channels=channels, stride=stride)


def ident(eid: int, src: int, dst: int) -> Edge:
    return Edge(eid, src, dst, "identity")


def make(vertices, edges, lr: float = 0.1) -> DNA:
    ids = [v.id for v in vertices] + [e.id for e in edges]
    return dna.validate(DNA(learning_rate=lr, vertices=tuple(vertices), edges=tuple(edges),
                            input_id=0, output_id=1, next_id=max(ids) + 1))


def conv_chain() -> DNA:
    """input -3x3/16/s1-> v3 -5x3/32/s2-> v4 -1x1/8/s4-> output(bn_relu)."""
    return make([Vertex(0, "linear"), Vertex(1, "bn_relu"), Vertex(3), Vertex(4)],
                [conv(2, 0, 3, 16), conv(5, 3, 4, 32, fh=5, fw=3, stride=2),
                 conv(6, 4, 1, 8, 1, 1, stride=4)])


def skip_net() -> DNA:
    """A small residual-ish net: edges of different spatial sizes and channel counts meet at v5 and 1."""
    return make(
        [Vertex(0, "linear"), Vertex(1, "linear"), Vertex(3), Vertex(5), Vertex(10, "linear")],
        [conv(2, 0, 3, 8), conv(4, 3, 5, 12, stride=2), ident(7, 0, 5), conv(11, 3, 10, 20, 1, 1),
         ident(12, 10, 5), conv(8, 5, 1, 6, 1, 3), ident(9, 3, 1)])


EXAMPLES = {"initial": dna.initial(), "conv_chain": conv_chain(), "skip_net": skip_net()}


def check_against_dna(genome: DNA, input_shape, num_classes: int = 10, batch: int = 3) -> None:
    """Forward/backward work; shapes, parameter count and tensor names agree with the DNA."""
    model = build(genome, input_shape, num_classes, generator=torch.Generator().manual_seed(0))
    assert param_count(model) == dna.count_parameters(genome, input_shape, num_classes)
    x = torch.randn(batch, *input_shape)
    acts = model.activations(x)
    expected = dna.infer_shapes(genome, input_shape)
    assert {vid: tuple(a.shape[1:]) for vid, a in acts.items()} == expected
    out = model(x)
    assert out.shape == (batch, num_classes)
    out.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    names = set(model.state_dict())
    want = {"classifier.weight", "classifier.bias"}
    want |= {f"edges.e{e.id}.weight" for e in genome.conv_edges}
    for v in genome.vertices:
        if v.kind == "bn_relu" and v.id != genome.input_id:
            want |= {f"vertices.v{v.id}.{t}" for t in
                     ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert names == want


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("input_shape", [(3, 32, 32), (1, 8, 8), (2, 7, 5)])
def test_examples_forward_backward_and_agree_with_dna(name, input_shape):
    check_against_dna(EXAMPLES[name], input_shape)


def test_initial_dna_is_pooling_then_linear():
    model = build(dna.initial(), (3, 32, 32), 10)
    assert set(model.state_dict()) == {"classifier.weight", "classifier.bias"}
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(model(x), model.classifier(x.mean(dim=(2, 3))))


def test_conv_chain_strides_use_same_padding():
    model = build(conv_chain(), (1, 8, 8), 5)
    acts = model.activations(torch.randn(2, 1, 8, 8))
    assert acts[3].shape == (2, 16, 8, 8)
    assert acts[4].shape == (2, 32, 4, 4)
    assert acts[1].shape == (2, 8, 1, 1)
    conv5 = model.edges["e5"]
    assert conv5.kernel_size == (5, 3) and conv5.stride == (2, 2) and conv5.padding == (2, 1)
    assert conv5.bias is None and conv5.in_channels == 16
    assert (acts[4] >= 0).all()  # bn_relu ends in a ReLU


def merge_dna(primary_channels: int, primary_stride: int, other_channels: int, other_stride: int) -> DNA:
    """Two 1x1 convs of the input meet at linear vertex 3: e2 (the primary) and e6 (via the
    pass-through vertex 5, since parallel edges are not allowed); 3 -> output."""
    return make([Vertex(0, "linear"), Vertex(1, "linear"), Vertex(3, "linear"), Vertex(5, "linear")],
                [conv(2, 0, 3, primary_channels, 1, 1, primary_stride), ident(4, 0, 5),
                 conv(6, 5, 3, other_channels, 1, 1, other_stride), ident(7, 3, 1)])


@pytest.mark.parametrize("size, primary, other, rows", [
    # (input H=W, (channels, stride) of the primary, of the other, source rows the nearest resize picks)
    (6, (3, 2), (5, 1), [0, 2, 4]),                 # shrink in space, truncate channels
    (6, (4, 1), (2, 2), [0, 0, 1, 1, 2, 2]),        # grow in space, zero-pad channels
    (5, (3, 2), (3, 1), [0, 1, 3]),                 # uneven shrink: floor(i * 5 / 3)
])
def test_non_primary_edge_is_resized_nearest_and_truncated_or_padded(size, primary, other, rows):
    (pc, ps), (oc, os_) = primary, other
    genome = merge_dna(pc, ps, oc, os_)
    model = build(genome, (2, size, size), 3)
    assert set(model.vertices) == set()  # linear vertices hold no BatchNorm
    w_other = torch.arange(oc * 2, dtype=torch.float32).reshape(oc, 2) + 1
    with torch.no_grad():
        model.edges["e2"].weight.zero_()                        # the primary contributes 0...
        model.edges["e6"].weight.copy_(w_other.reshape(oc, 2, 1, 1))
    x = torch.randn(2, 2, size, size)
    got = model.activations(x)[3]
    # ...so vertex 3 is exactly the other edge's output, resized to the primary's shape.
    other_out = torch.einsum("oi,nihw->nohw", w_other, x[:, :, ::os_, ::os_])
    idx = torch.tensor(rows)
    expected = other_out[:, :, idx][:, :, :, idx]
    if oc >= pc:
        expected = expected[:, :pc]
    else:
        expected = torch.cat([expected, torch.zeros(2, pc - oc, len(rows), len(rows))], dim=1)
    assert got.shape == (2, pc, -(-size // ps), -(-size // ps))
    torch.testing.assert_close(got, expected)

    # The primary edge's output is added unchanged.
    with torch.no_grad():
        model.edges["e6"].weight.zero_()
        model.edges["e2"].weight.fill_(1.0)
    primary_out = x[:, :, ::ps, ::ps].sum(1, keepdim=True).expand(-1, pc, -1, -1)
    torch.testing.assert_close(model.activations(x)[3], primary_out)


def test_identity_from_input_is_padded_into_a_wider_vertex():
    genome = make([Vertex(0, "linear"), Vertex(1, "linear"), Vertex(3, "linear"), Vertex(5, "linear")],
                  [conv(2, 0, 3, 6, 1, 1), ident(4, 0, 5), ident(6, 5, 3), ident(7, 3, 1)])
    model = build(genome, (3, 4, 4), 2)
    with torch.no_grad():
        model.edges["e2"].weight.zero_()
    x = torch.randn(1, 3, 4, 4)
    got = model.activations(x)[3]
    torch.testing.assert_close(got, torch.cat([x, torch.zeros(1, 3, 4, 4)], dim=1))


def test_channels_last_and_bf16_autocast_on_cpu():
    genome = skip_net()
    model = build(genome, (3, 16, 16), 10, generator=torch.Generator().manual_seed(1))
    x = torch.randn(4, 3, 16, 16)
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    xc = x.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(xc)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.1)
    out.float().square().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    fp32 = model(xc)
    assert fp32.dtype == torch.float32
    torch.testing.assert_close(fp32, ref, rtol=1e-4, atol=1e-5)


def test_generator_makes_builds_reproducible():
    a = build(skip_net(), (3, 8, 8), 10, generator=torch.Generator().manual_seed(7)).state_dict()
    b = build(skip_net(), (3, 8, 8), 10, generator=torch.Generator().manual_seed(7)).state_dict()
    c = build(skip_net(), (3, 8, 8), 10, generator=torch.Generator().manual_seed(8)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["edges.e2.weight"], c["edges.e2.weight"])


def test_bad_input_gives_one_line_errors():
    broken = dna.initial().replace(edges=(ident(2, 1, 0),))  # edge into the input
    with pytest.raises(DNAError) as err:
        build(broken, (3, 8, 8), 10)
    assert "\n" not in str(err.value)
    too_wide = make([Vertex(0, "linear"), Vertex(1, "linear")], [conv(2, 0, 1, 200)])
    with pytest.raises(DNAError, match="channels"):
        build(too_wide, (3, 8, 8), 10, bounds=dna.Bounds(max_channels=64))
    assert isinstance(build(too_wide, (3, 8, 8), 10), EvoNet)
    for shape in [(3, 8), (3, 0, 8), (3, 8.0, 8), "abc", None]:
        with pytest.raises(ValueError, match="input_shape"):
            build(dna.initial(), shape, 10)
    for classes in [0, -1, 2.5, True]:
        with pytest.raises(ValueError, match="num_classes"):
            build(dna.initial(), (3, 8, 8), classes)


def test_forward_releases_intermediates_but_activations_keeps_all():
    model = build(skip_net(), (3, 8, 8), 4)
    acts = model._run(torch.randn(1, 3, 8, 8), keep_all=False)
    assert acts[model._output_slot] is not None
    assert sum(a is not None for a in acts) == 1
    assert len(model.activations(torch.randn(1, 3, 8, 8))) == len(skip_net().vertices)


def test_import_dna_does_not_import_torch():
    code = "import sys, dna; assert 'torch' not in sys.modules and 'dna.build' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----- random DNAs -----

def random_dna(seed: int, hidden: int) -> DNA:
    """A random valid DAG: input 0, output 1, hidden vertices 2..hidden+1; edges get later ids."""
    rng = np.random.default_rng(seed)
    order = [0] + list(range(2, hidden + 2)) + [1]
    vertices = [Vertex(0, "linear"), Vertex(1, str(rng.choice(["linear", "bn_relu"])))]
    vertices += [Vertex(v, str(rng.choice(["linear", "bn_relu"]))) for v in order[1:-1]]
    pairs = set()
    for i, v in enumerate(order[1:], start=1):
        for src in rng.choice(order[:i], size=rng.integers(1, min(i, 3) + 1), replace=False):
            pairs.add((int(src), v))
    for i, v in enumerate(order[:-1]):
        if not any(s == v for s, _ in pairs):
            pairs.add((v, int(rng.choice(order[i + 1:]))))
    edges = []
    next_id = hidden + 2
    for src, dst in sorted(pairs, key=lambda p: rng.random()):  # random ids -> random primaries
        if rng.random() < 0.6:
            edges.append(conv(next_id, src, dst, int(rng.integers(1, 9)), int(rng.choice([1, 3, 5])),
                              int(rng.choice([1, 3])), int(rng.choice([1, 2, 4]))))
        else:
            edges.append(ident(next_id, src, dst))
        next_id += 1
    return dna.validate(DNA(0.1, tuple(vertices), tuple(edges), 0, 1, next_id))


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), hidden=st.integers(0, 6),
       input_shape=st.sampled_from([(3, 9, 9), (1, 8, 6), (2, 5, 7)]))
def test_random_dnas_agree_with_dna(seed, hidden, input_shape):
    check_against_dna(random_dna(seed, hidden), input_shape, num_classes=4, batch=2)


# ----- CUDA -----

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype")
def test_cuda_channels_last_bf16_and_cuda_graph_capture():
    torch.manual_seed(0)
    genome = skip_net()
    cpu_model = build(genome, (3, 16, 16), 10, generator=torch.Generator().manual_seed(3))
    x_cpu = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        ref = cpu_model(x_cpu)
    model = cpu_model.cuda().to(memory_format=torch.channels_last)
    x = x_cpu.cuda().to(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(model(x).cpu(), ref, rtol=1e-3, atol=1e-3)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            torch.testing.assert_close(model(x).float().cpu(), ref, rtol=0.1, atol=0.1)

    def step(inp: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(inp).float().square().mean()
        loss.backward()
        return loss.detach()

    torch.cuda.synchronize()
    try:
        torch.cuda.set_sync_debug_mode("error")    # any host sync in forward/backward raises
        step(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")

    # Capture a training forward+backward in a CUDA graph (warm up on a side stream first, as
    # the PyTorch docs do): the forward must not sync or branch on data.
    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model.zero_grad(set_to_none=True)
            step(static_x)
    torch.cuda.current_stream().wait_stream(side)
    model.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step(static_x)
    new_x = torch.randn_like(static_x)
    static_x.copy_(new_x)
    graph.replay()
    torch.cuda.synchronize()
    graph_loss = static_loss.clone()
    graph_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    eager_loss = step(new_x)
    torch.testing.assert_close(graph_loss, eager_loss, rtol=1e-3, atol=1e-5)
    for g, p in zip(graph_grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-2, atol=1e-4)

"""dna.inherit: children made by the registered mutations keep exactly the tensors they should.

Children are made with ``mutations.REGISTRY``; where a test needs a particular place in the graph
it calls the registered mutation's ``apply`` with that candidate (an edge id).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

import dna
import mutations
from dna import DNA, Edge, Vertex
from dna.build import build, param_count
from dna.inherit import InheritReport, inherit

INPUT = (3, 12, 12)
CLASSES = 5
BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def parent_dna() -> DNA:
    """input -conv e2 (8)-> v3 -conv e4 (16, stride 2)-> v5 -identity e6-> output (linear);
    plus a skip v3 -identity e7-> output (resized to the output's shape)."""
    return dna.validate(DNA(
        learning_rate=0.1,
        vertices=(Vertex(0, "linear"), Vertex(1, "linear"), Vertex(3), Vertex(5)),
        edges=(Edge(2, 0, 3, "conv", 3, 3, 8, 1), Edge(4, 3, 5, "conv", 3, 3, 16, 2),
               Edge(6, 5, 1, "identity"), Edge(7, 3, 1, "identity")),
        input_id=0, output_id=1, next_id=8))


def trained(genome: DNA, seed: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A model after a few SGD steps (BN statistics moved too), and its state as a store would
    give it back: through safetensors bytes."""
    model = build(genome, INPUT, CLASSES, generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(3):
        x = torch.randn(8, *INPUT, generator=gen)
        y = torch.randint(0, CLASSES, (8,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    state = load_safetensors(save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()}))
    return model, state


def child_of(genome: DNA, seed: int = 99) -> torch.nn.Module:
    return build(genome, INPUT, CLASSES, generator=torch.Generator().manual_seed(seed))


def apply(name: str, parent: DNA, candidate) -> DNA:
    child = mutations.REGISTRY[f"large_scale/{name}"].apply(parent, candidate, np.random.default_rng(0), dna.DEFAULT_BOUNDS)
    return dna.validate(child.replace(mutation=name))


def new_ids(parent: DNA, child: DNA) -> tuple[list[int], list[int]]:
    """(new vertex ids, new edge ids) of the child."""
    old = {v.id for v in parent.vertices} | {e.id for e in parent.edges}
    return ([v.id for v in child.vertices if v.id not in old], [e.id for e in child.edges if e.id not in old])


def check_consistent(report: InheritReport, parent_state, child_model) -> None:
    """Counts add up; inherited tensors hold the parent's values."""
    state = child_model.state_dict()
    assert report.tensors_inherited + report.tensors_fresh == len(state)
    assert report.params_inherited + report.params_fresh == param_count(child_model)
    assert report.tensors_fresh == len(report.fresh_keys)
    assert 0.0 <= report.fraction <= 1.0
    for name, value in state.items():
        if name not in report.fresh_keys:
            assert torch.equal(value, parent_state[name].to(value.dtype)), name


@pytest.mark.parametrize("name", ["identity", "alter_learning_rate"])
def test_same_architecture_inherits_everything_and_computes_the_same(name):
    parent = parent_dna()
    parent_model, state = trained(parent)
    child = mutations.REGISTRY[f"large_scale/{name}"](parent, np.random.default_rng(1))
    assert child is not None and child.mutation == name
    child_model = child_of(child)
    report = inherit(state, parent, child, child_model)
    assert report.tensors_fresh == 0 and report.fresh_keys == ()
    assert report.tensors_inherited == len(child_model.state_dict())
    assert report.params_fresh == 0 and report.fraction == 1.0
    check_consistent(report, state, child_model)
    x = torch.randn(4, *INPUT)
    assert torch.equal(parent_model.eval()(x), child_model.eval()(x))


def test_inserted_convolution_is_the_only_fresh_part():
    parent = parent_dna()
    _, state = trained(parent)
    child = apply("insert_convolution", parent, 6)     # before identity v5 -> output
    (w,), (c,) = new_ids(parent, child)
    assert child.vertex(w).kind == "bn_relu" and child.edge(c).is_conv
    child_model = child_of(child)
    report = inherit(state, parent, child, child_model)
    assert set(report.fresh_keys) == {f"edges.e{c}.weight"} | {f"vertices.v{w}.{t}" for t in BN_TENSORS}
    fresh_params = param_count(child_model.edges[f"e{c}"]) + param_count(child_model.vertices[f"v{w}"])
    assert report.params_fresh == fresh_params
    assert report.params_inherited == param_count(child_model) - fresh_params
    check_consistent(report, state, child_model)


def test_convolution_inserted_after_the_input_also_refreshes_what_it_reshapes():
    parent = parent_dna()
    _, state = trained(parent)
    child = apply("insert_convolution", parent, 2)     # input -> w -> (e2) -> v3
    (w,), (c,) = new_ids(parent, child)
    child_model = child_of(child)
    assert child_model.edges["e2"].in_channels != INPUT[0]   # e2 now reads w, not the image
    report = inherit(state, parent, child, child_model)
    assert set(report.fresh_keys) == ({f"edges.e{c}.weight", "edges.e2.weight"}
                                      | {f"vertices.v{w}.{t}" for t in BN_TENSORS})
    check_consistent(report, state, child_model)


def test_reset_weights_inherits_nothing():
    parent = parent_dna()
    _, state = trained(parent)
    child = mutations.REGISTRY["large_scale/reset_weights"](parent, np.random.default_rng(0))
    child_model = child_of(child)
    before = {k: v.clone() for k, v in child_model.state_dict().items()}
    report = inherit(state, parent, child, child_model)
    assert report.tensors_inherited == 0 and report.params_inherited == 0 and report.fraction == 0.0
    assert report.tensors_fresh == len(before)
    assert all(torch.equal(v, before[k]) for k, v in child_model.state_dict().items())


def test_channel_change_refreshes_the_conv_and_what_depends_on_its_shape():
    parent = parent_dna()
    _, state = trained(parent)
    child = apply("alter_channels", parent, 2)           # e2: input -> v3, 8 channels
    assert child.edge(2).channels != 8
    child_model = child_of(child)
    report = inherit(state, parent, child, child_model)
    # v3 takes e2's channels, so its BatchNorm and the conv reading v3 (e4) change shape. v5
    # keeps e4's 16 channels (the skip e7 is resized to the output's), so nothing past v5 changes. v3's
    # num_batches_tracked is a scalar whose shape does not depend on e2: it is inherited.
    assert set(report.fresh_keys) == {"edges.e2.weight", "edges.e4.weight"} | {
        f"vertices.v3.{t}" for t in ("weight", "bias", "running_mean", "running_var")}
    check_consistent(report, state, child_model)

    child = apply("alter_channels", parent, 4)           # e4 -> v5 -> output: the classifier too
    child_model = child_of(child)
    report = inherit(state, parent, child, child_model)
    assert set(report.fresh_keys) == {"edges.e4.weight", "classifier.weight"} | {
        f"vertices.v5.{t}" for t in ("weight", "bias", "running_mean", "running_var")}
    check_consistent(report, state, child_model)


def test_untrusted_parent_state_is_filtered_cast_or_ignored():
    parent = parent_dna()
    _, state = trained(parent)
    child_model = child_of(parent)
    hostile: dict = dict(state)
    hostile["edges.e2.weight"] = state["edges.e2.weight"].double()           # cast, inherited
    hostile["vertices.v3.num_batches_tracked"] = torch.tensor(3.0)            # cast, inherited
    hostile["edges.e4.weight"] = state["edges.e4.weight"][:, :4]              # wrong shape: fresh
    hostile["vertices.v5.weight"] = torch.full((16,), float("nan"))          # non-finite: fresh
    hostile["vertices.v5.bias"] = [0.0] * 16                                  # not a tensor: fresh
    hostile["vertices.v3.bias"] = torch.zeros(8, dtype=torch.complex64)       # complex: fresh
    del hostile["classifier.bias"]                                            # missing: fresh
    hostile["edges.e999.weight"] = torch.zeros(1)                             # unexpected: ignored
    hostile["junk"] = "not a tensor"
    hostile[5] = torch.zeros(1)                                               # not even a string key
    report = inherit(hostile, parent, parent, child_model)
    assert set(report.fresh_keys) == {"edges.e4.weight", "vertices.v5.weight", "vertices.v5.bias",
                                      "vertices.v3.bias", "classifier.bias"}
    got = child_model.state_dict()
    assert got["edges.e2.weight"].dtype == torch.float32
    torch.testing.assert_close(got["edges.e2.weight"], state["edges.e2.weight"])
    assert got["vertices.v3.num_batches_tracked"].item() == 3
    assert torch.isfinite(got["vertices.v5.weight"]).all()
    check_consistent(report, {**state, "vertices.v3.num_batches_tracked": torch.tensor(3)}, child_model)


def test_tensors_of_parts_the_parent_dna_does_not_have_are_not_taken():
    parent = parent_dna()
    _, state = trained(parent)
    child = apply("insert_identity", parent, 6)                 # new bn_relu vertex w (16 channels)
    (w,), _ = new_ids(parent, child)
    child_model = child_of(child)
    # A stray tensor of the right name and shape that the parent's DNA cannot own.
    stray = {**state, **{f"vertices.v{w}.{t}": child_model.state_dict()[f"vertices.v{w}.{t}"] + 1
                         for t in BN_TENSORS}}
    report = inherit(stray, parent, child, child_model)
    assert set(report.fresh_keys) == {f"vertices.v{w}.{t}" for t in BN_TENSORS}


def test_caller_errors_are_one_line():
    parent = parent_dna()
    with pytest.raises(TypeError, match="parent_state must be a mapping"):
        inherit([("edges.e2.weight", torch.zeros(1))], parent, parent, child_of(parent))
    with pytest.raises(ValueError, match="different architecture"):
        inherit({}, parent, dna.initial(), child_of(parent))


def test_report_to_dict_is_json_ready():
    parent = parent_dna()
    _, state = trained(parent)
    d = inherit(state, parent, parent, child_of(parent)).to_dict()
    assert d["fraction"] == 1.0 and d["tensors_fresh"] == 0 and "fresh_keys" not in d


# ----- every registered mutation, on random parents -----

@settings(deadline=None, max_examples=12)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 8))
def test_every_registered_mutation_inherits_consistently(seed, steps):
    rng = np.random.default_rng(seed)
    parent = mutations.random_dna(rng, steps=steps)
    parent_model = build(parent, INPUT, CLASSES, generator=torch.Generator().manual_seed(seed % 1000))
    state = parent_model.state_dict()
    for name, mutation in sorted(mutations.REGISTRY.items()):
        if mutation.space != "large_scale":
            continue
        child = mutation(parent, rng)
        if child is None:
            continue
        child_model = child_of(child)
        report = inherit(state, parent, child, child_model)
        check_consistent(report, state, child_model)
        vertices, edges = new_ids(parent, child)
        new_owners = {f"vertices.v{v}" for v in vertices} | {f"edges.e{e}" for e in edges}
        owned_by_new = {k for k in child_model.state_dict() if k.rsplit(".", 1)[0] in new_owners}
        assert owned_by_new <= set(report.fresh_keys), name
        if name in ("identity", "alter_learning_rate"):
            assert report.fraction == 1.0 and report.tensors_fresh == 0, name
        elif name == "reset_weights":
            assert report.tensors_inherited == 0, name
        elif name == "insert_identity":                 # no shape changes anywhere
            assert set(report.fresh_keys) == owned_by_new, name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_parent_state_into_a_cuda_channels_last_child():
    parent = parent_dna()
    parent_model, state = trained(parent)
    child_model = child_of(parent).cuda().to(memory_format=torch.channels_last)
    report = inherit(state, parent, parent, child_model)
    assert report.fraction == 1.0
    x = torch.randn(4, *INPUT)
    got = child_model.eval()(x.cuda().to(memory_format=torch.channels_last)).cpu()
    torch.testing.assert_close(got, parent_model.eval()(x), rtol=1e-3, atol=1e-3)

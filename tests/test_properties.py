"""Long random mutation chains from the paper's initial DNA: every DNA on the way is valid,
round-trips through JSON exactly, and builds into a model that runs forward and backward."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dna
import mutations
from dna import Bounds

CHAIN_LENGTH = 300
# Small enough that building and running 300 models stays CI-sized on two CPU cores.
BUILD_BOUNDS = Bounds(max_vertices=16, max_edges=28, max_channels=16, max_filter_size=3, max_stride=4)
INPUT_SHAPES = ((3, 32, 32), (1, 8, 8))
NUM_CLASSES = 10
BATCH = 2


def chain(seed: int, bounds: Bounds, length: int = CHAIN_LENGTH) -> list[dna.DNA]:
    """dna.initial() followed by ``length`` mutations drawn with a generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    dnas = [dna.initial()]
    for _ in range(length):
        dnas.append(mutations.mutate(dnas[-1], rng, bounds))
    return dnas


@pytest.mark.parametrize("bounds", [dna.DEFAULT_BOUNDS, BUILD_BOUNDS], ids=["default", "small"])
@settings(deadline=None, max_examples=8)
@given(seed=st.integers(0, 2**63 - 1))
def test_mutation_chains_stay_valid_and_round_trip(bounds, seed):
    dnas = chain(seed, bounds)
    for d in dnas:
        assert dna.validate(d, bounds) is d
        text = d.to_json()
        assert dna.from_json(text, bounds) == d
        assert dna.from_json(text, bounds).to_json() == text
    used = {d.mutation for d in dnas[1:]}
    assert {"insert_convolution", "alter_channels", "add_skip"} <= used  # the chain really explores


def _check_model(model, d: dna.DNA, input_shape, run: bool) -> None:
    import torch

    names = set(model.state_dict())
    assert {f"edges.e{e.id}.weight" for e in d.conv_edges} <= names
    bn = [v.id for v in d.vertices if v.kind == "bn_relu" and v.id != d.input_id]
    assert {f"vertices.v{v}.weight" for v in bn} <= names
    assert {"classifier.weight", "classifier.bias"} <= names
    if not run:
        return
    x = torch.randn(BATCH, *input_shape)
    model.train()
    out = model(x)
    assert out.shape == (BATCH, NUM_CLASSES)
    out.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        acts = model.activations(x)
    expected = dna.infer_shapes(d, input_shape)
    assert {v: tuple(a.shape[1:]) for v, a in acts.items()} == expected


@pytest.mark.slow  # builds and trains 3 x 300 networks (~70 s on a loaded 2-core machine)
@settings(deadline=None, max_examples=3)
@given(seed=st.integers(0, 2**63 - 1))
def test_every_dna_on_a_chain_builds_and_runs_forward_and_backward(seed):
    """Every DNA along a 300-mutation chain builds and runs forward and backward on both shapes."""
    import torch

    from dna.build import build

    torch.manual_seed(0)
    dnas = chain(seed, BUILD_BOUNDS)
    for i, d in enumerate(dnas):
        for shape in INPUT_SHAPES:
            model = build(d, shape, NUM_CLASSES, bounds=BUILD_BOUNDS)
            _check_model(model, d, shape, True)

"""NASNet models on CUDA with the project's trainer: the step is captured in a CUDA graph
(bf16, channels_last), matches eager training, and learns digits. Skipped without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dna.build_nasnet import build_nasnet
from dna.nasnet import OPS, Cell, Combination, random_nasnet
from evo.config import TrainSettings
from evo.data.datasets import load_dataset
from evo.train.training import accuracy, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def every_op_dna():
    """Both cells use all eight ops, on cell inputs (stride 2 in the reduction cell) and on
    inner states; state 1 is left unread, so it is concatenated (and reduced) too."""
    ops = list(OPS)
    combos = (Combination(0, ops[0], 0, ops[1]), Combination(2, ops[2], 0, ops[3]),
              Combination(3, ops[4], 0, ops[5]), Combination(4, ops[6], 0, ops[7]),
              Combination(5, "sep3x3", 2, "identity"))
    cell = Cell(combos)
    assert cell.unused_states() == (1, 6)
    return random_nasnet(np.random.default_rng(0)).replace(normal=cell, reduction=cell)


def _model(dna, seed=0):
    torch.manual_seed(seed)
    return build_nasnet(dna, (1, 8, 8), 10, cells_per_stack=1, filters=8)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "cuda")


@pytest.fixture
def deterministic_cudnn():
    """fp32 convolutions pick non-deterministic cuDNN kernels: two eager runs then differ
    by ~1e-2 in loss within 10 steps. With deterministic kernels any gap is the graph's."""
    before = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    yield
    torch.backends.cudnn.deterministic = before


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_captured_step_matches_eager(digits, deterministic_cudnn, precision):
    runs = []
    for graphs in (False, True):
        model = _model(every_op_dna())
        result = train(model, digits, TrainSettings(steps=120, precision=precision, cuda_graphs=graphs),
                       learning_rate=0.05, seed=1, device="cuda", record_losses=True)
        runs.append(result)
    eager, graphed = runs
    assert graphed.used_cuda_graph and graphed.graph_fallback_reason is None, graphed.graph_fallback_reason
    e, g = np.array(eager.losses), np.array(graphed.losses)
    assert np.isfinite(e).all() and np.abs(e - g).max() < 1e-5
    assert e[-20:].mean() < 0.5 * e[:20].mean()


def test_random_cells_capture_and_learn_digits(digits):
    rng = np.random.default_rng(3)
    for i in range(3):
        model = _model(random_nasnet(rng), seed=i)
        result = train(model, digits, TrainSettings(steps=400), learning_rate=0.05, seed=i, device="cuda")
        assert result.used_cuda_graph and result.precision == "bf16" and not result.diverged, result
        assert accuracy(model, digits.val_x, digits.val_y, digits, 1000) > 0.8

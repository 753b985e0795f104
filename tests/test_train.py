"""evo.train.training (and evo.train.batches, evo.train.sgd, evo.train.cuda_graph): the trainer learns, is deterministic,
detects divergence, augments on the device; on CUDA the captured graph matches eager."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from evo.train import cuda_graph
from evo.train.batches import EpochSampler, crop_flip
from evo.config import TrainSettings
from evo.data.base import CIFAR_AUGMENT, NO_AUGMENT, HostDataset
from evo.data.datasets import load_dataset
from evo.data.device import to_device
from evo.train.sgd import MomentumSGD
from evo.train.training import DIVERGENCE_CHECK_EVERY, TrainResult, accuracy, resolve_precision, train

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)")


def small_cnn(in_channels: int = 1, classes: int = 10, seed: int = 0) -> nn.Module:
    """Conv-BN-ReLU x2, global pooling, linear; initialised from its own generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Tiny nets train fastest on one thread, and two OpenMP threads on a busy 2-core machine
    can be 30x slower than one; results are deterministic for a fixed thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "cpu")


def fake_images(n_train: int, shape=(3, 32, 32), classes: int = 10, augment=CIFAR_AUGMENT, seed: int = 0) -> HostDataset:
    """Random uint8 images whose label is readable from the mean brightness (learnable)."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, classes, n)
        x = rng.integers(0, 64, size=(n,) + shape).astype(np.int64) + (y * (190 // classes))[:, None, None, None]
        return x.astype(np.uint8), y.astype(np.int64)

    (trx, tr_y), (vx, vy), (tx, ty) = split(n_train), split(200), split(200)
    return HostDataset("fake", classes, augment, trx, tr_y, vx, vy, tx, ty)


# --- augmentation and batches ---------------------------------------------------------

def test_crop_flip_geometry():
    x = torch.arange(2 * 3 * 6 * 5, dtype=torch.float32).view(2, 3, 6, 5) + 1
    centre = torch.tensor([[2, 2], [2, 2]])
    assert torch.equal(crop_flip(x, centre, None, 2), x)                        # centred crop = identity
    flips = torch.tensor([True, False])
    out = crop_flip(x, centre, flips, 2)
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    assert torch.equal(crop_flip(x, None, flips, 0)[0], x[0].flip(-1))          # flip alone
    corner = crop_flip(x, torch.tensor([[0, 0], [4, 1]]), None, 2)
    assert out.shape == corner.shape == x.shape and corner.dtype == x.dtype
    assert torch.equal(corner[0, :, :2, :], torch.zeros(3, 2, 5))
    assert torch.equal(corner[0, :, 2:, 2:], x[0, :, :4, :3])                 # shifted down-right
    assert torch.equal(corner[1, :, :4, 1:], x[1, :, 2:, :4]) and torch.equal(corner[1, :, 4:, :], torch.zeros(3, 2, 5))
    assert crop_flip(x, None, None, 0) is x


@settings(deadline=None, max_examples=40)
@given(b=st.integers(1, 4), c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
       padding=st.integers(0, 3), flip=st.booleans(), seed=st.integers(0, 2**16))
def test_crop_flip_matches_per_image_slicing(b, c, h, w, padding, flip, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=gen)
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=gen)
    flips = torch.randint(0, 2, (b,), generator=gen).bool() if flip else None
    out = crop_flip(x, offsets, flips, padding)
    padded = nn.functional.pad(x, (padding,) * 4)
    for i in range(b):
        dy, dx = offsets[i].tolist()
        expected = padded[i, :, dy:dy + h, dx:dx + w]
        if flips is not None and flips[i]:
            expected = expected.flip(-1)
        assert torch.equal(out[i], expected)


def test_sampler_epochs_are_permutations_and_augmentation_changes_images():
    data = to_device(fake_images(130), "cpu")
    g = torch.Generator().manual_seed(3)
    plain = EpochSampler(data, 10, NO_AUGMENT, torch.Generator().manual_seed(3))
    aug = EpochSampler(data, 10, CIFAR_AUGMENT, g)
    assert aug.steps_per_epoch == 13
    plain.new_epoch()
    aug.new_epoch()
    seen = torch.cat([plain.order[i] for i in range(13)])
    assert sorted(seen.tolist()) == list(range(130))
    changed = 0
    for _ in range(13):
        xp, yp = plain.next_batch()
        xa, ya = aug.next_batch()
        assert xa.shape == xp.shape == (10, 3, 32, 32) and xa.dtype == torch.float32 and ya.dtype == torch.int64
        assert torch.equal(yp, ya)      # same generator seed, same order: augmentation only moves pixels
        changed += int((xa != xp).flatten(1).any(1).sum())
    assert changed > 100                # nearly every image is cropped off-centre or flipped
    assert int(aug.cursor) == 13
    first = aug.order.clone()
    aug.new_epoch()
    assert int(aug.cursor) == 0 and not torch.equal(first, aug.order)


def test_sampler_drops_the_remainder_and_rejects_huge_batches():
    data = to_device(fake_images(25), "cpu")
    s = EpochSampler(data, 10, NO_AUGMENT, torch.Generator().manual_seed(0))
    s.new_epoch()
    assert s.steps_per_epoch == 2 and len(set(s.order.flatten().tolist())) == 20
    with pytest.raises(ValueError, match="larger than the 25 training images"):
        EpochSampler(data, 26, NO_AUGMENT, torch.Generator())


def test_momentum_sgd_matches_torch_sgd():
    a, b = small_cnn(seed=1), small_cnn(seed=1)
    ours = MomentumSGD(list(a.parameters()), lr=0.1, momentum=0.9, weight_decay=1e-4)
    theirs = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        x = torch.randn(8, 1, 8, 8, generator=gen)
        y = torch.randint(0, 10, (8,), generator=gen)
        grads = torch.autograd.grad(nn.functional.cross_entropy(a(x), y), list(a.parameters()))
        ours.step(grads)
        theirs.zero_grad()
        nn.functional.cross_entropy(b(x), y).backward()
        theirs.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


# --- training on CPU ------------------------------------------------------------------

@pytest.mark.slow  # trains to an accuracy (6-9 s per seed on a loaded 2-core machine)
@pytest.mark.parametrize("seed", [0, 1])
def test_learns_digits(digits, seed):
    model = small_cnn(seed=seed)
    assert accuracy(model, digits.val_x, digits.val_y, digits, 1000) < 0.3
    result = train(model, digits, TrainSettings(steps=400), learning_rate=0.05, seed=seed, device="cpu")
    assert result.steps == 400 and result.images == 400 * 50 and not result.diverged
    assert result.precision == "fp32" and not result.used_cuda_graph and result.graph_fallback_reason is None
    assert math.isfinite(result.final_loss) and result.final_loss < 0.5
    assert accuracy(model, digits.val_x, digits.val_y, digits, 1000) > 0.9


def test_same_seed_same_weights_other_seed_other_weights(digits):
    settings = TrainSettings(steps=60)
    base = small_cnn()
    runs = []
    for seed in (7, 7, 8):
        model = copy.deepcopy(base)
        result = train(model, digits, settings, learning_rate=0.05, seed=seed, device="cpu", record_losses=True)
        runs.append((model.state_dict(), result.losses))
    (w1, l1), (w2, l2), (w3, l3) = runs
    assert l1 == l2 and len(l1) == 60 and l1 != l3
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)


def test_huge_learning_rate_diverges_and_stops_early(digits):
    model = small_cnn()
    steps = 3 * DIVERGENCE_CHECK_EVERY
    result = train(model, digits, TrainSettings(steps=steps), learning_rate=1e6, seed=0, device="cpu")
    assert result.diverged and result.steps == DIVERGENCE_CHECK_EVERY
    assert not math.isfinite(result.final_loss) and result.to_dict()["final_loss"] is None


def test_progress_losses_and_zero_steps(digits):
    calls = []
    result = train(small_cnn(), digits, TrainSettings(steps=45), learning_rate=0.01, seed=0, device="cpu",
                   progress=lambda s, n: calls.append((s, n)), progress_every=20, record_losses=True)
    assert calls == [(20, 45), (40, 45), (45, 45)]
    assert len(result.losses) == 45 and all(math.isfinite(v) for v in result.losses)
    assert result.final_loss == pytest.approx(float(np.mean(result.losses[-45:])), rel=1e-6)
    assert isinstance(result, TrainResult) and set(result.to_dict()) >= {"steps", "seconds", "precision"}
    empty = train(small_cnn(), digits, TrainSettings(steps=0), learning_rate=0.1, seed=0, device="cpu")
    assert empty.steps == 0 and math.isnan(empty.final_loss) and not empty.diverged


def test_unused_parameters_and_bf16_on_cpu(digits):
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_cnn()
            self.spare = nn.Linear(3, 3)      # gets no gradient: must not break the step

        def forward(self, x):
            return self.net(x)

    model = WithSpare()
    spare = model.spare.weight.detach().clone()
    result = train(model, digits, TrainSettings(steps=30, precision="bf16"), learning_rate=0.05, seed=0, device="cpu")
    assert result.precision == "bf16" and not result.diverged
    after = model.spare.weight.detach()
    assert torch.all(after.abs() < spare.abs()) and torch.allclose(after, spare, rtol=1e-2)  # weight decay only


def test_accuracy_counts_correct_and_restores_mode(digits):
    model = small_cnn()
    model.train()
    acc = accuracy(model, digits.test_x, digits.test_y, digits, 7)
    assert model.training and 0.0 <= acc <= 1.0
    model.eval()
    with torch.no_grad():
        expected = (model(digits.normalize(digits.test_x)).argmax(1) == digits.test_y).float().mean().item()
    assert acc == pytest.approx(expected) and not model.training


def test_bad_arguments_are_one_line_errors(digits):
    for lr in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="learning rate"):
            train(small_cnn(), digits, TrainSettings(steps=1), learning_rate=lr, seed=0, device="cpu")
    with pytest.raises(ValueError, match="larger than the 1078 training images"):
        train(small_cnn(), digits, TrainSettings(steps=1, batch_size=2000), learning_rate=0.1, seed=0, device="cpu")
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda") == "bf16" and resolve_precision("auto", torch.device("cuda", 0)) == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="^accuracy: batch size must be >= 1, got 0$"):
        accuracy(small_cnn(), digits.val_x, digits.val_y, digits, 0)
    with pytest.raises(ValueError, match="^accuracy: need as many labels as images"):
        accuracy(small_cnn(), digits.val_x, digits.val_y[:-1], digits, 10)


# --- CUDA -----------------------------------------------------------------------------

def _cuda_run(data, precision: str, graphs: bool, steps: int = 300, model=None, seed: int = 5):
    model = model if model is not None else small_cnn(in_channels=data.input_shape[0], seed=2)
    settings = TrainSettings(steps=steps, precision=precision, cuda_graphs=graphs)
    result = train(model, data, settings, learning_rate=0.02, seed=seed, device="cuda", record_losses=True)
    return model, result


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("precision, tolerance", [("fp32", 5e-3), ("bf16", 5e-2)])
def test_graph_matches_eager_on_cuda(precision, tolerance):
    data = to_device(fake_images(1000), "cuda")        # crop + flip inside the captured step
    eager_model, eager = _cuda_run(data, precision, graphs=False)
    graph_model, graphed = _cuda_run(data, precision, graphs=True)
    assert graphed.used_cuda_graph and graphed.graph_fallback_reason is None, graphed.graph_fallback_reason
    assert not eager.used_cuda_graph and eager.precision == graphed.precision == precision
    e, g = np.array(eager.losses), np.array(graphed.losses)
    assert e.shape == g.shape == (300,) and np.isfinite(e).all() and np.isfinite(g).all()
    # Same batches, same update; only kernel-level rounding differs, and SGD amplifies it
    # slowly, so the early trajectory must agree closely and the end roughly.
    assert np.abs(e[:100] - g[:100]).max() < tolerance, np.abs(e[:100] - g[:100]).max()
    assert abs(e[-20:].mean() - g[-20:].mean()) < 0.1 * e[-20:].mean() + tolerance
    assert e[-20:].mean() < 0.5 * e[:20].mean()        # it actually learned
    for name, tensor in graph_model.state_dict().items():
        assert tensor.is_contiguous(), name            # channels_last undone: safetensors-ready
    for model in (eager_model, graph_model):
        assert accuracy(model, data.val_x, data.val_y, data, 1000) > 0.5


@pytest.mark.gpu
@gpu
def test_capture_failure_falls_back_to_eager_and_is_counted():
    class HostSync(nn.Module):
        """Reads a value on the host mid-forward: legal eagerly, impossible inside a CUDA graph."""

        def __init__(self):
            super().__init__()
            self.net = small_cnn(in_channels=3)

        def forward(self, x):
            scale = 1.0 if float(x.abs().max()) > 0 else 0.5
            return self.net(x) * scale

    data = to_device(fake_images(500), "cuda")
    before = cuda_graph.graph_fallback_count()
    model, result = _cuda_run(data, "fp32", graphs=True, steps=60, model=HostSync())
    assert cuda_graph.graph_fallback_count() == before + 1
    assert not result.used_cuda_graph and result.graph_fallback_reason
    assert "\n" not in result.graph_fallback_reason and "captur" in result.graph_fallback_reason
    assert result.steps == 60 and len(result.losses) == 60 and not result.diverged
    # The same model trains normally afterwards and graphs still work for the next child.
    _, after = _cuda_run(data, "fp32", graphs=True, steps=30)
    assert after.used_cuda_graph and cuda_graph.graph_fallback_count() == before + 1


@pytest.mark.gpu
@gpu
def test_cuda_digits_learns_with_graph_and_auto_precision():
    data = load_dataset("digits", "cuda")
    model = small_cnn(seed=0)
    result = train(model, data, TrainSettings(steps=400), learning_rate=0.05, seed=0, device="cuda")
    assert result.used_cuda_graph and result.precision == "bf16" and not result.diverged
    assert accuracy(model, data.val_x, data.val_y, data, 1000) > 0.9

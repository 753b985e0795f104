"""Train one child network for a fixed number of steps, and measure its accuracy.

Paper semantics (Real et al. 2017): SGD with momentum, L2 weight decay, cross-entropy,
batch 50, a fixed number of steps, the learning rate from the DNA. The whole data path is
on the device (``evo.train.batches``); the learning rate is a device tensor (``evo.train.sgd``).

On CUDA the step runs in bf16 autocast with channels_last when the precision resolves to
bf16, with ``cudnn.benchmark`` off (each child is a new architecture, trained briefly), and
after ``WARMUP_STEPS`` eager steps the whole step - batch sampling, augmentation, forward,
loss, backward, update - is captured in one CUDA graph and replayed (``evo.train.cuda_graph``).
If capture fails, training continues eagerly and the reason is returned.

Measured on one H100 (torch 2.11, a 16/32/64-channel 3-conv net, CIFAR-sized images,
crop+flip): batch 50, bf16: eager 14k img/s, graph 149k img/s; batch 256, bf16: eager
63k, graph 457k img/s; a 10-step child costs about 30 ms in all (capture included).

Randomness comes from one ``torch.Generator`` on the device seeded with ``seed`` (never the
global RNG): on CPU, the same model, data, settings, seed and thread count give the same
weights. On CUDA a replayed graph draws exactly the batches an eager run would.
The loss stays on the device; the host reads it only every ``DIVERGENCE_CHECK_EVERY`` steps
(one flag) and at the end. Training stops early once the loss is non-finite: the weights
are then NaN and further steps cannot change the outcome.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dna import portable

from evo.train import cuda_graph
from evo.train.batches import EpochSampler
from evo.train.settings import PRECISIONS, TrainSettings
from evo.data.base import NO_AUGMENT
from evo.data.device import DeviceDataset
from evo.train.sgd import MomentumSGD

WARMUP_STEPS = 3             # eager steps before capture (PyTorch's recipe uses a few)
DIVERGENCE_CHECK_EVERY = 200  # steps between the host's looks at the non-finite flag
FINAL_LOSS_WINDOW = 50        # final_loss is the mean training loss of the last steps

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainResult:
    """What one call of :func:`train` did.

    ``steps``/``images``: steps and images actually trained (fewer than asked only when
    the loss diverged). ``final_loss``: mean training loss of the last
    ``FINAL_LOSS_WINDOW`` steps (NaN when no step ran). ``diverged``: some step's loss was
    non-finite. ``graph_fallback_reason``: why CUDA-graph capture failed, when it was tried
    and failed (None otherwise). ``precision``: ``fp32`` or ``bf16`` as resolved.
    ``losses``: every step's loss when asked for with ``record_losses``, else empty.
    """

    steps: int
    images: int
    seconds: float
    final_loss: float
    diverged: bool
    used_cuda_graph: bool
    graph_fallback_reason: str | None
    precision: str
    losses: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: a non-finite ``final_loss`` becomes None; ``losses`` is left out."""
        d = asdict(self)
        del d["losses"]
        if not math.isfinite(self.final_loss):
            d["final_loss"] = None
        return d


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16``: ``auto`` means bf16 on CUDA and fp32 elsewhere; ValueError for
    any other precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} ({', '.join(PRECISIONS)})")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def train(model: torch.nn.Module, data: DeviceDataset, settings: TrainSettings, *,
          learning_rate: float, seed: int, device: torch.device | str,
          progress: Progress | None = None, progress_every: int = 100,
          record_losses: bool = False) -> TrainResult:
    """Train ``model`` in place on ``data``'s training split for ``settings.steps`` steps.

    The model is moved to ``device`` (where ``data`` must live) and left in train mode with
    contiguous weights (ready for ``state_dict`` and safetensors). ``progress(step, steps)``
    is called every ``progress_every`` steps and at the end, without syncing the device.
    Raises ValueError (one line) for a learning rate that is not a finite number >= 0, a
    batch larger than the training split, or data on another kind of device.
    """
    device = concrete_device(device)
    if data.device.type != device.type:
        raise ValueError(f"train: data {data.name} is on {data.device}, not on {device}")
    if progress_every < 1:
        raise ValueError(f"train: progress_every must be >= 1, got {progress_every}")
    if not (math.isfinite(learning_rate) and learning_rate >= 0):
        raise ValueError(f"train: learning rate must be a finite number >= 0, got {learning_rate!r}")
    start = time.perf_counter()
    precision = resolve_precision(settings.precision, device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = False
    channels_last = on_cuda and precision == "bf16"
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()

    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    sampler = EpochSampler(data, settings.batch_size, data.augment if settings.augment else NO_AUGMENT,
                           generator)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = MomentumSGD(params, lr=learning_rate, momentum=settings.momentum,
                            weight_decay=settings.weight_decay)
    step = TrainingStep(model, sampler, optimizer, settings.steps, precision, channels_last)

    steps, graph, fallback = 0, None, None
    try_graph = on_cuda and settings.cuda_graphs and settings.steps > WARMUP_STEPS + 1
    while steps < settings.steps:
        if steps % sampler.steps_per_epoch == 0:
            sampler.new_epoch()
        if try_graph and steps == WARMUP_STEPS:
            try_graph = False
            graph, fallback = cuda_graph.capture(step)   # records only: runs nothing
        if graph is not None:
            graph.replay()
        elif try_graph:
            cuda_graph.warm_up(step)
        else:
            step()
        steps += 1
        if progress is not None and (steps % progress_every == 0 or steps == settings.steps):
            progress(steps, settings.steps)
        if steps % DIVERGENCE_CHECK_EVERY == 0 and bool(step.nonfinite.item()):
            break

    losses = step.losses[:steps].float().cpu()
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    window = losses[-FINAL_LOSS_WINDOW:]
    final_loss = float(window.mean()) if steps else math.nan
    return TrainResult(
        steps=steps,
        images=steps * settings.batch_size,
        seconds=time.perf_counter() - start,
        final_loss=final_loss,
        diverged=bool(step.nonfinite.item()),
        used_cuda_graph=graph is not None,
        graph_fallback_reason=fallback,
        precision=precision,
        losses=tuple(losses.tolist()) if record_losses else (),
    )


class TrainingStep:
    """One SGD step as device work only: batch, forward, loss, gradients, update, bookkeeping.

    The search trainer uses it as it is; the final-training protocol (``evo.train.final``)
    adds ``label_smoothing``, an auxiliary head's loss (a model that returns ``(logits,
    aux_logits)`` in training mode; ``aux_weight`` > 0 weighs it) and ``grad_clip`` (the
    global gradient norm is clipped to it, on the device). Every step writes its loss into
    ``losses[step_index]`` and adds its correctly classified training images to ``correct``,
    without a host sync, so the step can be captured in a CUDA graph.
    """

    def __init__(self, model: torch.nn.Module, sampler: EpochSampler, optimizer: MomentumSGD,
                 total_steps: int, precision: str, channels_last: bool, *, label_smoothing: float = 0.0,
                 aux_weight: float = 0.0, grad_clip: float = 0.0) -> None:
        device = sampler.data.device
        self.model, self.sampler, self.optimizer = model, sampler, optimizer
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16,
                             enabled=precision == "bf16", cache_enabled=False)
        self.channels_last = channels_last
        self.label_smoothing = float(label_smoothing)
        self.aux_weight = float(aux_weight)
        self.grad_clip = float(grad_clip)
        self.losses = torch.zeros(max(total_steps, 1), dtype=torch.float32, device=device)
        self.nonfinite = torch.zeros(1, dtype=torch.bool, device=device)
        self.step_index = torch.zeros(1, dtype=torch.long, device=device)
        self.correct = torch.zeros(1, dtype=torch.long, device=device)

    def __call__(self) -> None:
        x, y = self.sampler.next_batch()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(**self.autocast):
            out = self.model(x)
        logits, aux = out if isinstance(out, tuple) else (out, None)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        if aux is not None and self.aux_weight > 0:
            loss = loss + self.aux_weight * F.cross_entropy(aux.float(), y, label_smoothing=self.label_smoothing)
        params = self.optimizer.params
        grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True) if params else ()
        if self.grad_clip > 0 and grads:
            grads = clip_global_norm(list(grads), self.grad_clip)
        self.optimizer.step(grads)
        with torch.no_grad():
            value = loss.detach().view(1)
            self.losses.index_copy_(0, self.step_index, value)
            self.nonfinite.logical_or_(~torch.isfinite(value))
            self.step_index.add_(1)
            self.correct.add_((logits.detach().argmax(dim=1) == y).sum())


def clip_global_norm(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """``grads`` scaled so that their global L2 norm is at most ``max_norm`` (as
    ``torch.nn.utils.clip_grad_norm_`` does), computed on the device without a host sync."""
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return list(torch._foreach_mul(grads, coef))


def accuracy(model: torch.nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, data: DeviceDataset,
             batch_size: int, *, precision: str = "auto") -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on uint8 images ``x_uint8`` with labels ``y``.

    ``dna.portable.accuracy`` (what an export reports) of the model behind ``data``'s
    normalisation: in eval mode, under ``torch.inference_mode``, in batches of
    ``batch_size``, at ``precision`` (resolved for the images' device); the device is synced
    once. The model's train/eval mode is restored afterwards. ValueError (one line) for no
    images, images and labels that differ in number, or a batch size below 1.
    """
    bf16 = resolve_precision(precision, x_uint8.device) == "bf16"
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device_type=x_uint8.device.type, dtype=torch.bfloat16, enabled=bf16):
            return portable.accuracy(_OnPixels(model, data), x_uint8, y, batch_size)
    except portable.ExportError as exc:
        raise ValueError(f"accuracy: {exc}") from None
    finally:
        model.train(was_training)


class _OnPixels(torch.nn.Module):
    """``net`` behind ``data``'s normalisation: takes uint8 pixel values, as an export does."""

    def __init__(self, net: torch.nn.Module, data: DeviceDataset) -> None:
        super().__init__()
        self.net, self.data = net, data

    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return self.net(self.data.normalize(x_uint8))


def concrete_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device``, a CUDA one with its index (the current device's when none is given)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device

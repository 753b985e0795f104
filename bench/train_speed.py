"""``python -m bench train_speed``: training img/s of the fixed evolved architectures, evo's
trainer against a naive eager PyTorch loop, and the fixed cost of starting a child.

Data: CIFAR-shaped random uint8 images (3x32x32, 10 random labels; 45,000 in ``full``), made
here from a seeded generator, nothing downloaded. Every measurement trains a freshly built
model (same seed, same initial weights) for one epoch of the training split.

Measured per architecture and batch size, interleaved A B C D E in each repetition so that
drifting clocks and neighbours hit every method alike (median of the repetitions):

- A ``evo``: ``evo.train.training.train`` as a worker runs it (precision ``auto``: bf16 + channels_last
  + the step captured in a CUDA graph on CUDA; fp32 on CPU), no augmentation.
- B ``naive``: the loop a typical user writes (see :func:`naive_train`): fp32, eager,
  ``torch.optim.SGD`` (momentum 0.9, weight decay 1e-4), data in host memory as normalised
  float32, each step indexes a batch on the CPU and copies it to the device. Same model, same
  batch size, same learning rate, same number of steps, no augmentation. To be fair to it,
  it never syncs on the loss inside the loop and uses no DataLoader worker processes.
- C ``evo fp32``: A in fp32 (still graph-captured on CUDA): separates graphs from bf16.
- D ``evo +aug``: A with random crop + flip on the device (the CIFAR run's real setting).
- E ``short``: A for ``WARMUP_STEPS + 2`` steps, for the fixed cost below.

Fixed cost per child = build time + (time of E) - (E's steps x the marginal time per step),
where the marginal time per step is (A - E) / (steps of A - steps of E) (medians): what
starting a child costs beyond its steady-state steps (model build and move, eager warm-up
steps, the CUDA-graph capture, sampler set-up). It is reported relative to A's training time,
warm (medians) and cold: build + A's time - A's steps x the marginal time per step, for the
very first run of each architecture in the process (its first cuDNN/cuBLAS calls for those
shapes). Before any of this, the process is warmed up once on a net that is none of these.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import dna as dna_lib
import mutations

from ._archs import ARCH_NAMES, describe, load_arch
from ._report import BenchError, device_kind, markdown_table, say, write_report

CLASSES = 10


@dataclass(frozen=True)
class SpeedSettings:
    """What one train_speed run measures."""

    images: int                      # training images (one epoch = images // batch steps)
    image_shape: tuple[int, int, int]
    batch_sizes: tuple[int, ...]
    archs: tuple[str, ...]
    reps: int
    seed: int = 0


MODES = {
    "full": SpeedSettings(images=45_000, image_shape=(3, 32, 32), batch_sizes=(50, 256),
                          archs=ARCH_NAMES, reps=3),
    "small": SpeedSettings(images=320, image_shape=(3, 16, 16), batch_sizes=(16,),
                           archs=("small",), reps=3),
}


def sync(device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def make_data(settings: SpeedSettings, device: str):
    """(DeviceDataset on ``device``, host float32 normalised images, host int64 labels)."""
    import torch

    from evo.data.base import CIFAR_AUGMENT, HostDataset
    from evo.data.device import to_device

    rng = np.random.default_rng(settings.seed)
    n_val = max(CLASSES, settings.images // 45)
    x = rng.integers(0, 256, size=(settings.images + 2 * n_val,) + settings.image_shape, dtype=np.uint8)
    y = rng.integers(0, CLASSES, size=settings.images + 2 * n_val).astype(np.int64)
    n = settings.images
    host = HostDataset("fakecifar", CLASSES, CIFAR_AUGMENT, x[:n], y[:n], x[n:n + n_val], y[n:n + n_val],
                       x[n + n_val:], y[n + n_val:])
    data = to_device(host, device)
    # The naive loop's copy: normalised once up front, as a user's transform would.
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x_host = (torch.from_numpy(host.train_x).float() - mean) / std
    return data, x_host.contiguous(), torch.from_numpy(host.train_y)


def build_model(dna, input_shape, device):
    """A fresh model of ``dna`` on ``device`` (seeded: same weights every time) and its build time."""
    import torch

    from dna.build import build

    sync(device)
    t = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build(dna, input_shape, CLASSES)
    model = model.to(device)
    sync(device)
    return model, time.perf_counter() - t


def naive_train(model, x_host, y_host, *, steps: int, batch_size: int, learning_rate: float,
                device: str, seed: int = 0) -> float:
    """Seconds to train ``model`` for ``steps`` steps the way a typical user loop does.

    fp32, eager, ``torch.optim.SGD(momentum=0.9, weight_decay=1e-4)``; a CPU ``randperm`` per
    epoch; each step indexes the batch from host tensors (``x_host[idx]``), copies it with
    ``.to(device)``, runs forward, cross-entropy, ``zero_grad``, ``backward`` and ``step``.
    The loss is summed on the device and read once at the end (the only sync).
    """
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9, weight_decay=1e-4)
    n = int(y_host.shape[0])
    per_epoch = n // batch_size
    total = torch.zeros((), device=device)
    sync(device)
    t = time.perf_counter()
    perm = None
    for step in range(steps):
        k = step % per_epoch
        if k == 0:
            perm = torch.randperm(n, generator=g)
        idx = perm[k * batch_size:(k + 1) * batch_size]
        xb, yb = x_host[idx].to(device), y_host[idx].to(device)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
    final = float(total.item())
    seconds = time.perf_counter() - t
    if not np.isfinite(final):
        raise BenchError("naive loop: the loss diverged; the benchmark's learning rate is too high")
    return seconds


def evo_train(model, data, *, steps: int, batch_size: int, learning_rate: float, device: str,
              precision: str = "auto", augment: bool = False) -> dict[str, Any]:
    """Run ``evo.train.training.train`` as a worker would; returns its result as a dict (seconds, graph...)."""
    from evo.config import TrainSettings
    from evo.train.training import train

    settings = TrainSettings(steps=steps, batch_size=batch_size, augment=augment, precision=precision)
    result = train(model, data, settings, learning_rate=learning_rate, seed=0, device=device)
    if result.steps != steps:
        raise BenchError(f"evo trainer stopped after {result.steps} of {steps} steps (loss diverged)")
    return result.to_dict()


def measure(settings: SpeedSettings, device: str) -> list[dict[str, Any]]:
    """Every (architecture, batch size) row of the table; see the module docstring."""
    from evo.train.training import WARMUP_STEPS

    data, x_host, y_host = make_data(settings, device)
    shape = settings.image_shape
    short_steps = WARMUP_STEPS + 2
    # Warm the process up once (library handles, allocator), as a long-lived worker is, on a
    # net that is none of the measured ones, so each architecture's first run stays cold.
    warm = mutations.REGISTRY["large_scale/insert_convolution"](dna_lib.initial(), np.random.default_rng(0), dna_lib.DEFAULT_BOUNDS)
    m, _ = build_model(warm, shape, device)
    evo_train(m, data, steps=short_steps, batch_size=settings.batch_sizes[0], learning_rate=0.01, device=device)
    m, _ = build_model(warm, shape, device)
    naive_train(m, x_host, y_host, steps=short_steps, batch_size=settings.batch_sizes[0],
                learning_rate=0.01, device=device)
    rows = []
    for name in settings.archs:
        dna = load_arch(name)
        for batch in settings.batch_sizes:
            steps = settings.images // batch
            if steps <= short_steps:
                raise BenchError(f"{settings.images} images at batch {batch} give only {steps} steps; "
                                 f"need more than {short_steps}")
            # name -> (trainer, its keyword arguments); one of each per repetition, in this order
            variants = {
                "evo": (evo_train, dict(data=data, steps=steps)),
                "naive": (naive_train, dict(x_host=x_host, y_host=y_host, steps=steps)),
                "evo_fp32": (evo_train, dict(data=data, steps=steps, precision="fp32")),
                "evo_aug": (evo_train, dict(data=data, steps=steps, augment=True)),
                "short": (evo_train, dict(data=data, steps=short_steps)),
            }
            runs: dict[str, list[float]] = {k: [] for k in [*variants, "build", "build_short"]}
            graph = True
            for rep in range(settings.reps):
                for variant, (trainer, kwargs) in variants.items():
                    model, build_s = build_model(dna, shape, device)
                    out = trainer(model, batch_size=batch, learning_rate=dna.learning_rate, device=device, **kwargs)
                    if isinstance(out, dict):
                        if device_kind(device) == "cuda":
                            graph = graph and out["used_cuda_graph"]
                        out = out["seconds"]
                    runs[variant].append(out)
                    if variant in ("evo", "short"):
                        runs["build" if variant == "evo" else "build_short"].append(build_s)
                say(f"{name} batch {batch} rep {rep + 1}/{settings.reps}: evo {steps * batch / runs['evo'][-1]:,.0f} "
                    f"img/s, naive {steps * batch / runs['naive'][-1]:,.0f} img/s")
            graph = graph if device_kind(device) == "cuda" else False
            rows.append(_row(name, batch, steps, short_steps, runs, graph, describe(dna, shape, CLASSES)))
    return rows


def _row(name: str, batch: int, steps: int, short_steps: int, runs: dict[str, list[float]],
         graph: bool, arch: dict[str, Any]) -> dict[str, Any]:
    """One table row: medians, the speed-up, and the fixed cost (see the module docstring)."""
    med = {k: statistics.median(v) for k, v in runs.items()}
    images = steps * batch
    per_step = (med["evo"] - med["short"]) / (steps - short_steps)    # steady state, warm
    warm = med["build_short"] + med["short"] - short_steps * per_step
    # cold: the very first run of this architecture in the process (its build and epoch)
    cold = runs["build"][0] + runs["evo"][0] - steps * per_step
    return {
        "arch": name, "batch_size": batch, "steps": steps, "images": images, **arch,
        "evo_img_s": images / med["evo"], "naive_img_s": images / med["naive"],
        "evo_fp32_img_s": images / med["evo_fp32"], "evo_aug_img_s": images / med["evo_aug"],
        "speedup": med["naive"] / med["evo"], "cuda_graph": graph, "step_ms": 1000 * per_step,
        "fixed_cost_s": warm, "fixed_cost_cold_s": cold,
        "fixed_cost_fraction": warm / med["evo"], "fixed_cost_cold_fraction": cold / med["evo"],
        "seconds": runs,
    }


def run(mode: str = "small", device: str = "cpu", out_dir: str = "bench/results", *,
        archs: tuple[str, ...] | None = None, batch_sizes: tuple[int, ...] | None = None,
        images: int | None = None, reps: int | None = None) -> dict[str, Any]:
    """Measure, then write ``train_speed-{mode}-{device kind}.json`` and ``.md``; return the document."""
    import torch

    settings = MODES[mode]
    changes = {k: v for k, v in dict(archs=archs, batch_sizes=batch_sizes, images=images, reps=reps).items()
               if v is not None}
    if changes:
        from dataclasses import replace
        settings = replace(settings, **changes)
    if settings.reps < 1:
        raise BenchError("--reps must be at least 1")
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)   # the CI machine class is shared; one thread is what a CPU worker gets
    elif not torch.cuda.is_available():
        raise BenchError(f"device {device} requested but CUDA is not available")
    say(f"train_speed {mode} on {device}: archs {', '.join(settings.archs)}, batch {settings.batch_sizes}, "
        f"{settings.images:,} images/epoch, {settings.reps} reps")
    rows = measure(settings, device)
    headers = ["arch", "convs", "params", "MMAC/img", "batch", "evo img/s", "naive img/s", "speedup",
               "evo fp32 img/s", "evo +aug img/s", "CUDA graph", "fixed cost (warm)", "fixed/train (warm)",
               "fixed/train (cold)"]
    table = markdown_table(headers, [
        (r["arch"], r["convs"], r["params"], r["mmacs"], r["batch_size"], r["evo_img_s"], r["naive_img_s"],
         f"{r['speedup']:.2f}x", r["evo_fp32_img_s"], r["evo_aug_img_s"], r["cuda_graph"],
         f"{1000 * r['fixed_cost_s']:.1f} ms", f"{100 * r['fixed_cost_fraction']:.1f}%",
         f"{100 * r['fixed_cost_cold_fraction']:.1f}%") for r in rows])
    first = rows[0]
    summary = (f"{first['arch']} net, batch {first['batch_size']}: evo {first['evo_img_s']:,.0f} img/s vs naive "
               f"{first['naive_img_s']:,.0f} img/s ({first['speedup']:.2f}x); fixed cost per child "
               f"{100 * first['fixed_cost_fraction']:.1f}% of one epoch's training "
               f"({100 * first['fixed_cost_cold_fraction']:.1f}% cold)")
    notes = ("\n\nimg/s: median of the repetitions, one epoch each, freshly built model each time. "
             "naive = fp32 eager torch.optim.SGD with per-step CPU indexing and .to(device) (bench/train_speed.py). "
             "fixed cost = build + the first steps' excess over the steady step time (warm-up, CUDA-graph capture); "
             "cold = first child of that architecture in the process.\n")
    settings_d = {"images": settings.images, "image_shape": list(settings.image_shape),
                  "batch_sizes": list(settings.batch_sizes), "archs": list(settings.archs), "reps": settings.reps,
                  "data": "random uint8, random labels (seeded)", "weight_decay": 1e-4, "momentum": 0.9}
    return write_report("train_speed", mode, device, out_dir, settings=settings_d, results={"rows": rows},
                        markdown=table + notes, summary=summary)

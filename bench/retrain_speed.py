"""``python -m bench retrain_speed``: final-training throughput of AmoebaNet-A, evo's retrain
path against a plain fp32 eager loop, and the time of one CIFAR-sized epoch.

Model: AmoebaNet-A (``dna.published``) with the auxiliary head, at N=6, F=36 in ``full``
(the 2019 paper's CIFAR-10 size) and N=1, F=4 in ``small`` (CI-sized, CPU). Data:
CIFAR-shaped random uint8 images and labels made here from a seeded generator (nothing is
downloaded); ``full`` has 50,000 training images, CIFAR-10's train + validation, which is
what a retrain with ``data=train+val`` trains on per epoch.

Measured, each on a freshly built model with the same initial weights:

- ``evo``: ``evo.train.final.FinalTraining`` with the paper preset (cosine decay,
  ScheduledDropPath, auxiliary head at weight 0.4, cutout 16, crop + flip, clipping) for one
  epoch of the training images: precision ``auto`` (bf16 + channels_last on CUDA, the step
  captured in a CUDA graph). Reported: the epoch's wall time (build excluded, warm-up and
  graph capture included) and the steady-state img/s after the first ``--warm-steps`` steps.
- ``evo_eager``: the same without the CUDA graph (``cuda_graphs=False``): what the graph adds.
- ``naive``: the loop a typical user writes: fp32, eager, ``torch.optim.SGD`` (momentum 0.9,
  weight decay 5e-4), the same model with the same drop-path probability set and the same
  auxiliary loss, normalised float32 images in host memory indexed per step and copied with
  ``.to(device)``; no augmentation (which only flatters it). Timed over ``--naive-steps``
  steps after the warm-up ones; its epoch time is extrapolated from that rate.

Results are written after every measurement, so a run cut short still leaves what it did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ._report import BenchError, device_kind, markdown_table, say, write_report

CLASSES = 10
ARCH = "amoebanet-a"


@dataclass(frozen=True)
class RetrainSpeedSettings:
    """What one retrain_speed run measures."""

    cells: int
    filters: int
    images: int                       # training images: one epoch
    image_shape: tuple[int, int, int]
    batch_size: int
    warm_steps: int                   # steps before the steady-state clock starts
    naive_steps: int                  # timed steps of the naive loop (after warm_steps)
    seed: int = 0


MODES = {
    "full": RetrainSpeedSettings(cells=6, filters=36, images=50_000, image_shape=(3, 32, 32), batch_size=128,
                                 warm_steps=20, naive_steps=100),
    "small": RetrainSpeedSettings(cells=1, filters=4, images=256, image_shape=(3, 16, 16), batch_size=16,
                                  warm_steps=4, naive_steps=6),
}


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def make_data(settings: RetrainSpeedSettings, device: str):
    """(DeviceDataset on ``device`` whose train + validation splits hold ``images`` images,
    host float32 normalised training images, host labels)."""
    import torch

    from evo.data.base import CIFAR_AUGMENT, HostDataset
    from evo.data.device import to_device

    rng = np.random.default_rng(settings.seed)
    n_val = max(CLASSES, settings.images // 10)
    n_train = settings.images - n_val
    n_test = 2 * CLASSES
    total = settings.images + n_test
    x = rng.integers(0, 256, size=(total,) + settings.image_shape, dtype=np.uint8)
    y = rng.integers(0, CLASSES, size=total).astype(np.int64)
    host = HostDataset("fakecifar", CLASSES, CIFAR_AUGMENT, x[:n_train], y[:n_train],
                       x[n_train:settings.images], y[n_train:settings.images], x[settings.images:], y[settings.images:])
    data = to_device(host, device)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x_host = (torch.from_numpy(x[:settings.images]).float() - mean) / std
    return data, x_host.contiguous(), torch.from_numpy(y[:settings.images])


def build(settings: RetrainSpeedSettings, device: str):
    """AmoebaNet-A with its auxiliary head at the settings' size, seeded, on ``device``."""
    import torch

    from dna.build_nasnet import build_nasnet, parameter_counts
    from dna.published import published

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = build_nasnet(published(ARCH), settings.image_shape, CLASSES, cells_per_stack=settings.cells,
                             filters=settings.filters, aux_head=True)
    body, aux = parameter_counts(model)
    return model.to(device), body, aux


def evo_epoch(settings: RetrainSpeedSettings, data, device: str, *, cuda_graphs: bool) -> dict[str, Any]:
    """One epoch of ``FinalTraining`` with the paper preset; its wall time and steady img/s."""
    from evo.train.final_settings import PAPER
    from evo.train.final import FinalTraining

    final = PAPER.with_changes(epochs=1, batch_size=settings.batch_size, cuda_graphs=cuda_graphs,
                               seed=settings.seed)
    model, _, _ = build(settings, device)
    training = FinalTraining(model, data, final, learning_rate=0.025, seed=settings.seed, device=device,
                             aux_head=True)
    marks: dict[str, float] = {}

    def should_stop() -> bool:
        if training.step == settings.warm_steps and "warm" not in marks:
            _sync(device)
            marks["warm"] = time.perf_counter()
        return False

    _sync(device)
    start = time.perf_counter()
    outcome = training.run(should_stop=should_stop)
    _sync(device)
    end = time.perf_counter()
    if outcome.status != "finished":
        raise BenchError(f"evo final training ended {outcome.status} at step {outcome.step}")
    steps = training.total_steps
    steady = (steps - settings.warm_steps) * settings.batch_size / (end - marks["warm"])
    return {"epoch_seconds": end - start, "steps": steps, "images": steps * settings.batch_size,
            "steady_img_s": steady, "precision": training.precision, "channels_last": training.channels_last,
            "used_cuda_graph": training.used_cuda_graph, "graph_fallback": training.graph_fallback,
            "applied": training.applied}


def naive(settings: RetrainSpeedSettings, x_host, y_host, device: str) -> dict[str, Any]:
    """The plain fp32 eager loop (module docstring): steady img/s and the epoch it implies."""
    import torch
    import torch.nn.functional as F

    model, _, _ = build(settings, device)
    model.train()
    model.drop_path_prob = 0.2     # drop path costs the same whatever the probability
    opt = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(settings.seed)
    n = int(y_host.shape[0])
    b = settings.batch_size
    total = torch.zeros((), device=device)
    perm = torch.randperm(n, generator=g)
    steps = settings.warm_steps + settings.naive_steps
    if steps * b > n:
        raise BenchError(f"the naive loop needs {steps * b} images, the data has {n}")
    start = None
    for k in range(steps):
        if k == settings.warm_steps:
            _sync(device)
            start = time.perf_counter()
        idx = perm[k * b:(k + 1) * b]
        xb, yb = x_host[idx].to(device), y_host[idx].to(device)
        logits, aux = model(xb)
        loss = F.cross_entropy(logits, yb) + 0.4 * F.cross_entropy(aux, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        total += loss.detach()
    _sync(device)
    seconds = time.perf_counter() - start
    if not np.isfinite(float(total.item())):
        raise BenchError("naive loop: the loss diverged")
    img_s = settings.naive_steps * b / seconds
    return {"steady_img_s": img_s, "timed_steps": settings.naive_steps,
            "epoch_seconds_extrapolated": (n // b) * b / img_s}


def run(mode: str = "small", device: str = "cpu", out_dir: str = "bench/results", *,
        cells: int | None = None, filters: int | None = None, images: int | None = None,
        batch_size: int | None = None) -> dict[str, Any]:
    """Measure, writing ``retrain_speed-{mode}-{device kind}.{json,md}`` after each part."""
    import torch

    settings = MODES[mode]
    changes = {k: v for k, v in dict(cells=cells, filters=filters, images=images, batch_size=batch_size).items()
               if v is not None}
    if changes:
        settings = replace(settings, **changes)
    if settings.images // settings.batch_size <= settings.warm_steps + 2:
        raise BenchError(f"{settings.images} images at batch {settings.batch_size} are too few steps "
                         f"(need more than {settings.warm_steps + 2})")
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    say(f"retrain_speed {mode} on {device}: {ARCH} N={settings.cells} F={settings.filters}, "
        f"{settings.images:,} images/epoch {settings.image_shape}, batch {settings.batch_size}")
    data, x_host, y_host = make_data(settings, device)
    _, body, aux = build(settings, device)
    results: dict[str, Any] = {"arch": ARCH, "parameters": body, "aux_parameters": aux}
    doc: dict[str, Any] = {}

    def report() -> dict[str, Any]:
        evo = results.get("evo") or {}
        nv = results.get("naive") or {}
        rows = []
        for name, r, epoch in (("evo (bf16 + channels_last + CUDA graph on CUDA)", evo, evo.get("epoch_seconds")),
                               ("evo without CUDA graph", results.get("evo_eager") or {},
                                (results.get("evo_eager") or {}).get("epoch_seconds")),
                               ("naive fp32 eager", nv, nv.get("epoch_seconds_extrapolated"))):
            if r:
                rows.append((name, r.get("steady_img_s"), epoch, r.get("precision", "fp32"),
                             r.get("used_cuda_graph", False)))
        table = markdown_table(["loop", "img/s (steady)", "one epoch (s)", "precision", "CUDA graph"], rows)
        speedup = (evo["steady_img_s"] / nv["steady_img_s"]) if evo and nv else None
        results["speedup"] = speedup
        summary = (f"{ARCH} N={settings.cells} F={settings.filters} (+aux head), batch {settings.batch_size}: "
                   + (f"evo {evo['steady_img_s']:,.0f} img/s, one {settings.images:,}-image epoch "
                      f"{evo['epoch_seconds']:.1f} s" if evo else "evo not measured")
                   + (f"; naive fp32 eager {nv['steady_img_s']:,.0f} img/s" if nv else "")
                   + (f" ({speedup:.2f}x)" if speedup else ""))
        notes = ("\n\nevo = evo.train.final.FinalTraining with the paper preset (cosine, ScheduledDropPath, aux head "
                 "0.4, cutout 16, crop+flip, clip 5); its epoch time includes warm-up and graph capture, not the "
                 "build. naive = fp32 eager torch.optim.SGD, host-side batches copied per step, same aux loss and "
                 "drop path, no augmentation; its epoch time is extrapolated from the timed steps. "
                 f"Parameters: {body:,} body + {aux:,} auxiliary head. Data: random uint8 images (seeded).\n")
        settings_d = {"arch": ARCH, "cells": settings.cells, "filters": settings.filters, "images": settings.images,
                      "image_shape": list(settings.image_shape), "batch_size": settings.batch_size,
                      "warm_steps": settings.warm_steps, "naive_steps": settings.naive_steps}
        return write_report("retrain_speed", mode, device, out_dir, settings=settings_d, results=results,
                            markdown=table + notes, summary=summary)

    results["evo"] = evo_epoch(settings, data, device, cuda_graphs=True)
    say(f"evo: {results['evo']['steady_img_s']:,.0f} img/s, epoch {results['evo']['epoch_seconds']:.1f} s "
        f"(graph {results['evo']['used_cuda_graph']})")
    doc = report()
    results["naive"] = naive(settings, x_host, y_host, device)
    say(f"naive: {results['naive']['steady_img_s']:,.0f} img/s")
    doc = report()
    if device_kind(device) == "cuda":
        results["evo_eager"] = evo_epoch(settings, data, device, cuda_graphs=False)
        say(f"evo without graph: {results['evo_eager']['steady_img_s']:,.0f} img/s")
        doc = report()
    return doc

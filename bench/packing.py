"""``python -m bench packing``: aggregate children/hour with K workers sharing one device.

For each K: a fresh population directory on a CIFAR-shaped dataset of random images (a
CIFAR-10 "python version" directory written by ``bench._fakecifar``, read by the real loader
as ``cifar10=PATH``), K real ``evo worker`` processes on the same device (``python -m launch
worker URL --index i --device D``, environment as ``evo launch`` gives it), started together.
Once every worker has published its first child (torch import, CUDA start, dataset load and
the first child are start-up), children are counted for a fixed window by their birth times
in the store; then the workers are stopped with SIGTERM.

Children are what evolution makes in its first minutes (small nets grown from the one-layer
start, weights inherited), each trained for ``steps`` steps of batch 50 with crop + flip; the
report gives their mean training time and size, so the numbers can be read for what they are.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from launch.processes import stop_workers  # the same SIGTERM-then-SIGKILL as evo launch

from ._report import REPO, BenchError, device_kind, markdown_table, say, write_report


@dataclass(frozen=True)
class PackingSettings:
    """What one packing run does."""

    ks: tuple[int, ...]
    steps: int                   # training steps per child (batch 50)
    population_size: int
    window_s: float              # counting window once all K workers are up
    startup_timeout_s: float
    train_images: int            # fake CIFAR training images (5,000 of them become validation)
    test_images: int


MODES = {
    "full": PackingSettings(ks=(1, 2, 4, 8), steps=900, population_size=10, window_s=20.0,
                            startup_timeout_s=150.0, train_images=50_000, test_images=10_000),
    "small": PackingSettings(ks=(1, 2), steps=5, population_size=3, window_s=8.0,
                             startup_timeout_s=180.0, train_images=5_500, test_images=100),
}


def start_workers(url: str, k: int, device: str, log_dir: Path) -> list[tuple[subprocess.Popen, Path]]:
    """K ``evo worker`` processes on ``device``, each in its own session, logging to log_dir."""
    procs = []
    for i in range(k):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if device_kind(device) == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // k))   # as `evo launch` does
        log = log_dir / f"k{k}-worker-{i}.log"
        with open(log, "wb") as f:
            p = subprocess.Popen([sys.executable, "-m", "launch", "worker", url, "--index", str(i), "--device", device],
                                 cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs.append((p, log))
    return procs


def _check_alive(procs: list[tuple[subprocess.Popen, Path]]) -> None:
    for p, log in procs:
        if p.poll() is not None:
            lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
            raise BenchError(f"a worker exited with {p.returncode} (log {log}): {lines[-1] if lines else 'no output'}")


def _wait_all_published(store, procs, k: int, timeout: float) -> float:
    """Seconds until each of the K workers has published at least once (by its heartbeat)."""
    start = time.monotonic()
    while True:
        _check_alive(procs)
        beats = store.runinfo.list_workers()
        if len(beats) >= k and all((b["info"].get("individuals") or 0) >= 1 for b in beats):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            done = sum(1 for b in beats if (b["info"].get("individuals") or 0) >= 1)
            raise BenchError(f"only {done} of {k} workers published a child within {timeout:.0f} s")
        time.sleep(0.25)


def births(store, bounds) -> list[dict[str, Any]]:
    """Birth time, metrics and worker of every individual the run made (alive and dead)."""
    out = [{"birth": r["birth"], "metrics": r.get("metrics") or {}, "worker": r.get("worker")}
           for r in store.history.read_history()]
    for info in store.population.list_alive():
        ind = store.population.read_individual(info, bounds=bounds)
        if ind is not None:
            out.append({"birth": ind.birth, "metrics": ind.metrics, "worker": ind.worker})
    return out


def run_k(k: int, settings: PackingSettings, dataset: str, device: str, work: Path) -> dict[str, Any]:
    """Start K workers, count children born in the window after all are up, stop them."""
    from evo.config import RunConfig, TrainSettings
    from storage import open_store

    url = str(work / f"pop-k{k}")
    config = RunConfig(dataset=dataset, population_size=settings.population_size, selection="pairwise", seed=k,
                       train=TrainSettings(steps=settings.steps, batch_size=50, augment=True))
    store = open_store(url)
    store.runinfo.init_config(config.to_json())
    procs = start_workers(url, k, device, work)
    try:
        startup = _wait_all_published(store, procs, k, settings.startup_timeout_s)
        t0 = time.time()
        say(f"K={k}: all workers up after {startup:.1f} s; counting for {settings.window_s:.0f} s")
        while time.time() - t0 < settings.window_s:
            _check_alive(procs)
            time.sleep(min(0.5, max(0.0, settings.window_s - (time.time() - t0))))
        t1 = time.time()
    finally:
        stop_workers(procs)
    made = births(store, config.bounds)
    window = [b for b in made if t0 <= b["birth"] < t1]
    if not window:
        say(f"K={k}: warning: no child was born in the {settings.window_s:.0f} s window "
            "(use a longer --window or fewer --steps)")

    def metric(key: str) -> float | None:
        values = [float(b["metrics"].get(key) or 0.0) for b in window]
        return statistics.fmean(values) if values else None

    per_hour = len(window) / (t1 - t0) * 3600
    row = {
        "k": k, "children": len(window), "window_s": t1 - t0, "children_per_hour": per_hour,
        "per_worker_per_hour": per_hour / k, "startup_s": startup,
        "train_s_mean": metric("train_s"), "eval_s_mean": metric("eval_s"), "params_mean": metric("params"),
        "cuda_graph_share": statistics.fmean([1.0 if b["metrics"].get("cuda_graph") else 0.0 for b in window] or [0.0]),
        "workers_seen": len({b["worker"] for b in window}), "total_children": len(made),
    }
    say(f"K={k}: {len(window)} children in {t1 - t0:.1f} s = {per_hour:,.0f} children/hour")
    return row


def run(mode: str = "small", device: str = "cpu", out_dir: str = "bench/results", *,
        ks: tuple[int, ...] | None = None, steps: int | None = None, window: float | None = None,
        work_dir: str | None = None) -> dict[str, Any]:
    """All K; writes ``packing-{mode}-{kind}.json`` and ``.md``; returns the document."""
    from ._fakecifar import write_fake_cifar

    settings = MODES[mode]
    changes = {k: v for k, v in dict(ks=ks, steps=steps, window_s=window).items() if v is not None}
    settings = replace(settings, **changes)
    if not settings.ks or min(settings.ks) < 1:
        raise BenchError("--workers must list worker counts >= 1, e.g. 1,2,4,8")
    if device_kind(device) == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BenchError(f"device {device} requested but CUDA is not available")
        if device == "cuda":
            device = "cuda:0"   # one GPU: every worker on the same one
    with tempfile.TemporaryDirectory(prefix="evo-packing-", dir=work_dir) as tmp:
        work = Path(tmp)
        say(f"packing {mode} on {device}: K in {settings.ks}, {settings.steps} steps/child; "
            f"writing {settings.train_images:,} fake CIFAR images")
        data_dir = write_fake_cifar(work / "data", train_images=settings.train_images,
                                    test_images=settings.test_images)
        rows = [run_k(k, settings, f"cifar10={data_dir}", device, work) for k in settings.ks]
    best = max(rows, key=lambda r: r["children_per_hour"])
    if best["children"] == 0:
        raise BenchError("no child was born in any window; use a longer --window or fewer --steps")
    base = rows[0]["children_per_hour"] or float("nan")
    table = markdown_table(
        ["K workers", "children in window", "window s", "children/hour", "vs K=" + str(rows[0]["k"]),
         "per worker/hour", "mean train s", "mean eval s", "mean params", "CUDA graph", "start-up s"],
        [(r["k"], r["children"], r["window_s"], r["children_per_hour"], f"{r['children_per_hour'] / base:.2f}x",
          r["per_worker_per_hour"], r["train_s_mean"], r["eval_s_mean"], r["params_mean"] and round(r["params_mean"]),
          f"{100 * r['cuda_graph_share']:.0f}%", r["startup_s"]) for r in rows])
    summary = (f"best K = {best['k']}: {best['children_per_hour']:,.0f} children/hour "
               f"({best['children_per_hour'] / base:.2f}x K={rows[0]['k']})")
    settings_d = {"ks": list(settings.ks), "steps": settings.steps, "batch_size": 50, "augment": "crop+flip",
                  "population_size": settings.population_size, "window_s": settings.window_s,
                  "dataset": f"fake CIFAR-10 ({settings.train_images:,} random training images, cifar10=PATH loader)",
                  "selection": "pairwise"}
    return write_report("packing", mode, device, out_dir, settings=settings_d,
                        results={"rows": rows, "best_k": best["k"]}, markdown=table + "\n", summary=summary)

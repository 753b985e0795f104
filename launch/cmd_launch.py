"""`evo launch URL -n N`: start N local worker processes with a live progress display.

Also dispatches `evo launch slurm ...` and `evo launch k8s ...` to their launchers. Workers
are ordinary `evo worker` processes: stopping the launcher (Ctrl-C) stops them; starting it
again resumes the run from the store.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .cmd_init import add_config_arguments, ensure_run
from .errors import UserError
from .options import device, non_negative_int, positive_int, positive_seconds



def gpu_count() -> int:
    """Visible NVIDIA GPUs, without importing torch (the launcher stays light)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def worker_devices(n: int, device: str, workers_per_gpu: int | None, gpus: int) -> list[str]:
    """The --device of each of n workers: round-robin over GPUs, K per GPU, else the given device."""
    if device not in ("auto", "cuda") or gpus == 0:
        return [device if device != "auto" or gpus else "cpu"] * n
    k = workers_per_gpu or max(1, -(-n // gpus))
    return [f"cuda:{(i // k) % gpus}" for i in range(n)]


def default_log_dir(url: str) -> Path:
    """Worker logs go beside a local population, else under ./evo-logs."""
    if "://" not in url or url.startswith("file://"):
        return Path(url.removeprefix("file://")) / "logs"
    return Path("evo-logs")


def start_workers(args: argparse.Namespace, log_dir: Path) -> list[tuple[subprocess.Popen, Path]]:
    """Spawn the worker processes; each writes its log to log_dir/worker-<i>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    gpus = gpu_count() if args.device in ("auto", "cuda") else 0
    devices = worker_devices(args.n, args.device, args.workers_per_gpu, gpus)
    procs = []
    for i, dev in enumerate(devices):
        env = dict(os.environ)
        if dev == "cpu" and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.n))
        cmd = [sys.executable, "-m", "launch", "worker", args.url, "--index", str(args.index_base + i),
               "--device", dev]
        if args.max_seconds is not None:
            cmd += ["--max-seconds", str(args.max_seconds)]
        if args.max_individuals is not None:
            cmd += ["--max-individuals", str(args.max_individuals)]
        log_path = log_dir / f"worker-{args.index_base + i}.log"
        with open(log_path, "ab") as log:
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True), log_path))
    return procs


def stop_workers(procs, grace: float = 10.0) -> None:
    """SIGTERM every worker, then SIGKILL what is still running after ``grace`` seconds."""
    for p, _ in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + grace
    for p, _ in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def run_local(args: argparse.Namespace) -> int:
    from storage import open_store

    from .progress import Progress, summarize

    if args.n < 1:
        raise UserError("-n must be at least 1")
    store = open_store(args.url)
    log_dir = Path(args.log_dir) if args.log_dir else default_log_dir(args.url)
    if log_dir.exists() and not log_dir.is_dir():  # refuse before the run is initialised
        raise UserError(f"{log_dir}: --log-dir is a file, not a directory")
    ensure_run(args.url, args)
    print(f"starting {args.n} worker(s) on {args.url}; logs in {log_dir}/ (Ctrl-C stops them)", flush=True)
    procs = start_workers(args, log_dir)
    progress = Progress(store, interval=args.progress_interval)
    interrupted = False
    try:
        while any(p.poll() is None for p, _ in procs):
            progress.update([p for p, _ in procs])
            time.sleep(0.5)
    except KeyboardInterrupt:
        interrupted = True
        print("\nstopping workers...", flush=True)
    finally:
        stop_workers(procs)
        progress.close()
    failed = [(p.returncode, log) for p, log in procs if p.returncode not in (0, -signal.SIGTERM, 130)]
    print(summarize(store, args.url, log_dir), flush=True)
    if failed and not interrupted:
        code, log = failed[0]
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        print(f"{len(failed)} worker(s) failed (exit {code}); see {log}: {tail[0] if tail else ''}", file=sys.stderr)
        return 1
    return 130 if interrupted else 0


def run(args: argparse.Namespace) -> int:
    return run_local(args)


def register(sub) -> None:
    p = sub.add_parser("launch", help="start N local workers with a live progress display "
                       "(also: `evo launch slurm ...`, `evo launch k8s ...`)")
    p.add_argument("url", help="population directory: PATH, file://PATH, gs://BUCKET/PREFIX")
    p.add_argument("-n", type=positive_int, default=2, help="number of worker processes")
    p.add_argument("--max-seconds", type=positive_seconds, metavar="T",
                   help="each worker stops starting children after T seconds (default: no limit)")
    p.add_argument("--max-individuals", type=positive_int, metavar="K",
                   help="each worker stops after publishing K individuals (default: no limit)")
    p.add_argument("--device", type=device(), default="auto", help="auto (GPUs if present) | cpu | cuda")
    p.add_argument("--workers-per-gpu", type=positive_int, metavar="K",
                   help="K workers share each GPU (default: spread evenly)")
    p.add_argument("--index-base", type=non_negative_int, default=0, help="first worker index (seed streams)")
    p.add_argument("--log-dir", help="where worker logs go (default: URL/logs for local runs)")
    p.add_argument("--progress-interval", type=positive_seconds, default=5.0, help="seconds between progress lines")
    add_config_arguments(p)
    p.set_defaults(func=run)

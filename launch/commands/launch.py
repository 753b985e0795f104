"""`evo launch URL -n N`: start N local worker processes with a live progress display.

Workers are ordinary `evo worker` processes: stopping the launcher (Ctrl-C, SIGTERM or
SIGHUP) stops them cleanly (each gets SIGTERM: it abandons the child in training and writes a final
heartbeat), and on Linux a worker also gets SIGTERM when its launcher dies without cleaning
up (SIGKILL); starting the launcher again resumes the run from the store.

`evo launch slurm ...` and `evo launch k8s ...` are other commands (``launch_slurm``,
``launch_k8s``), which ``launch.cli`` routes to.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from evo.errors import EvoError

from ..errors import UserError
from ..options import add_command, add_worker_limits, device, non_negative_int, positive_int, positive_seconds
from ..processes import default_log_dir, die_with_parent, stop_workers
from .init import add_config_arguments, ensure_run

# Exit codes of a worker that stopped as it should: done, or stopped by a signal we send
# (128 + SIGTERM) or that the user's terminal sent (SIGINT, SIGHUP), or killed by one.
CLEAN_EXITS = {0, -signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGHUP}


class LauncherStopped(Exception):
    """The launcher got SIGTERM or SIGHUP: stop the workers, like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_launcher(signum, frame):
    raise LauncherStopped(signum)


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


def start_workers(args: argparse.Namespace, log_dir: Path,
                  procs: list[tuple[subprocess.Popen, Path]] | None = None) -> list[tuple[subprocess.Popen, Path]]:
    """Spawn the worker processes; each writes its log to log_dir/worker-<i>.log. Each is
    appended to ``procs`` (returned) as soon as it runs, so that an interrupt while they
    start still stops those already started."""
    log_dir.mkdir(parents=True, exist_ok=True)
    gpus = gpu_count() if args.device in ("auto", "cuda") else 0
    devices = worker_devices(args.n, args.device, args.workers_per_gpu, gpus)
    procs = [] if procs is None else procs
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
        if args.max_failed_children is not None:
            cmd += ["--max-failed-children", str(args.max_failed_children)]
        log_path = log_dir / f"worker-{args.index_base + i}.log"
        env["EVO_WORKER_LOG"] = str(log_path.resolve())  # shown by evo status
        with open(log_path, "ab") as log:
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True, preexec_fn=die_with_parent), log_path))
    return procs


class WorkersFailed(EvoError):
    """Worker processes of `evo launch` exited with an error (not stopped by a signal); the
    message names how many, the first one's exit code and the last line of its log."""


def launch_local(args: argparse.Namespace) -> int | None:
    """`evo launch`'s work (and ``evo.launch``'s) for parsed options: initialise the run when
    asked, start ``-n`` workers, show their progress until they stop, then the run's summary.
    Ctrl-C (KeyboardInterrupt: a terminal's, or a notebook's interrupt), SIGTERM or SIGHUP
    stops every worker before returning (a second one does not cut the stopping short); the
    signal number is returned then, None when the workers finished. WorkersFailed when a
    worker exited with an error on its own."""
    from storage import open_store

    from ..views.progress import Progress, summarize

    if args.n < 1:
        raise UserError("-n must be at least 1")
    store = open_store(args.url)
    log_dir = Path(args.log_dir) if args.log_dir else default_log_dir(args.url)
    if log_dir.exists() and not log_dir.is_dir():  # refuse before the run is initialised
        raise UserError(f"{log_dir}: --log-dir is a file, not a directory")
    ensure_run(args.url, args)
    print(f"starting {args.n} worker(s) on {args.url}; logs in {log_dir}/ (Ctrl-C stops them)", flush=True)
    # signal handlers can only be set from the main thread (a notebook's cells run there)
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _stop_launcher) for s in (signal.SIGTERM, signal.SIGHUP)} if main else {}
    procs: list = []
    progress = None
    stopped_by = None
    try:
        start_workers(args, log_dir, procs)
        progress = Progress(store.population, store.history, interval=args.progress_interval)
        while any(p.poll() is None for p, _ in procs):
            progress.update([p for p, _ in procs])
            time.sleep(0.5)
    except KeyboardInterrupt:
        stopped_by = signal.SIGINT
    except LauncherStopped as stop:
        stopped_by = stop.signum
    finally:
        # A second Ctrl-C, SIGTERM or SIGHUP must not cut the stopping short (the workers would run on).
        if main:
            previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        if stopped_by is not None:
            print(f"\nstopping workers ({signal.Signals(stopped_by).name})...", flush=True)
        stop_workers(procs)
        if progress is not None:
            progress.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    failed = [(p.returncode, log) for p, log in procs if p.returncode not in CLEAN_EXITS]
    print(summarize(store.history, args.url, log_dir), flush=True)
    if failed and stopped_by is None:
        code, log = failed[0]
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise WorkersFailed(f"{len(failed)} worker(s) failed (exit {code}); see {log}: {tail[0] if tail else ''}")
    return stopped_by


def run(args: argparse.Namespace) -> int:
    try:
        stopped_by = launch_local(args)
    except WorkersFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0 if stopped_by is None else 128 + int(stopped_by)


def register(sub) -> None:
    p = add_command(sub, "launch", help="start N local workers with a live progress display "
                                        "(also: `evo launch slurm ...`, `evo launch k8s ...`)")
    p.add_argument("-n", type=positive_int, default=2, help="number of worker processes")
    add_worker_limits(p)
    p.add_argument("--device", type=device(), default="auto", help="auto (GPUs if present) | cpu | cuda")
    p.add_argument("--workers-per-gpu", type=positive_int, metavar="K",
                   help="K workers share each GPU (default: spread evenly)")
    p.add_argument("--index-base", type=non_negative_int, default=0, help="first worker index (seed streams)")
    p.add_argument("--log-dir", help="where worker logs go (default: URL/logs for local runs)")
    p.add_argument("--progress-interval", type=positive_seconds, default=5.0, help="seconds between progress lines")
    add_config_arguments(p)
    p.set_defaults(func=run)

"""`evo launch slurm URL -n N`: N workers as a SLURM job array, through submitit.

Each array task runs one ordinary worker (``evo.worker``) on the population URL, with its
array index as the worker index. The population is usually a directory on NFS that the
login node and every compute node mount at the same path (or a ``gs://`` bucket). Job files
and logs go to ``--log-dir`` (default ``URL/logs/submitit``; it must be on a shared file
system too). ``--executor local`` runs the same jobs as local processes through submitit's
local executor: a real rehearsal of the SLURM path on one machine.

By default the launcher returns once the array is queued (SLURM) and waits for the
workers with a progress line (local executor); ``--wait``/``--no-wait`` override that.
While waiting, Ctrl-C cancels the jobs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from .cmd_init import check_run_options, ensure_run
from .errors import UserError
from .options import device, non_negative_int, positive_int, positive_seconds


def worker_job(url: str, index: int, device: str, max_seconds: float | None,
               max_individuals: int | None, threads: int | None) -> dict[str, Any]:
    """The body of one array task: run a worker until its limits; return what it did."""
    if threads and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by the trainer before torch starts
    from evo.worker import WorkerOptions, run_worker

    from .cmd_worker import configure_logging

    configure_logging()
    stats = run_worker(WorkerOptions(url=url, index=index, device=device, max_seconds=max_seconds,
                                     max_individuals=max_individuals))
    return {"worker": stats.worker_id, "index": index, "published": stats.published,
            "killed": stats.killed, "race_losses": stats.race_losses, "failures": stats.failures,
            "best_fitness": stats.best_fitness}


def executor_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """submitit AutoExecutor parameters for the options (SLURM-only ones prefixed ``slurm_``)."""
    params: dict[str, Any] = {
        "name": args.job_name, "timeout_min": args.time_min, "gpus_per_node": args.gpus_per_worker,
        "cpus_per_task": args.cpus_per_worker, "tasks_per_node": 1, "nodes": 1, "stderr_to_stdout": True,
    }
    if args.executor == "slurm":
        params["mem_gb"] = args.mem_gb
        params["slurm_array_parallelism"] = args.n
        for name in ("partition", "account", "qos", "constraint"):
            value = getattr(args, name)
            if value:
                params[f"slurm_{name}"] = value
        if args.sbatch:
            extra = {}
            for item in args.sbatch:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise UserError(f"--sbatch expects KEY=VALUE, got {item!r}")
                extra[key.lstrip("-")] = value
            params["slurm_additional_parameters"] = extra
    return params


def _device(args: argparse.Namespace) -> str:
    if args.device != "auto":
        return args.device
    return "cuda" if args.gpus_per_worker > 0 else "cpu"


class _JobHandle:
    """A submitit job seen as a process (``poll()``) by :class:`launch.progress.Progress`."""

    def __init__(self, job):
        self.job = job

    def poll(self):
        return 0 if self.job.done() else None


def run(args: argparse.Namespace) -> int:
    try:
        import submitit
    except ImportError:
        raise UserError("evo launch slurm needs submitit: pip install 'evo[launch]'") from None
    from storage import open_store

    from .cmd_launch import default_log_dir
    from .progress import Progress, summarize

    if args.n < 1:
        raise UserError("-n must be at least 1")
    folder = Path(args.log_dir) if args.log_dir else default_log_dir(args.url) / "submitit"
    check_run_options(args)  # before submitit creates its folder (by default inside the population)
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=args.executor)
        executor.update_parameters(**executor_parameters(args))
    except RuntimeError as exc:  # submitit's "Could not detect srun"
        raise UserError(f"{str(exc).splitlines()[0]} (rehearse on one machine with --executor local)") from None
    except (ValueError, OSError) as exc:
        raise UserError(f"submitit: {str(exc).splitlines()[0]}") from None
    ensure_run(args.url, args)
    device = _device(args)
    threads = args.cpus_per_worker
    if args.executor == "local" and device == "cpu":
        threads = max(1, min(threads, (os.cpu_count() or 1) // args.n))
    indices = [args.index_base + i for i in range(args.n)]
    try:
        jobs = executor.map_array(worker_job, [args.url] * args.n, indices, [device] * args.n,
                                  [args.max_seconds] * args.n, [args.max_individuals] * args.n,
                                  [threads] * args.n)
    except FileNotFoundError:
        raise UserError("sbatch not found: run this on a SLURM login node (or rehearse with --executor local)") from None
    except Exception as exc:  # submitit reports sbatch failures as several exception types
        raise UserError(f"submission failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}") from None
    ids = [j.job_id for j in jobs]
    print(f"submitted {len(jobs)} worker(s) on {args.url} ({args.executor}, device {device}): "
          f"job {ids[0]}{' ... ' + ids[-1] if len(ids) > 1 else ''}; logs in {folder}/", flush=True)
    wait = args.wait if args.wait is not None else args.executor == "local"
    if not wait:
        print(f"follow it with: evo status {args.url} --watch", flush=True)
        return 0
    store = open_store(args.url)
    progress = Progress(store, interval=args.progress_interval)
    handles = [_JobHandle(j) for j in jobs]
    try:
        while not all(j.done() for j in jobs):
            progress.update(handles)
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("\ncancelling the jobs...", flush=True)
        for j in jobs:
            j.cancel(check=False)
        return 130
    finally:
        progress.close()
    failed = []
    for j in jobs:
        try:
            j.result()
        except Exception as exc:
            failed.append((j.job_id, str(exc).strip().splitlines()[-1:] or [type(exc).__name__]))
    print(summarize(store, args.url, folder), flush=True)
    if failed:
        job_id, tail = failed[0]
        print(f"{len(failed)} job(s) failed; job {job_id}: {tail[0][:300]} (logs in {folder}/)", file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    from .cmd_init import add_config_arguments

    p = sub.add_parser("launch-slurm", prog="evo launch slurm",
                       description="Start N workers as a SLURM job array through submitit. The population "
                                   "must be on a file system every node mounts (NFS) or on gs://.")
    p.add_argument("url", help="population directory: a shared PATH (NFS), file://PATH or gs://BUCKET/PREFIX")
    p.add_argument("-n", type=positive_int, default=2, help="number of workers (array tasks)")
    p.add_argument("--executor", choices=("slurm", "local"), default="slurm",
                   help="slurm, or local: the same jobs as local processes (a rehearsal)")
    p.add_argument("--partition", help="SLURM partition")
    p.add_argument("--account", help="SLURM account")
    p.add_argument("--qos", help="SLURM quality of service")
    p.add_argument("--constraint", help="SLURM node constraint")
    p.add_argument("--sbatch", action="append", metavar="KEY=VALUE", help="extra #SBATCH option (repeatable)")
    p.add_argument("--gpus-per-worker", type=non_negative_int, default=0, help="GPUs per worker")
    p.add_argument("--cpus-per-worker", type=positive_int, default=4, help="CPUs per worker")
    p.add_argument("--mem-gb", type=positive_seconds, default=16, help="memory per worker in GB")
    p.add_argument("--time-min", type=positive_int, default=24 * 60, help="job time limit in minutes")
    p.add_argument("--job-name", default="evo-worker", help="SLURM job name")
    p.add_argument("--device", type=device(), default="auto", help="auto (cuda with GPUs, else cpu) | cpu | cuda")
    p.add_argument("--max-seconds", type=positive_seconds, metavar="T",
                   help="each worker stops starting children after T seconds (default: no limit)")
    p.add_argument("--max-individuals", type=positive_int, metavar="K",
                   help="each worker stops after publishing K individuals (default: no limit)")
    p.add_argument("--index-base", type=non_negative_int, default=0, help="first worker index (seed streams)")
    p.add_argument("--log-dir", help="submitit job files and logs (default URL/logs/submitit; must be shared)")
    p.add_argument("--wait", dest="wait", action="store_true", default=None,
                   help="wait for the workers, with a progress line (default with --executor local)")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="return once the jobs are queued")
    p.add_argument("--progress-interval", type=positive_seconds, default=5.0, help="seconds between progress lines")
    add_config_arguments(p)
    p.set_defaults(func=run)

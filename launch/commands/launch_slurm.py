"""`evo launch slurm URL -n N`: N workers as a SLURM job array, through submitit.

Each array task runs one ordinary worker (``evo.search.worker``) on the population URL, with its
array index as the worker index (the jobs and their signal handling:
``launch.clusters.slurm``). The population is usually a directory on NFS that the
login node and every compute node mount at the same path (or a ``gs://`` bucket). Job files
and logs go to ``--log-dir`` (default ``URL/logs/submitit``; it must be on a shared file
system too). ``--executor local`` runs the same jobs as local processes through submitit's
local executor: a real rehearsal of the SLURM path on one machine.

By default the launcher returns once the array is queued (SLURM) and waits for the
workers with a progress line (local executor); ``--wait``/``--no-wait`` override that.
While waiting (``launch.clusters.slurm_wait``), Ctrl-C cancels the jobs; an array that stays
pending for a reason that never clears (``PartitionConfig``: a request larger than any
node, ...) ends the wait with one line naming the reason. The array's job id is recorded in the store
(``launches/slurm-{id}.json``) so that ``evo status`` can ask squeue about it.

``--retrain``: the tasks train the population's final-training requests instead
(``launch.clusters.retrain_job``; write them with ``evo retrain URL --top K --no-train``): each task
claims one request at a time, checkpoints every ``--checkpoint-seconds`` and on
scancel/time limit, and a requeued or new task resumes from the checkpoint.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from evo.errors import one_line

from ..clusters.slurm import (MAX_SECONDS_MARGIN, MIN_LIMIT_FOR_DEFAULT, RequeueingWorkerJob, WorkerJob,
                              default_max_seconds, executor_parameters, pending_retrains, resume_command)
from ..clusters.slurm_wait import wait_for_array
from ..errors import UserError
from ..options import (add_command, add_worker_limits, device, heartbeat_seconds, lease_seconds, non_negative_int,
                       positive_int, positive_seconds)
from .init import check_run_options, ensure_run


def _device(args: argparse.Namespace) -> str:
    if args.device != "auto":
        return args.device
    return "cuda" if args.gpus_per_worker > 0 else "cpu"


def run(args: argparse.Namespace) -> int:
    try:
        import submitit
    except ImportError:
        raise UserError("evo launch slurm needs submitit: pip install 'evo[launch]'") from None
    from storage import open_store

    from ..processes import default_log_dir

    if args.n < 1:
        raise UserError("-n must be at least 1")
    folder = Path(args.log_dir) if args.log_dir else default_log_dir(args.url) / "submitit"
    check_run_options(args)  # before submitit creates its folder (by default inside the population)
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=args.executor)
        executor.update_parameters(**executor_parameters(args))
    except RuntimeError as exc:  # submitit's "Could not detect srun"
        raise UserError(f"{one_line(exc)} (rehearse on one machine with --executor local)") from None
    except (ValueError, OSError) as exc:
        raise UserError(f"submitit: {one_line(exc)}") from None
    if args.retrain:
        pending_retrains(args.url)
    else:
        ensure_run(args.url, args)
    device = _device(args)
    threads = args.cpus_per_worker
    if args.executor == "local" and device == "cpu":
        threads = max(1, min(threads, (os.cpu_count() or 1) // args.n))
    max_seconds = args.max_seconds if args.max_seconds is not None else default_max_seconds(args.time_min)
    indices = [args.index_base + i for i in range(args.n)]
    n = args.n
    try:
        if args.retrain:
            from ..clusters.retrain_job import RequeueingRetrainJob, RetrainJob

            job = RequeueingRetrainJob() if args.requeue else RetrainJob()
            jobs = executor.map_array(job, [args.url] * n, [device] * n, [threads] * n, [args.lease] * n,
                                      [args.checkpoint_seconds] * n)
        else:
            job = RequeueingWorkerJob() if args.requeue else WorkerJob()
            jobs = executor.map_array(job, [args.url] * n, indices, [device] * n, [max_seconds] * n,
                                      [args.max_individuals] * n, [threads] * n, [None] * n,
                                      [args.heartbeat_seconds] * n, [args.max_failed_children] * n)
    except FileNotFoundError:
        raise UserError("sbatch not found: run this on a SLURM login node (or rehearse with --executor local)") from None
    except Exception as exc:  # submitit reports sbatch failures as several exception types
        raise UserError(f"submission failed: {one_line(exc, with_type=True)}") from None
    ids = [j.job_id for j in jobs]
    array_id = str(ids[0]).split("_")[0]
    store = open_store(args.url)
    if args.executor == "slurm":
        store.runinfo.record_launch(f"slurm-{array_id}", {
            "kind": "slurm", "job_id": array_id, "tasks": n, "log_dir": str(folder),
            "command": resume_command(args)})
    limit = "" if args.max_seconds is not None or args.retrain else (
        f"; workers stop starting children after {max_seconds:g} s (--time-min less {MAX_SECONDS_MARGIN // 60} min)"
        if max_seconds is not None else "")
    what = "retrain task(s)" if args.retrain else "worker(s)"
    print(f"submitted {len(jobs)} {what} on {args.url} ({args.executor}, device {device}): "
          f"job {ids[0]}{' ... ' + ids[-1] if len(ids) > 1 else ''}; logs in {folder}/{limit}", flush=True)
    wait = args.wait if args.wait is not None else args.executor == "local"
    if not wait:
        print(f"follow it with: evo status {args.url} --watch", flush=True)
        return 0
    return wait_for_array(args, store, jobs, array_id, folder, resume=resume_command(args))


def register(sub) -> None:
    from .init import add_config_arguments

    p = add_command(sub, "launch-slurm", prog="evo launch slurm",
                    description="Start N workers as a SLURM job array through submitit. The population "
                                "must be on a file system every node mounts (NFS) or on gs://.", url_help="population directory: a shared PATH (NFS), file://PATH or gs://BUCKET/PREFIX")
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
    add_worker_limits(p, max_seconds_help="each worker stops starting children after T seconds (default: "
                      f"--time-min less {MAX_SECONDS_MARGIN // 60} minutes; none below "
                      f"{MIN_LIMIT_FOR_DEFAULT // 60} minutes)")
    p.add_argument("--requeue", action="store_true",
                   help="requeue a task stopped by preemption or its time limit (submitit's requeue; "
                        "default: it ends, and you launch again to resume)")
    p.add_argument("--heartbeat-seconds", type=heartbeat_seconds, default=10.0, metavar="SECONDS",
                   help="seconds between worker heartbeats")
    p.add_argument("--index-base", type=non_negative_int, default=0, help="first worker index (seed streams)")
    p.add_argument("--log-dir", help="submitit job files and logs (default URL/logs/submitit; must be shared)")
    p.add_argument("--wait", dest="wait", action="store_true", default=None,
                   help="wait for the workers, with a progress line (default with --executor local)")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="return once the jobs are queued")
    p.add_argument("--progress-interval", type=positive_seconds, default=5.0, help="seconds between progress lines")
    r = p.add_argument_group("retrain mode (final trainings instead of search workers)")
    r.add_argument("--retrain", action="store_true",
                   help="each task trains the pending requests of `evo retrain URL ... --no-train` (one at a "
                        "time, each by one task, resuming from its checkpoint; --requeue resumes after a time limit)")
    r.add_argument("--checkpoint-seconds", type=positive_seconds, default=300.0,
                   help="retrain mode: seconds between checkpoints")
    r.add_argument("--lease", type=lease_seconds, default=120.0,
                   help="retrain mode: a claim silent this long is taken over by another task")
    add_config_arguments(p)
    p.set_defaults(func=run)

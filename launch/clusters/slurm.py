"""`evo launch slurm URL -n N`: N workers as a SLURM job array, through submitit.

Each array task runs one ordinary worker (``evo.search.worker``) on the population URL, with its
array index as the worker index. The population is usually a directory on NFS that the
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

Signals: submitit installs its own SIGTERM (ignore) and USR2 (checkpoint and requeue)
handlers in each job, so the worker's would never run. :class:`WorkerJob` replaces them
while the worker runs: ``scancel`` (SIGTERM) and the USR2 that SLURM sends 90 s before the
time limit (or on preemption) stop the worker cleanly within a second (the child in
training is abandoned, a final ``stopped`` heartbeat is written) and the task ends
normally, so submitit does not requeue it. With ``--requeue`` a USR2 stop then goes
through submitit's own requeue (``scontrol requeue`` of that task, up to 3 times after a
time limit); the requeued worker resumes from the store like any new one.

``--retrain``: the tasks train the population's final-training requests instead
(``launch.clusters.retrain_job``; write them with ``evo retrain URL --top K --no-train``): each task
claims one request at a time, checkpoints every ``--checkpoint-seconds`` and on
scancel/time limit, and a requeued or new task resumes from the checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from .slurm_wait import wait_for_array
from ..commands.init import check_run_options, ensure_run
from ..commands.worker import _interval
from ..errors import UserError
from ..options import add_command, device, lease_seconds, non_negative_int, positive_int, positive_seconds


# Default --max-seconds: the time limit minus this margin. SLURM sends USR2 90 s before the
# limit (submitit's signal_delay_s), which abandons the child in training; the rest covers
# the worker's start-up (imports, loading the dataset: the limit counts from the job's
# start, --max-seconds from the worker's) and lets the child that is training when
# --max-seconds passes finish before that signal, for children of up to ~3 minutes.
MAX_SECONDS_MARGIN = 300
# Below this limit the margin would eat most of the job: no default, the USR2 stops it.
MIN_LIMIT_FOR_DEFAULT = 2 * MAX_SECONDS_MARGIN


def default_max_seconds(time_min: float) -> float | None:
    """``--max-seconds`` when none is given: ``time_min`` minutes less the margin, or None
    for limits under 10 minutes (the pre-timeout USR2 then stops the worker)."""
    limit = time_min * 60
    return float(limit - MAX_SECONDS_MARGIN) if limit >= MIN_LIMIT_FOR_DEFAULT else None


def _preempt_signal() -> signal.Signals:
    """The signal submitit asks SLURM to send before the time limit and on preemption."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return getattr(signal, name, signal.SIGUSR2)


class WorkerJob:
    """The body of one array task (submitit pickles this object and calls it in the job)."""

    requeue = False

    def __call__(self, url: str, index: int, device: str, max_seconds: float | None,
                 max_individuals: int | None, threads: int | None, log_path: str | None = None,
                 heartbeat_seconds: float = 10.0) -> dict[str, Any]:
        """Run a worker until its limits or a stop signal; return what it did."""
        if threads and "OMP_NUM_THREADS" not in os.environ:
            os.environ["OMP_NUM_THREADS"] = str(threads)  # read by the trainer before torch starts
        from evo.search.assemble import run_worker
        from evo.search.stopping import StopSignals
        from evo.search.worker import WorkerOptions

        from ..commands.worker import configure_logging

        configure_logging()
        _log_submitit_once()
        preempt = _preempt_signal()
        submitit_handler = signal.getsignal(preempt)
        options = WorkerOptions(max_seconds=max_seconds, max_individuals=max_individuals,
                                log_path=_job_log_path(log_path), heartbeat_interval=heartbeat_seconds)
        stop = StopSignals((signal.SIGTERM, signal.SIGINT, signal.SIGHUP, preempt))
        with stop:
            # Keep ours after the worker returns: submitit's USR2 handler would otherwise
            # raise into the writing of the job's result, or requeue a job that is done.
            stop.keep_installed()
            stats = run_worker(url, options, device=device, index=index, stop=stop)
        result = {"worker": stats.worker_id, "index": index, "published": stats.published,
                  "killed": stats.killed, "race_losses": stats.race_losses, "failures": stats.failures,
                  "best_fitness": stats.best_fitness, "stopped_by": stats.stopped_by}
        log = logging.getLogger("evo.search.worker")
        log.info("worker %s %s: published=%d killed=%d failures=%d", stats.worker_id,
                 f"stopped by {stats.stopped_by}" if stats.stopped_by else "done", stats.published,
                 stats.killed, stats.failures)
        if self.requeue and preempt.name in stop.received and callable(submitit_handler):
            log.info("requeueing this task through submitit (--requeue)")
            try:
                submitit_handler(preempt, None)  # checkpoint() below, scontrol requeue, then exit
            except Exception as exc:  # submitit's "timed-out too many times": the task just ends
                log.warning("not requeued: %s", str(exc).strip().splitlines()[0][:300] if str(exc) else exc)
        return result


class RequeueingWorkerJob(WorkerJob):
    """A :class:`WorkerJob` that submitit may requeue (``--requeue``): submitit calls
    :meth:`checkpoint` to get the job to run again, which is the same worker job (the
    population in the store is all the state there is)."""

    requeue = True

    def checkpoint(self, *args: Any, **kwargs: Any):
        """What submitit runs after requeueing: this same job with the same arguments."""
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self, *args, **kwargs)


def _log_submitit_once() -> None:
    """submitit's logger prints through its own stdout and stderr handlers and propagates to
    the root logger too; in a job both streams are the one log file (stderr_to_stdout), so
    each of its lines appeared two or three times. Keep only its stdout handler."""
    sublog = logging.getLogger("submitit")
    sublog.propagate = False
    for handler in list(sublog.handlers):
        if getattr(handler, "stream", None) is sys.stderr:
            sublog.removeHandler(handler)


def _job_log_path(given: str | None) -> str | None:
    """The task's log file as submitit names it (``%A_%a_0_log.out`` in the log folder)."""
    if given:
        return given
    try:
        import submitit
        return str(submitit.JobEnvironment().paths.stdout)
    except Exception:  # not inside a submitit job (a test calling the job directly)
        return None


worker_job = WorkerJob()


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
        extra: dict[str, Any] = {}
        if args.requeue:
            extra["requeue"] = True   # SLURM may requeue it (scontrol requeue needs that)
        for item in args.sbatch or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UserError(f"--sbatch expects KEY=VALUE, got {item!r}")
            extra[key.lstrip("-")] = value
        if extra:
            params["slurm_additional_parameters"] = extra
    return params


def _device(args: argparse.Namespace) -> str:
    if args.device != "auto":
        return args.device
    return "cuda" if args.gpus_per_worker > 0 else "cpu"


def resume_command(args: argparse.Namespace) -> str:
    """The command that starts this launch's workers again (the run's options are stored)."""
    parts = ["evo", "launch", "slurm", args.url, "-n", str(args.n)]
    if args.executor != "slurm":
        parts += ["--executor", args.executor]
    for name in ("partition", "account", "qos", "constraint", "log_dir"):
        if getattr(args, name):
            parts += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    for name, default in (("gpus_per_worker", 0), ("cpus_per_worker", 4), ("mem_gb", 16), ("time_min", 1440)):
        if getattr(args, name) != default:
            parts += [f"--{name.replace('_', '-')}", f"{getattr(args, name):g}"]
    for item in args.sbatch or []:
        parts += ["--sbatch", item]
    if args.requeue:
        parts.append("--requeue")
    if getattr(args, "retrain", False):
        parts.append("--retrain")
    return shlex.join(parts)


def pending_retrains(url: str) -> list[str]:
    """The population's retrain requests (``evo retrain URL ... --no-train`` writes them);
    UserError when there are none, so that no task is submitted for nothing."""
    from storage import StoreError, open_store

    try:
        rids = open_store(url).list_retrains()
    except StoreError as exc:
        raise UserError(str(exc)) from None
    if not rids:
        raise UserError(f"{url}: no retrain requests; write them first with: evo retrain {url} --top K --no-train")
    return rids


def run(args: argparse.Namespace) -> int:
    try:
        import submitit
    except ImportError:
        raise UserError("evo launch slurm needs submitit: pip install 'evo[launch]'") from None
    from storage import open_store

    from ..commands.launch import default_log_dir

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
            from .retrain_job import RequeueingRetrainJob, RetrainJob

            job = RequeueingRetrainJob() if args.requeue else RetrainJob()
            jobs = executor.map_array(job, [args.url] * n, [device] * n, [threads] * n, [args.lease] * n,
                                      [args.checkpoint_seconds] * n)
        else:
            job = RequeueingWorkerJob() if args.requeue else WorkerJob()
            jobs = executor.map_array(job, [args.url] * n, indices, [device] * n, [max_seconds] * n,
                                      [args.max_individuals] * n, [threads] * n, [None] * n,
                                      [args.heartbeat_seconds] * n)
    except FileNotFoundError:
        raise UserError("sbatch not found: run this on a SLURM login node (or rehearse with --executor local)") from None
    except Exception as exc:  # submitit reports sbatch failures as several exception types
        raise UserError(f"submission failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}") from None
    ids = [j.job_id for j in jobs]
    array_id = str(ids[0]).split("_")[0]
    store = open_store(args.url)
    if args.executor == "slurm":
        store.record_launch(f"slurm-{array_id}", {
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
    from ..commands.init import add_config_arguments

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
    p.add_argument("--max-seconds", type=positive_seconds, metavar="T",
                   help="each worker stops starting children after T seconds (default: --time-min less "
                        f"{MAX_SECONDS_MARGIN // 60} minutes; none below {MIN_LIMIT_FOR_DEFAULT // 60} minutes)")
    p.add_argument("--requeue", action="store_true",
                   help="requeue a task stopped by preemption or its time limit (submitit's requeue; "
                        "default: it ends, and you launch again to resume)")
    p.add_argument("--heartbeat-seconds", type=_interval, default=10.0, metavar="SECONDS",
                   help="seconds between worker heartbeats")
    p.add_argument("--max-individuals", type=positive_int, metavar="K",
                   help="each worker stops after publishing K individuals (default: no limit)")
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

"""SLURM job arrays of search workers through submitit (what `evo launch slurm URL -n N`
submits; the command itself is ``launch.commands.launch_slurm``).

Each array task runs one ordinary worker (``evo.search.worker``) on the population URL, with its
array index as the worker index (:class:`WorkerJob`). :func:`executor_parameters` turns the
command's options into submitit's, :func:`resume_command` is the command that starts the
same launch again, :func:`default_max_seconds` the workers' ``--max-seconds`` for a time
limit, and :func:`pending_retrains` the requests a ``--retrain`` array would train
(``launch.clusters.retrain_job``).

Signals: submitit installs its own SIGTERM (ignore) and USR2 (checkpoint and requeue)
handlers in each job, so the worker's would never run. :class:`WorkerJob` replaces them
while the worker runs: ``scancel`` (SIGTERM) and the USR2 that SLURM sends 90 s before the
time limit (or on preemption) stop the worker cleanly within a second (the child in
training is abandoned, a final ``stopped`` heartbeat is written) and the task ends
normally, so submitit does not requeue it. With ``--requeue`` a USR2 stop then goes
through submitit's own requeue (``scontrol requeue`` of that task, up to 3 times after a
time limit); the requeued worker resumes from the store like any new one.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
from typing import Any

from evo.errors import one_line

from ..errors import UserError
from ..logs import configure_logging
from .submitit_task import log_submitit_once, preempt_signal


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


class WorkerJob:
    """The body of one array task (submitit pickles this object and calls it in the job)."""

    requeue = False

    def __call__(self, url: str, index: int, device: str, max_seconds: float | None,
                 max_individuals: int | None, threads: int | None, log_path: str | None = None,
                 heartbeat_seconds: float = 10.0, max_failed_children: int | None = None) -> dict[str, Any]:
        """Run a worker until its limits, its circuit breaker (``max_failed_children`` children
        in a row failed; None: the worker's default) or a stop signal; return what it did."""
        if threads and "OMP_NUM_THREADS" not in os.environ:
            os.environ["OMP_NUM_THREADS"] = str(threads)  # read by the trainer before torch starts
        from evo.search.assemble import run_worker
        from evo.stopping import StopSignals
        from evo.search.worker import WorkerOptions

        configure_logging()
        log_submitit_once()
        preempt = preempt_signal()
        submitit_handler = signal.getsignal(preempt)
        breaker = {} if max_failed_children is None else {"max_failed_children": max_failed_children}
        options = WorkerOptions(max_seconds=max_seconds, max_individuals=max_individuals,
                                log_path=_job_log_path(log_path), heartbeat_interval=heartbeat_seconds, **breaker)
        stop = StopSignals((signal.SIGTERM, signal.SIGINT, signal.SIGHUP, preempt))
        with stop:
            # Keep ours after the worker returns: submitit's USR2 handler would otherwise
            # raise into the writing of the job's result, or requeue a job that is done.
            stop.keep_installed()
            stats = run_worker(url, options, device=device, index=index, stop=stop)
        result = {"worker": stats.worker_id, "index": index, "published": stats.published,
                  "killed": stats.killed, "race_losses": stats.race_losses, "failures": stats.failures,
                  "best_fitness": stats.best_fitness, "stopped_by": stats.stopped_by, "failed": stats.failed}
        log = logging.getLogger("evo.search.worker")
        log.info("worker %s %s: published=%d killed=%d failures=%d", stats.worker_id,
                 f"stopped by {stats.stopped_by}" if stats.stopped_by else "done", stats.published,
                 stats.killed, stats.failures)
        if stats.failed:
            log.error("worker %s failed: %s", stats.worker_id, stats.failed)
        if self.requeue and preempt.name in stop.received and callable(submitit_handler):
            log.info("requeueing this task through submitit (--requeue)")
            try:
                submitit_handler(preempt, None)  # checkpoint() below, scontrol requeue, then exit
            except Exception as exc:  # submitit's "timed-out too many times": the task just ends
                log.warning("not requeued: %s", one_line(exc))
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
    if getattr(args, "max_failed_children", None) is not None:
        parts += ["--max-failed-children", str(args.max_failed_children)]
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
        rids = open_store(url).retrains.list_retrains()
    except StoreError as exc:
        raise UserError(str(exc)) from None
    if not rids:
        raise UserError(f"{url}: no retrain requests; write them first with: evo retrain {url} --top K --no-train")
    return rids

"""The body of a SLURM array task in retrain mode (`evo launch slurm URL -n K --retrain`).

Each task trains the population's pending retrain requests (``evo.train.retrain.RetrainRunner``),
one after another, until none is left; the claims in the store make sure that no two tasks
train one request. As with workers (``launch.clusters.slurm.WorkerJob``), submitit's own signal
handlers are replaced while the task runs: ``scancel`` (SIGTERM) and the USR2 that SLURM
sends before the time limit or on preemption make the runner write a checkpoint and stop at
the next step; with ``--requeue`` a USR2 stop then goes through submitit's requeue, and the
requeued task resumes from that checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from evo.errors import one_line


class RetrainJob:
    """One array task of retrain mode (submitit pickles this object and calls it in the job)."""

    requeue = False

    def __call__(self, url: str, device: str, threads: int | None, lease: float, checkpoint_seconds: float,
                 retry_failed: bool = False) -> dict[str, Any]:
        """Train pending requests until none is left or a stop signal comes; return counts."""
        if threads and "OMP_NUM_THREADS" not in os.environ:
            os.environ["OMP_NUM_THREADS"] = str(threads)
        from evo.search.heartbeat import scheduler_identity
        from evo.train.retrain import RetrainRunner, RunnerOptions
        from evo.stopping import StopRequested, StopSignals
        from storage import open_store

        from ..export import export_files
        from ..views.retrain_report import Printer
        from ..logs import configure_logging
        from .submitit_task import log_submitit_once, preempt_signal

        configure_logging()
        log_submitit_once()
        preempt = preempt_signal()
        submitit_handler = signal.getsignal(preempt)
        stop = StopSignals((signal.SIGTERM, signal.SIGINT, signal.SIGHUP, preempt))
        reports: list[Any] = []
        with stop:
            stop.keep_installed()
            options = RunnerOptions(device=device, lease=lease, checkpoint_seconds=checkpoint_seconds,
                                    retry_failed=retry_failed, owner={"scheduler": scheduler_identity()})
            runner = RetrainRunner(open_store(url), exporter=export_files, options=options, progress=Printer(),
                                   stop=stop)
            try:
                runner.run_pending(done=reports)
            except StopRequested:
                pass
        result = {status: sum(1 for r in reports if r.status == status)
                  for status in ("done", "busy", "already_done", "stopped", "lost", "failed")}
        result["stopped_by"] = stop.requested
        log = logging.getLogger("evo.train.retrain")
        log.info("retrain task: %s", ", ".join(f"{k} {v}" for k, v in result.items() if k != "stopped_by"))
        if self.requeue and preempt.name in stop.received and callable(submitit_handler):
            log.info("requeueing this task through submitit (--requeue); it resumes from the checkpoint")
            try:
                submitit_handler(preempt, None)
            except Exception as exc:  # submitit's "timed-out too many times": the task just ends
                log.warning("not requeued: %s", one_line(exc))
        return result


class RequeueingRetrainJob(RetrainJob):
    """A :class:`RetrainJob` that submitit may requeue (``--requeue``): it runs again with the
    same arguments and resumes from the store's checkpoints."""

    requeue = True

    def checkpoint(self, *args: Any, **kwargs: Any):
        """What submitit runs after requeueing: this same job with the same arguments."""
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self, *args, **kwargs)

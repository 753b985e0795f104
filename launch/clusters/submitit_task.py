"""What every submitit array task of evo does around its work (the search workers of
``launch.clusters.slurm`` and the final trainings of ``launch.clusters.retrain_job``): log
submitit's lines once, and know the signal that SLURM sends before the time limit and on
preemption (submitit's USR2 by default), which the task catches to stop cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import sys


def preempt_signal() -> signal.Signals:
    """The signal submitit asks SLURM to send before the time limit and on preemption."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return getattr(signal, name, signal.SIGUSR2)


def log_submitit_once() -> None:
    """submitit's logger prints through its own stdout and stderr handlers and propagates to
    the root logger too; in a job both streams are the one log file (stderr_to_stdout), so
    each of its lines appeared two or three times. Keep only its stdout handler."""
    sublog = logging.getLogger("submitit")
    sublog.propagate = False
    for handler in list(sublog.handlers):
        if getattr(handler, "stream", None) is sys.stderr:
            sublog.removeHandler(handler)

"""The launchers' local child processes (the workers of `evo launch URL -n N`, the trainings
of `evo retrain URL -j N`): where their logs go, SIGTERM when their launcher dies, and
stopping them (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def die_with_parent() -> None:
    """In the worker (before exec): get SIGTERM when the launcher dies (Linux prctl)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker just runs until its own limits


def default_log_dir(url: str) -> Path:
    """Worker logs go beside a local population, else under ./evo-logs."""
    if "://" not in url or url.startswith("file://"):
        return Path(url.removeprefix("file://")) / "logs"
    return Path("evo-logs")


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

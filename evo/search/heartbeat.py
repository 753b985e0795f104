"""A worker's liveness: who it is (host, pid, scheduler job) and a thread that writes its
heartbeat every few seconds whatever the main thread is doing (loading a dataset, a long
training step), so ``evo status`` can call a worker lost after a few missed beats."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

from evo.errors import one_line

log = logging.getLogger("evo.search.worker")


def make_worker_id() -> str:
    """host-pid-random: unique per process, readable in `evo status`."""
    host = socket.gethostname().split(".")[0][:32] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def scheduler_identity(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Which scheduler job this process is, from its environment (empty when none).

    SLURM: ``kind=slurm``, ``job_id`` and, in an array, ``array_job_id`` and
    ``array_task_id``. Kubernetes: ``kind=kubernetes``, ``pod`` (the pod name, which
    Kubernetes puts in HOSTNAME) and ``index`` (JOB_COMPLETION_INDEX of an Indexed Job).
    """
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value[:128] if value else None

    if get("SLURM_JOB_ID"):
        out = {"kind": "slurm", "job_id": get("SLURM_JOB_ID")}
        if get("SLURM_ARRAY_JOB_ID") and get("SLURM_ARRAY_TASK_ID"):
            out["array_job_id"] = get("SLURM_ARRAY_JOB_ID")
            out["array_task_id"] = get("SLURM_ARRAY_TASK_ID")
        return out
    if get("KUBERNETES_SERVICE_HOST") or get("JOB_COMPLETION_INDEX"):
        out = {"kind": "kubernetes"}
        if get("HOSTNAME"):
            out["pod"] = get("HOSTNAME")
        if get("JOB_COMPLETION_INDEX"):
            out["index"] = get("JOB_COMPLETION_INDEX")
        return out
    return {}


class HeartbeatThread(threading.Thread):
    """Calls ``write`` every ``interval`` seconds, and soon after :meth:`poke` (a state
    change), at most once per ``min_gap`` seconds, until :meth:`halt`. A failed write is
    logged (once per kind of error) and retried at the next beat: liveness must never stop
    the worker."""

    def __init__(self, write: Callable[[], None], interval: float, min_gap: float = 2.0):
        super().__init__(name="evo-heartbeat", daemon=True)
        self.write = write
        self.interval = interval
        self.min_gap = min(min_gap, interval)
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._errors: set[str] = set()

    def poke(self) -> None:
        """Write soon (the state changed)."""
        self._wake.set()

    def halt(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for a write in progress (at most ``timeout`` s)."""
        self._halt.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        last = float("-inf")
        while True:
            poked = self._wake.wait(timeout=max(0.0, last + self.interval - time.monotonic()))
            if self._halt.is_set():
                return
            gap = last + self.min_gap - time.monotonic()
            if poked and gap > 0 and self._halt.wait(gap):
                return
            self._wake.clear()
            try:
                self.write()
            except Exception as exc:  # the store may be briefly unreachable; the next beat retries
                kind = type(exc).__name__
                if kind not in self._errors:
                    self._errors.add(kind)
                    log.warning("heartbeat not written (will retry every %.0f s): %s", self.interval,
                                one_line(exc, with_type=True))
            last = time.monotonic()

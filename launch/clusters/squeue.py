"""What SLURM's queue says about evo's jobs (``squeue``), for ``evo launch slurm --wait`` and
``evo status``. Torch-free; every function returns None when squeue is not on PATH or does
not answer, so callers simply say nothing extra then."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

# Pending reasons that never clear by waiting: the request itself is impossible for the
# partition, account or QOS (an administrator or a new submission must change something).
# "Resources", "Priority", "ReqNodeNotAvail" and the Grp* limits clear as other jobs end.
HOPELESS = {
    "PartitionConfig": "the request (CPUs, memory, GPUs) is larger than any node of the partition, "
                       "or breaks the partition's limits",
    "PartitionNodeLimit": "the number of nodes is outside the partition's limits",
    "PartitionTimeLimit": "the time limit (--time-min) is above the partition's maximum",
    "BadConstraints": "no node has the requested features (--constraint)",
    "InvalidAccount": "the account does not exist or may not use this partition",
    "InvalidQOS": "the QOS does not exist or may not be used here",
    "DependencyNeverSatisfied": "a job it depends on can no longer succeed",
}
_PER_JOB_LIMIT = re.compile(r"(QOS|Assoc)(Max|Min)\w*PerJob\w*|(QOS|Assoc)Max\w*WallDuration\w*|QOSMin\w+")
FINISHED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
            "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT"}


@dataclass(frozen=True)
class QueuedTask:
    """One line of squeue: ``job_id`` as SLURM prints it (``123_4`` for array task 4)."""

    job_id: str
    state: str
    reason: str

    @property
    def array_job_id(self) -> str:
        """The array's job id (the job id itself for a job that is not an array)."""
        return self.job_id.split("_", 1)[0]


def never_starts(reason: str) -> str | None:
    """Why a pending job with this squeue reason will never start (None: it may still start)."""
    if reason in HOPELESS:
        return HOPELESS[reason]
    if _PER_JOB_LIMIT.fullmatch(reason):
        return "the request is beyond a per-job limit of the QOS or association"
    return None


def squeue(job_ids: Iterable[str], timeout: float = 15.0) -> list[QueuedTask] | None:
    """The queue's tasks of these jobs (array job ids give every task), one per array task.

    Finished jobs are not listed (squeue shows only queued, running and completing ones).
    None when squeue is missing or fails for another reason than unknown job ids.
    """
    ids = sorted({str(j) for j in job_ids if re.fullmatch(r"\d+(_\d+)?", str(j))})
    exe = shutil.which("squeue")
    if not ids or exe is None:
        return None if exe is None else []
    try:
        done = subprocess.run([exe, "-h", "-r", "-j", ",".join(ids), "-o", "%i|%T|%r"],
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        # every id unknown (finished long ago): squeue says so and exits 1
        return [] if "Invalid job id" in done.stderr else None
    tasks = []
    for line in done.stdout.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) == 3 and parts[0]:
            tasks.append(QueuedTask(*parts))
    return tasks


def summarize_jobs(tasks: list[QueuedTask]) -> list[dict]:
    """Per array job: task counts by state, pending reasons, and why it never starts if so."""
    by_job: dict[str, list[QueuedTask]] = {}
    for t in tasks:
        by_job.setdefault(t.array_job_id, []).append(t)
    out = []
    for job_id, ts in sorted(by_job.items()):
        reasons = Counter(t.reason for t in ts if t.state == "PENDING")
        stuck = {r: never_starts(r) for r in reasons if never_starts(r)}
        out.append({"job_id": job_id, "states": dict(Counter(t.state for t in ts)),
                    "pending_reasons": dict(reasons), "never_starts": stuck})
    return out


def describe(job: dict) -> str:
    """One line for a job summary from :func:`summarize_jobs`."""
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(job["states"].items()))
    text = f"slurm job {job['job_id']}: {states}"
    for reason, n in sorted(job["pending_reasons"].items()):
        why = job["never_starts"].get(reason)
        text += f"; pending reason {reason}" + (f" x{n}" if n != sum(job["pending_reasons"].values()) else "")
        if why:
            text += f", which never clears: {why} (scancel {job['job_id']})"
    return text

"""Waiting for a submitted `evo launch slurm` array: a progress line until every task has
ended (from squeue for SLURM, from submitit's job files for the local executor), one line
and exit 1 when the array stays pending for a reason that never clears, Ctrl-C cancels the
jobs, and at the end how the workers stopped and which tasks failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import UserError

STOP_CAUSES = {"SIGTERM": "scancel or preemption", "SIGUSR2": "the time limit or preemption",
               "SIGINT": "interrupted", "SIGHUP": "hang-up"}


def wait_for_array(args: argparse.Namespace, store, jobs, array_id: str, folder: Path, resume: str) -> int:
    """Show progress until every task has ended; one line and exit 1 if the array can never start.
    ``resume``: the command that starts the launch again (named in the final summary)."""
    from . import squeue as queue_reader
    from ..views.progress import Progress, summarize

    progress = Progress(store.population, store.history, interval=args.progress_interval)
    use_squeue = args.executor == "slurm"
    ended: set[str] = set()
    next_queue_check = 0.0

    class Handle:
        def __init__(self, job):
            self.job = job

        def poll(self):
            return 0 if self.job.job_id in ended else None

    handles = [Handle(j) for j in jobs]
    try:
        while len(ended) < len(jobs):
            queue = None
            if use_squeue and time.monotonic() >= next_queue_check:
                next_queue_check = time.monotonic() + 2.0
                queue = queue_reader.squeue([array_id])
            listed = {t.job_id: t for t in queue or []}
            for j in jobs:
                if j.job_id in ended:
                    continue
                task = listed.get(j.job_id)
                if j.paths.result_pickle.exists() or (queue is not None and (task is None
                                                                              or task.state in queue_reader.FINISHED)):
                    ended.add(j.job_id)
                elif not use_squeue and j.done():
                    ended.add(j.job_id)
            stuck = [t for t in listed.values() if t.state == "PENDING" and queue_reader.never_starts(t.reason)]
            if stuck:
                t = stuck[0]
                raise UserError(f"slurm job {array_id}: {len(stuck)} task(s) pending with reason {t.reason}, "
                                f"which never clears: {queue_reader.never_starts(t.reason)}; stopped waiting "
                                f"(the job stays queued: scancel {array_id})")
            progress.update(handles)
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ncancelling the jobs...", flush=True)
        for j in jobs:
            j.cancel(check=False)
        return 130
    finally:
        progress.close()
    failed = []
    stops: dict[str, int] = {}
    for j in jobs:
        if not j.paths.result_pickle.exists():
            failed.append((j.job_id, "ended without a result (cancelled or killed before the worker stopped)"))
            continue
        try:
            result = j.result()
        except Exception as exc:
            failed.append((j.job_id, (str(exc).strip().splitlines()[-1:] or [type(exc).__name__])[0]))
            continue
        if isinstance(result, dict) and result.get("stopped_by"):
            stops[result["stopped_by"]] = stops.get(result["stopped_by"], 0) + 1
    if stops:
        print("workers stopped cleanly by " + ", ".join(
            f"{sig} ({STOP_CAUSES.get(sig, 'a signal')}): {n}" for sig, n in sorted(stops.items())), flush=True)
    print(summarize(store.history, args.url, folder, resume=resume), flush=True)
    if failed:
        job_id, tail = failed[0]
        print(f"{len(failed)} job(s) failed; job {job_id}: {tail[:300]} (logs in {folder}/)", file=sys.stderr)
        return 1
    return 0

"""`evo worker URL`: one stateless worker; start as many as you like, anywhere.

SIGTERM, SIGINT, SIGHUP and SIGUSR2 stop it cleanly within a second (the child in training
is abandoned, a publish in progress finishes, a final ``stopped`` heartbeat is written);
it then exits with 128 + the signal's number (143 for SIGTERM), so that a scheduler that
restarts failed workers (a Kubernetes Job) replaces one that was stopped from outside.

The circuit breaker (``--max-failed-children K``, default 10): after K children in a row
failed (to be trained, or to be made by the strategy or the space) the worker stops, its final
heartbeat says ``failed`` and why (``evo status`` shows it), and it exits with
:data:`EXIT_FAILED` after printing ``evo worker: error: REASON`` on stderr. Errors of the store
never trip it: an outage is waited out. See :mod:`evo.search.worker`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from ..errors import UserError
from ..logs import configure_logging
from ..options import device, heartbeat_seconds, non_negative_int, positive_int, positive_seconds


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)
EXIT_FAILED = 3   # the circuit breaker stopped the worker (2 is a one-line error before it started)


def own_log_path() -> str | None:
    """This process's log file: ``$EVO_WORKER_LOG`` (set by ``evo launch``), else the
    regular file that stderr is redirected to (``evo worker URL 2> w.log``), else None."""
    path = os.environ.get("EVO_WORKER_LOG", "").strip()
    if path:
        return path[:1024]
    try:
        if os.path.isfile("/proc/self/fd/2"):
            return os.readlink("/proc/self/fd/2")[:1024]
    except OSError:
        pass
    return None


def crash_point(text: str):
    """The fault hook of ``--crash-at POINT[#N]`` (``storage.crash_hook``); an argparse error
    naming the valid points otherwise."""
    from storage import crash_hook

    try:
        return crash_hook(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def rollup_settings(text: str) -> tuple[float, float, int]:
    """``AGE,INTERVAL,RECORDS`` of the hidden ``--rollup`` option (tests, chaos runs)."""
    try:
        age, interval, records = text.split(",")
        out = (float(age), float(interval), int(records))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected AGE,INTERVAL,RECORDS (seconds, seconds, count), got {text!r}") from None
    if not (out[0] >= 0 and out[1] > 0 and out[2] >= 1):
        raise argparse.ArgumentTypeError(f"need AGE >= 0, INTERVAL > 0, RECORDS >= 1, got {text!r}")
    return out


def run(args: argparse.Namespace) -> int:
    from evo.search.assemble import run_worker
    from evo.config import ConfigError
    from evo.search.observers import EventLogObserver
    from evo.stopping import StopSignals
    from evo.search.worker import WorkerOptions

    configure_logging(args.quiet)
    index = args.index
    if index is None:  # array jobs: SLURM and Kubernetes Indexed Jobs give each worker an index
        for var in ("EVO_WORKER_INDEX", "JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID"):
            if os.environ.get(var, "").isdigit():
                index = int(os.environ[var])
                break
    rollup = {}
    if args.rollup:
        rollup = dict(zip(("rollup_min_age", "rollup_interval", "rollup_records"), args.rollup))
    options = WorkerOptions(max_individuals=args.max_individuals, max_seconds=args.max_seconds,
                            heartbeat_interval=args.heartbeat_seconds, log_path=own_log_path(),
                            max_failed_children=args.max_failed_children, **rollup)
    try:
        observers = [EventLogObserver(args.event_log)] if args.event_log else []
    except OSError as exc:
        raise UserError(f"{args.event_log}: cannot open the event log: {exc.strerror or exc}") from None
    try:
        with StopSignals(STOP_SIGNALS) as stop:
            stats = run_worker(args.url, options, device=args.device, index=index, observers=observers,
                               stop=stop, fault=args.crash_at)
    except ConfigError as exc:
        raise UserError(f"{args.url}/config.json: {exc}") from None
    best = f"{stats.best_fitness:.4f}" if stats.best_fitness is not None else "-"
    how = f"stopped by {stats.stopped_by}" if stats.stopped_by else ("failed" if stats.failed else "done")
    logging.getLogger("evo.search.worker").info(
        "worker %s %s: published=%d killed=%d race_losses=%d failures=%d best=%s",
        stats.worker_id, how, stats.published, stats.killed, stats.race_losses, stats.failures, best)
    if stats.stopped_by:
        return 128 + int(getattr(signal, stats.stopped_by, signal.SIGTERM))
    if stats.failed:
        print(f"evo worker: error: {stats.failed}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return 0


def register(sub) -> None:
    p = sub.add_parser("worker", help="run one worker on a population (loops until a limit)")
    p.add_argument("url", help="population directory: PATH, file://PATH, gs://BUCKET/PREFIX")
    p.add_argument("--max-individuals", type=positive_int, metavar="K", help="stop after publishing K individuals (default: no limit)")
    p.add_argument("--max-seconds", type=positive_seconds, metavar="T", help="stop starting new children after T seconds (default: no limit)")
    p.add_argument("--device", type=device(), default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--index", type=non_negative_int, help="worker index (seeds its random stream; default: from "
                   "EVO_WORKER_INDEX / JOB_COMPLETION_INDEX / SLURM_ARRAY_TASK_ID, else fresh entropy)")
    p.add_argument("--max-failed-children", type=positive_int, default=10, metavar="K",
                   help="stop (exit 3, heartbeat 'failed' with the reason) after K children in a row failed to "
                        "be made or trained: a broken space, evaluator, dataset or device (default 10)")
    p.add_argument("--heartbeat-seconds", type=heartbeat_seconds, default=10.0, metavar="SECONDS",
                   help="seconds between heartbeats; evo status calls a worker lost after 5 missed (default 10)")
    p.add_argument("--event-log", metavar="FILE",
                   help="append one JSON line per publish, kill and lost kill race to FILE (many workers may "
                        "share one local file), for `evo audit URL --events FILE`")
    p.add_argument("--quiet", action="store_true", help="only warnings")
    # Tests only: SIGKILL this worker at a step of the store's protocols (storage.crash.POINTS).
    p.add_argument("--crash-at", type=crash_point, metavar="POINT[#N]", help=argparse.SUPPRESS)
    # Tests and chaos runs only: history roll-ups of younger records, more often, smaller.
    p.add_argument("--rollup", type=rollup_settings, metavar="AGE,INTERVAL,RECORDS", help=argparse.SUPPRESS)
    p.set_defaults(func=run)

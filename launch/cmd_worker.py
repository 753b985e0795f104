"""`evo worker URL`: one stateless worker; start as many as you like, anywhere."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from .errors import UserError
from .options import device, non_negative_int, positive_int, positive_seconds


def configure_logging(quiet: bool = False) -> None:
    """One line per event on stderr, prefixed with time and pid."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format=f"%(asctime)s [{os.getpid()}] %(message)s", datefmt="%H:%M:%S", stream=sys.stderr,
    )


def _terminate(signum, frame):
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from evo.config import ConfigError
    from evo.worker import WorkerOptions, run_worker

    configure_logging(args.quiet)
    signal.signal(signal.SIGTERM, _terminate)  # a clean stop still writes a final heartbeat
    index = args.index
    if index is None:  # array jobs: SLURM and Kubernetes Indexed Jobs give each worker an index
        for var in ("EVO_WORKER_INDEX", "JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID"):
            if os.environ.get(var, "").isdigit():
                index = int(os.environ[var])
                break
    options = WorkerOptions(url=args.url, max_individuals=args.max_individuals, max_seconds=args.max_seconds,
                            device=args.device, index=index)
    try:
        stats = run_worker(options)
    except ConfigError as exc:
        raise UserError(f"{args.url}/config.json: {exc}") from None
    except RuntimeError as exc:
        if "CUDA" in str(exc) or "device" in str(exc):
            raise UserError(str(exc)) from None
        raise
    best = f"{stats.best_fitness:.4f}" if stats.best_fitness is not None else "-"
    logging.getLogger("evo.worker").info(
        "worker %s done: published=%d killed=%d race_losses=%d failures=%d best=%s",
        stats.worker_id, stats.published, stats.killed, stats.race_losses, stats.failures, best)
    return 0


def register(sub) -> None:
    p = sub.add_parser("worker", help="run one worker on a population (loops until a limit)")
    p.add_argument("url", help="population directory: PATH, file://PATH, gs://BUCKET/PREFIX")
    p.add_argument("--max-individuals", type=positive_int, metavar="K", help="stop after publishing K individuals (default: no limit)")
    p.add_argument("--max-seconds", type=positive_seconds, metavar="T", help="stop starting new children after T seconds (default: no limit)")
    p.add_argument("--device", type=device(), default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--index", type=non_negative_int, help="worker index (seeds its random stream; default: from "
                   "EVO_WORKER_INDEX / JOB_COMPLETION_INDEX / SLURM_ARRAY_TASK_ID, else fresh entropy)")
    p.add_argument("--quiet", action="store_true", help="only warnings")
    p.set_defaults(func=run)

"""A worker process's own settings (``WorkerOptions``) and what it did (``WorkerStats``);
plain data, re-exported by :mod:`evo.search.worker`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker process runs (everything about the run itself is in config.json)."""

    max_individuals: int | None = None   # stop after publishing this many
    max_seconds: float | None = None      # stop starting new children after this long
    heartbeat_interval: float = 10.0      # seconds between heartbeats (evo status: lost after 5 missed)
    log_path: str | None = None           # where this worker's log goes, shown by evo status
    worker_id: str | None = None          # default: host-pid-random
    # history roll-ups in passing (storage.rollup): records older than rollup_min_age seconds,
    # looked for at most every rollup_interval seconds, rollup_records per segment
    rollup_min_age: float = 600.0
    rollup_interval: float = 120.0
    rollup_records: int = 1000
    # The circuit breaker: stop (state "failed", a non-zero exit) after this many children in a
    # row failed, counting steps that the strategy or the space failed (an exception that is
    # neither the store's nor the child's evaluation) as failed children too. A child that
    # cannot be trained costs that child; ten in a row is no longer bad luck but a broken
    # space, evaluator, dataset or device, and a worker that went on would burn its
    # allocation making nothing while its heartbeat looked healthy. Store errors never count:
    # an outage is waited out (backing off), however long it lasts.
    max_failed_children: int = 10

    def __post_init__(self) -> None:
        interval = self.heartbeat_interval
        if not (isinstance(interval, (int, float)) and 0 < interval <= 3600):
            raise ValueError(f"heartbeat interval must be in (0, 3600] seconds, got {interval!r}")
        if self.max_individuals is not None and self.max_individuals < 1:
            raise ValueError(f"max_individuals must be >= 1, got {self.max_individuals}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")
        if not (isinstance(self.max_failed_children, int) and self.max_failed_children >= 1):
            raise ValueError(f"max_failed_children must be >= 1, got {self.max_failed_children!r}")
        if not (self.rollup_min_age >= 0 and self.rollup_interval > 0 and self.rollup_records >= 1):
            raise ValueError("roll-up settings must be: age >= 0, interval > 0, records >= 1")


@dataclass
class WorkerStats:
    """What a worker did, also written into its heartbeat."""

    worker_id: str
    published: int = 0
    killed: int = 0
    race_losses: int = 0
    failures: int = 0                     # children that failed (to be made or trained)
    step_errors: int = 0                  # steps the store made fail (retried after a pause)
    best_fitness: float | None = None
    started: float = field(default_factory=time.time)
    stopped_by: str | None = None        # the signal that stopped it (None: a limit, or still running)
    failed: str | None = None            # why the circuit breaker stopped it (one line), if it did

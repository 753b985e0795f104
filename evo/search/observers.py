"""Observers of a worker: whatever wants to hear about its publishes, kills and lost kill
races (an event log for ``evo audit --events``, a benchmark, a test) without the worker
knowing who listens. The CLI or a test passes them in; the library reads no environment."""

from __future__ import annotations

import os
from typing import Any, Callable


class WorkerObserver:
    """Base class: every hook does nothing. Hooks run in the worker's main thread and must
    be quick; an exception in one is the observer's bug and propagates."""

    def born(self, ident: str, parent: str | None, fitness: float, worker: str, time: float) -> None:
        """A child was just published (before any kill: a crash then still leaves this)."""

    def published(self, record: dict[str, Any]) -> None:
        """A child's step is done (published, victim killed); ``record`` is its log record."""

    def killed(self, victim: str, worker: str, time: float) -> None:
        """This worker killed ``victim`` (it created the history record)."""

    def lost_race(self, victim: str, worker: str, time: float) -> None:
        """Another worker killed ``victim`` first (or it was gone)."""


class OnPublish(WorkerObserver):
    """Calls ``callback(record)`` for every published child."""

    def __init__(self, callback: Callable[[dict[str, Any]], Any]):
        self.callback = callback

    def published(self, record: dict[str, Any]) -> None:
        self.callback(record)


class EventLogObserver(WorkerObserver):
    """Appends one JSON line per publish, won kill and lost kill race to an event log
    (``evo.audit.EventLog``: O_APPEND, one write per line, so many workers can share one
    file), from which ``evo audit --events`` proves no publish was lost and no victim had
    two killers. Set by ``evo worker --event-log FILE``."""

    def __init__(self, path: str | os.PathLike[str]):
        from evo.audit import EventLog

        self.log = EventLog(path)

    def born(self, ident: str, parent: str | None, fitness: float, worker: str, time: float) -> None:
        self.log.write("publish", id=ident, worker=worker, time=time, parent=parent, fitness=fitness)

    def killed(self, victim: str, worker: str, time: float) -> None:
        self.log.write("kill", id=victim, worker=worker, time=time)

    def lost_race(self, victim: str, worker: str, time: float) -> None:
        self.log.write("race_loss", id=victim, worker=worker, time=time)

"""Stopping a worker cleanly on a signal (SIGTERM, SIGINT, SIGHUP, a scheduler's USR2).

A worker's only state is in the store, so a clean stop is simple: abandon the child being
made (it was never published, so nothing is lost but its training time), let a publish
and kill that has begun finish (a few small writes, well under a second), write a final
``stopped`` heartbeat and exit. To stop *within a second* even in the middle of a long
training step or while loading a dataset, the handler raises :class:`StopRequested` in the
main thread right where it is, unless the worker is inside a :meth:`StopSignals.critical`
section (publish + kill); there it only records the request and the worker stops right
after the section. Cutting a publish would be safe too (the store survives a SIGKILL at
any point), but it would leave an orphaned payload for ``evo check --repair`` and, between
publish and kill, one individual too many for a while; finishing costs milliseconds.

``StopRequested`` derives from BaseException, so no ``except Exception`` (a failed child,
a transient store error) can swallow it or count it as a failure.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterable, Iterator


class StopRequested(BaseException):
    """A stop signal arrived; ``signal_name`` is e.g. ``SIGTERM``."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


class StopSignals:
    """Turns the given signals into a clean stop of the code running in the main thread.

    Use as a context manager around the worker (``with StopSignals([signal.SIGTERM]) as
    stop: ...``): it installs its handler for each signal and restores the previous ones on
    exit. ``received`` lists every stop signal that arrived, in order; ``requested`` is the
    first. After :meth:`close` (the worker is done) signals are only recorded.
    """

    def __init__(self, signals: Iterable[int] = ()):
        self.signals = [signal.Signals(s) for s in signals]
        self.received: list[str] = []
        self._critical = 0
        self._closed = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> str | None:
        """Name of the first stop signal received (None while none came)."""
        return self.received[0] if self.received else None

    def __enter__(self) -> StopSignals:
        if self.signals and threading.current_thread() is not threading.main_thread():
            raise RuntimeError("stop signals can only be handled in the main thread")
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def keep_installed(self) -> None:
        """Leave the handlers in place after the context exits (they then only record):
        a late signal (a scheduler's USR2 while the process is writing its result) must
        not reach a handler that would raise in the middle of that."""
        self._previous.clear()

    def close(self) -> None:
        """From now on, a signal is only recorded (the worker has finished)."""
        self._closed = True

    def _handle(self, signum, frame) -> None:
        first = not self.received
        self.received.append(signal.Signals(signum).name)
        if first and not self._closed and not self._critical:
            raise StopRequested(self.received[0])

    def request(self, name: str) -> None:
        """Ask for a stop from code (as if signal ``name`` had arrived), without raising."""
        self.received.append(name)

    def check(self) -> None:
        """Raise StopRequested if a stop was requested (called between children)."""
        if self.received and not self._closed:
            raise StopRequested(self.received[0])

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A section that a signal must not cut (publish + kill): it is recorded, and the
        stop happens at the next :meth:`check`."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1

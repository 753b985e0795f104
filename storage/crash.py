"""Fault hooks: the store calls one at each step boundary of its protocols, so that tests can
SIGKILL a writer at an exact step (and check that nothing torn is ever visible).

A fault hook is any callable ``hook(point)``; the store and the local backend call it with
the names in :data:`POINTS`. It is a collaborator passed in by whoever builds the store
(``open_store(url, fault=crash_hook("kill:after_claim"))``); nothing here reads the
environment. Without one, a point costs one call of :func:`no_fault`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

FaultHook = Callable[[str], None]
"""Called with the name of each step boundary the store reaches; may kill the process."""

# Every crash point in the storage code, in protocol order (tests iterate over these).
POINTS = (
    "write:after_temp",        # local write: temp file written, not yet renamed into place
    "create:after_temp",       # local create: temp file written, not yet linked
    "create:after_link",       # local create: linked (visible), temp not yet removed
    "publish:after_payload",   # weights written, commit object not yet built
    "publish:before_commit",   # commit object built, not yet created
    "publish:after_commit",    # individual visible; publish about to return
    "kill:after_claim",        # history record created (we are the killer), alive entry still there
    "kill:after_keep",         # keep-best decision made, alive entry still there
    "kill:after_unlist",       # alive entry deleted, weights not yet deleted
    "quarantine:after_record", # quarantine record created, alive entry still there
    "rollup:after_segment",    # history roll-up: segment created (or found), no original deleted yet
    "rollup:after_first_delete",  # history roll-up: the first original deleted, the others not yet
    "data:after_claim",        # data cache: generation claimed, nothing decoded yet
    "data:after_part",         # data cache: one split's arrays written, manifest not yet created
    "data:before_commit",      # data cache: every part written, manifest about to be created
    "policy:before_create",    # a learned strategy's next policy version made, not yet created
    "policy:after_create",     # policy version created (visible), older ones not yet pruned
    "policy:before_intake",    # a child's intake record made, its slot not yet created
    "policy:after_intake",     # intake slot created (visible), not yet checked against a pruned version
)


def no_fault(point: str) -> None:
    """The hook of a store nobody injects faults into: does nothing."""


class CrashAt:
    """A fault hook that kills this process with SIGKILL the ``nth`` time it reaches ``point``."""

    def __init__(self, point: str, nth: int = 1):
        if point not in POINTS:
            raise ValueError(f"unknown crash point {point!r} (one of: {', '.join(POINTS)})")
        if isinstance(nth, bool) or not isinstance(nth, int) or nth < 1:
            raise ValueError(f"the hit count of a crash point must be a whole number >= 1, got {nth!r}")
        self.point, self.nth = point, nth
        self.hits = 0

    def __call__(self, point: str) -> None:
        if point != self.point:
            return
        self.hits += 1
        if self.hits >= self.nth:
            os.kill(os.getpid(), signal.SIGKILL)

    def __repr__(self) -> str:
        return f"CrashAt({self.point!r}, {self.nth})"


def crash_hook(spec: str) -> CrashAt:
    """The hook for ``POINT`` (die the first time there) or ``POINT#N`` (the N-th time).

    ValueError (one line, naming the valid points) for anything else.
    """
    if not isinstance(spec, str):
        raise ValueError(f"not a crash point: {spec!r}")
    point, hash_sign, nth = spec.strip().partition("#")
    if hash_sign and not nth.isdigit():
        raise ValueError(f"bad crash point {spec!r}: use POINT or POINT#N with N >= 1")
    return CrashAt(point, int(nth) if hash_sign else 1)

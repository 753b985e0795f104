"""Injectable crash points, so tests can SIGKILL a writer at an exact step of a protocol.

``EVO_CRASH_AT=publish:after_payload`` makes the process kill itself with SIGKILL the first
time it reaches that point; ``EVO_CRASH_AT=kill:after_claim#3`` the third time. Only the
tests' subprocesses set the variable; with it unset a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "EVO_CRASH_AT"

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
)

_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die at once with SIGKILL if ``$EVO_CRASH_AT`` names this point (and hit count)."""
    target = os.environ.get(ENV_VAR)
    if not target:
        return
    point, _, nth = target.partition("#")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

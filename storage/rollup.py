"""Rolling sealed history records up into segments (:mod:`storage.segments` has the format
and the reasoning). Workers do it now and then in a background thread
(:meth:`Rollups.soon`, the history facet's ``roll_up_soon``), ``evo check --repair`` does it with its grace period.

A roll-up, in order: list ``history/`` (with times), then ``alive/``; take the oldest sealed
records (not listed alive, older than ``min_age``), read and check them (a record that does
not check out stays where it is, for ``evo check``); *create* the segment; only then delete
the originals. Killed at any point, it leaves every record readable exactly once: before
the create, nothing changed; after it, a record is in the segment and maybe still in
``history/``, and readers take it once (by id). If the segment exists already (another
roller, or a roller that died after its create), it is read and checked, and the originals
are deleted only if it holds every one of them, valid.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from .backend import UnreadableEntry
from .core import StoreCore
from .immutable import history_checker, read_immutable, read_segments
from .reading import Broken
from .records import HISTORY, history_key, parse_record_name
from .segments import MAX_SEGMENT_BYTES, SEGMENT_RECORDS, WORKER_MIN_AGE, encode_segment, within_bounds

log = logging.getLogger("evo.storage")

ROLLUP_INTERVAL = 120.0   # a worker looks for a roll-up at most this often (seconds, +-50% jitter)


@dataclass(frozen=True)
class RollupResult:
    """What one :func:`roll_up` did."""

    segments: int = 0        # segments this call created
    records: int = 0         # records now in a segment whose originals this call deleted
    joined: int = 0          # segments that existed already and whose originals were deleted
    skipped: int = 0         # records that did not check out (left in history/)


def roll_up(core: StoreCore, *, min_age: float = WORKER_MIN_AGE, segment_records: int = SEGMENT_RECORDS,
            max_segments: int | None = None) -> RollupResult:
    """Roll the oldest sealed history records up into segments of ``segment_records``
    (full segments only), at most ``max_segments`` of them; see the module docstring.
    Safe with any number of concurrent rollers, readers and killers."""
    if segment_records < 1:
        raise ValueError("segment_records must be >= 1")
    now = core.now()
    entries = core.backend.list_detail(HISTORY)
    listed = {i.id for i in core.list_alive()}      # after history/: see segments.py
    sealed = sorted(ident for e in entries
                    if (ident := parse_record_name(e.name)) and ident not in listed
                    and now - e.mtime >= min_age)
    made = records = joined = skipped = 0
    start = 0
    while len(sealed) - start >= segment_records and (max_segments is None or made + joined < max_segments):
        chunk = sealed[start:start + segment_records]
        start += segment_records
        got = read_immutable(core, [history_key(i) for i in chunk], "history record",
                             history_checker(core), "history")
        if any(v is None for v in got.values()):
            break   # records vanished: another roller is at these; a second segment would only overlap
        good = [v for v in got.values() if not isinstance(v, Broken)]
        skipped += sum(1 for v in got.values() if isinstance(v, Broken))
        if not good:
            continue
        # records rolled up by someone else since our listing: they are at work on these,
        # and a segment of ours would only overlap theirs
        still = {i for i in map(parse_record_name, core.backend.list(HISTORY)) if i}
        if any(r["id"] not in still for r in good):
            break
        if not within_bounds(good):
            log.warning("%s: %d history records make a segment over the bounds readers check; not rolled up",
                        core.url, len(good))
            continue
        name, data = encode_segment(good)
        if len(data) > MAX_SEGMENT_BYTES:
            log.warning("%s: %d history records make a segment over %d bytes; not rolled up",
                        core.url, len(good), MAX_SEGMENT_BYTES)
            continue
        if core.backend.create(name.key, data):
            made += 1
        else:
            # someone made this very segment: delete the originals only if it holds them all
            dec = read_segments(core, [name], with_dna=True).get(name.key)
            if dec is None or dec.problem or len(dec.records) != len(good):
                log.warning("%s: %s exists but does not check out; originals kept", core.url, name.key)
                continue
            joined += 1
        core.fault("rollup:after_segment")
        for n, rec in enumerate(good):
            core.backend.delete(history_key(rec["id"]))
            if n == 0:
                core.fault("rollup:after_first_delete")
        records += len(good)
    return RollupResult(made, records, joined, skipped)


class Rollups:
    """A worker's background roll-ups over one store (:meth:`soon`, :meth:`wait`)."""

    def __init__(self, core: StoreCore):
        self._core = core
        self._thread: threading.Thread | None = None
        self._next = 0.0

    def soon(self, *, min_age: float = WORKER_MIN_AGE, segment_records: int = SEGMENT_RECORDS,
             interval: float = ROLLUP_INTERVAL) -> bool:
        """At most once per ``interval`` seconds (with jitter, so workers spread out) start one
        roll-up of at most one segment in a background thread, unless one still runs. Returns
        True if it started one. Never raises: a roll-up that fails is logged and tried again
        later."""
        core = self._core
        now = time.monotonic()
        if now < self._next or (self._thread is not None and self._thread.is_alive()):
            return False
        self._next = now + interval * random.uniform(0.5, 1.5)

        def run() -> None:
            try:
                done = roll_up(core, min_age=min_age, segment_records=segment_records, max_segments=1)
                if done.records:
                    log.info("%s: rolled %d history records up into a segment", core.url, done.records)
            except (OSError, UnreadableEntry, ValueError, RuntimeError) as exc:
                log.warning("%s: history roll-up failed: %s", core.url,
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            finally:
                core.memo.pop("history", None)   # a worker has no use for what it read
                core.memo.pop("segments", None)

        self._thread = threading.Thread(target=run, name="evo-rollup", daemon=True)
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background roll-up started by :meth:`soon` to finish."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

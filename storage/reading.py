"""Reading many records of an untrusted store: bounded, per entry, never fatal.

Every record is read with a size bound (``Backend.read_many``), parsed as strict JSON and
checked; an entry that is unreadable, foreign, oversized, not JSON or not a valid record
becomes a :class:`Broken` naming the key and the problem, and the reading goes on. Readers
(inspection commands, audit, check) show broken entries; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .backend import MAX_RECORD_BYTES, Backend, UnreadableEntry
from .records import CorruptRecord, id_of_key, loads

READ_BATCH = 500  # keys per read_many: bounds memory on runs of 10^5 individuals


@dataclass(frozen=True)
class Broken:
    """An entry of the store that could not be used, and why (one line, never its content)."""

    key: str
    problem: str
    kind: str = "corrupt"   # "corrupt" (read, did not check out), "unreadable" or "foreign" (not an object)

    @property
    def id(self) -> str | None:
        """The individual the entry belongs to, when its name says (None: it does not)."""
        return id_of_key(self.key)


def read_json(backend: Backend, keys: Iterable[str], what: str, *,
              max_bytes: int = MAX_RECORD_BYTES, batch: int = READ_BATCH) -> Iterator[tuple[str, Any]]:
    """``(key, parsed JSON or Broken)`` for every key that exists, ``batch`` keys at a time.

    Keys that vanished meanwhile are skipped (a record deleted by a concurrent writer is
    not broken).
    """
    keys = list(keys)
    for start in range(0, len(keys), batch):
        for key, raw in backend.read_many(keys[start:start + batch], max_bytes).items():
            if raw is None:
                continue
            if isinstance(raw, UnreadableEntry):
                yield key, Broken(key, raw.problem, "unreadable")
                continue
            try:
                yield key, loads(raw, what)
            except CorruptRecord as exc:
                yield key, Broken(key, str(exc))


def read_checked(backend: Backend, keys: Iterable[str], what: str,
                 check: Callable[[str, Any], Any], **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """Like :func:`read_json`, then ``check(key, obj)``: its result, or Broken if it raises
    CorruptRecord (or ValueError)."""
    for key, obj in read_json(backend, keys, what, **kwargs):
        if isinstance(obj, Broken):
            yield key, obj
            continue
        try:
            yield key, check(key, obj)
        except ValueError as exc:
            text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            yield key, Broken(key, text)

"""History segments: runs of sealed history records rolled up into one compressed object, so
that a reader of 20,000 dead individuals reads tens of objects, not 20,000.

A history record (``history/{id}.json``) never changes once created (it is the kill marker,
created only if absent). A *roll-up* reads the oldest sealed records, writes them as one
segment ``segments/{first id}~{last id}~{count}~{digest}.jsonl.gz`` (gzip of one canonical
JSON record per line; ``digest``: 16 hex digits of the SHA-256 of the sorted ids, one per
line) with create-if-absent, and only then deletes the originals. The name says exactly which
ids the segment holds, so two rollers that pick the same records race on one name (one
creates it; the other verifies it and deletes the originals too), and a roller killed after
the create leaves only duplicates, which readers drop by id (and the next roller deletes).

A record is *sealed* (may be rolled up) when its individual is no longer listed in
``alive/`` and the record is older than the roll-up's ``min_age``: a killer that read its
victim's commit then stalled for longer than that could otherwise create the kill marker a
second time after the roll-up deleted it. Workers roll up with :data:`WORKER_MIN_AGE`;
``evo check --repair`` with its grace period.

Segments come from an untrusted store: the compressed object is read with a size bound,
inflated with a bound (a zip bomb costs that segment), every line is checked like a history
record (DNA against the run's bounds), and the ids must be exactly the ones its name states.
A segment that fails any of that is *broken*: none of its records are used; they are read from
wherever else they still are (their ``history/`` files, another segment) and otherwise counted
as broken entries of the history, by id as far as the segment could be parsed.

Pure functions here; :mod:`storage.immutable` and :mod:`storage.history` read, :mod:`storage.rollup` writes.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .backend import MAX_RECORD_BYTES
from .records import ID_PATTERN, CorruptRecord, check_history, dumps, is_id, loads, loads_many

SEGMENTS = "segments"
SEGMENT_RECORDS = 1000               # records a roller puts in one segment
MAX_SEGMENT_RECORDS = 10000          # more than this in a name: not a segment of this layout
MAX_SEGMENT_BYTES = 8 * 2**20        # compressed (also below GCS's single-request create limit)
MAX_SEGMENT_INFLATED = 64 * 2**20    # inflated: a zip bomb stops here (a roll-up never writes more)
MAX_SEGMENT_HEADS = 16 * 2**20       # inflated records without their DNA (what status, plot, audit read)
MAX_HEAD_BYTES = 32 * 2**10          # one record without its DNA (its metrics are bounded: records.py)
WORKER_MIN_AGE = 600.0               # seconds a record must be old before a worker rolls it up
_INFLATE_STEP = 2**20

_SEGMENT_NAME = re.compile(rf"({ID_PATTERN})~({ID_PATTERN})~(\d{{1,5}})~([0-9a-f]{{16}})\.jsonl\.gz")


@dataclass(frozen=True)
class SegmentName:
    """What a segment's name states: its first and last id, how many records, their digest."""

    first: str
    last: str
    count: int
    digest: str

    @property
    def key(self) -> str:
        """The segment's key under ``segments/``."""
        return f"{SEGMENTS}/{self.first}~{self.last}~{self.count}~{self.digest}.jsonl.gz"


def ids_digest(ids: Iterable[str]) -> str:
    """16 hex digits of the SHA-256 of the sorted ids, one per line: a segment's content in its name."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def segment_name(ids: Iterable[str]) -> SegmentName:
    """The name of the segment holding exactly ``ids`` (at least one)."""
    ordered = sorted(set(ids))
    if not ordered:
        raise ValueError("a segment holds at least one record")
    return SegmentName(ordered[0], ordered[-1], len(ordered), ids_digest(ordered))


def parse_segment_name(name: str) -> SegmentName | None:
    """The statement of a ``segments/`` name, or None for any other name."""
    m = _SEGMENT_NAME.fullmatch(name)
    if m is None:
        return None
    count = int(m.group(3))
    if not 1 <= count <= MAX_SEGMENT_RECORDS or m.group(1) > m.group(2) \
            or not is_id(m.group(1)) or not is_id(m.group(2)):
        return None
    return SegmentName(m.group(1), m.group(2), count, m.group(4))


def encode_segment(records: list[dict[str, Any]]) -> tuple[SegmentName, bytes]:
    """(name, gzip bytes) of a segment holding ``records`` (checked history records).

    The body is one canonical JSON line per record without its DNA, sorted by id, then one
    line ``{"dna": ..., "id": ...}`` per record in the same order: a reader that does not
    use the DNA stops after the first half. The bytes depend on the records alone, so two
    rollers of one set write the same object.
    """
    ordered = sorted(records, key=lambda r: r["id"])
    heads = [dumps({k: v for k, v in r.items() if k != "dna"}) + b"\n" for r in ordered]
    dnas = [dumps({"dna": r["dna"], "id": r["id"]}) + b"\n" for r in ordered]
    body = b"".join(heads + dnas)
    return segment_name(r["id"] for r in ordered), gzip.compress(body, compresslevel=6, mtime=0)


def within_bounds(records: list[dict[str, Any]]) -> bool:
    """True if a segment of ``records`` keeps the bounds every reader checks (inflated size,
    each record's size with and without its DNA): a roll-up writes no other."""
    heads = [len(dumps({k: v for k, v in r.items() if k != "dna"})) + 1 for r in records]
    dnas = [len(dumps({"dna": r["dna"], "id": r["id"]})) + 1 for r in records]
    return (max(heads, default=0) <= MAX_HEAD_BYTES and sum(heads) <= MAX_SEGMENT_HEADS
            and max(dnas, default=0) <= MAX_RECORD_BYTES and sum(heads) + sum(dnas) <= MAX_SEGMENT_INFLATED)


@dataclass
class DecodedSegment:
    """A segment as read: its valid records, or the problem that makes it broken (then
    ``records`` is empty and ``ids`` names the records it held, as far as it parsed)."""

    records: list[dict[str, Any]]
    problem: str | None = None
    ids: tuple[str, ...] = ()


def _lines(raw: bytes) -> Iterator[bytes | str]:
    """The lines of a gzip stream, inflated a step at a time; a str is the problem that
    ends it (never more than :data:`MAX_SEGMENT_INFLATED` bytes are inflated)."""
    inflater = zlib.decompressobj(wbits=31)   # gzip framing, one member
    pending = b""
    total = 0
    data = raw
    while True:
        try:
            chunk = inflater.decompress(data, _INFLATE_STEP)
        except zlib.error as exc:
            yield f"is not gzip data ({str(exc)[:80]})"
            return
        data = inflater.unconsumed_tail
        total += len(chunk)
        if total > MAX_SEGMENT_INFLATED:
            yield f"inflates to more than {MAX_SEGMENT_INFLATED} bytes"
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
        if len(pending) > MAX_RECORD_BYTES:
            yield f"has a line longer than {MAX_RECORD_BYTES} bytes"
            return
        if inflater.eof or (not data and not chunk):
            break
    if not inflater.eof:
        yield "is truncated (the gzip stream does not end)"
    elif inflater.unused_data:
        yield "has data after the end of its gzip stream"
    elif pending:
        yield "does not end with a newline (truncated?)"


_LINE_ID = re.compile(rb'"id":"(' + ID_PATTERN.encode() + rb')"')
_FIRST_CHUNK = 8   # records parsed before the first check; each chunk after is 8 times larger


def decode_segment(name: SegmentName, raw: bytes, check: Callable[[str, Any], dict[str, Any]], *,
                   with_dna: bool = True) -> DecodedSegment:
    """Inflate (bounded) and check a segment's bytes.

    ``check(key, obj)`` checks one history record (CorruptRecord/ValueError if it does not
    check out); the key it gets is ``history/{id}.json`` of the id the line states. With
    ``with_dna=False`` only the first half is read and checked (records without ``dna``);
    else every record gets its DNA line and is checked whole.

    The records are parsed in chunks growing 8-fold, each checked before the next is parsed,
    and the first problem ends the decoding: a segment whose first bad record is the k-th
    costs about 8k records' work, never the whole segment's.
    """
    heads: list[dict[str, Any]] = []
    ids: list[str] = []
    records: list[dict[str, Any]] = []

    raw_heads: list[bytes] = []

    def broken(problem: str) -> DecodedSegment:
        # the ids it held, as far as its lines state them: they still count as dead (broken);
        # taken from the lines' text (canonical lines name the id first), never parsed again
        salvaged = list(ids) if len(ids) == name.count else [
            m.group(1).decode() for line in raw_heads if (m := _LINE_ID.search(line))]
        return DecodedSegment([], problem, tuple(i for i in dict.fromkeys(salvaged) if is_id(i))[:name.count])

    lines = _lines(raw)
    head_bytes = 0
    for line in lines:
        if isinstance(line, str):
            return broken(line)
        if len(line) > MAX_HEAD_BYTES:
            return broken(f"has a record over {MAX_HEAD_BYTES} bytes without its DNA")
        head_bytes += len(line)
        if head_bytes > MAX_SEGMENT_HEADS:
            return broken(f"has records over {MAX_SEGMENT_HEADS} bytes without their DNA")
        raw_heads.append(line)
        if len(raw_heads) == name.count:
            break
    start, size = 0, _FIRST_CHUNK
    while start < len(raw_heads):
        try:
            parsed = loads_many(raw_heads[start:start + size], "segment line")
        except CorruptRecord as exc:
            return broken(f"holds a bad line: {exc}")
        start, size = start + size, size * 8
        for obj in parsed:
            ident = obj.get("id") if isinstance(obj, dict) else None
            if not is_id(ident) or "dna" in obj:
                return broken("holds a line that is not a history record without its DNA")
            try:
                if with_dna:   # all but the DNA now: the DNA lines are read only for sound records
                    check_history(obj, ident, with_dna=False)
                else:
                    records.append(check(f"history/{ident}.json", obj))
            except ValueError as exc:
                return broken(f"holds a bad record: {str(exc).splitlines()[0][:160]}")
            ids.append(ident)
            heads.append(obj)
    if len(ids) != name.count or len(set(ids)) != len(ids) or ids_digest(ids) != name.digest:
        return broken(f"holds {len(ids)} records that are not the {name.count} its name states")
    if not with_dna:
        return DecodedSegment(records, None, tuple(ids))
    for head in heads:
        line = next(lines, "ends before the DNA of every record")
        if isinstance(line, str):
            return broken(line)
        try:
            obj = loads(line, "segment line")
            if not isinstance(obj, dict) or set(obj) != {"dna", "id"} or obj["id"] != head["id"]:
                raise CorruptRecord("its DNA lines are not in the order of its records")
            records.append(check(f"history/{head['id']}.json", dict(head, dna=obj["dna"])))
        except ValueError as exc:
            return broken(f"holds a bad record: {str(exc).splitlines()[0][:160]}")
    rest = next(lines, None)
    if rest is not None:
        return broken(rest if isinstance(rest, str) else "holds more lines than its records")
    return DecodedSegment(records, None, tuple(ids))

"""Reading the objects that never change once created (live commits, history records, history
segments) through a store's memo and local read cache, each checked like the worker checks
it (DNA against the run's bounds included).

A record that checked out is remembered per store object (:attr:`StoreCore.memo`) and, for a
remote store, kept in its read cache (:mod:`storage.readcache`) across processes; a record
that does not check out comes back as a :class:`~storage.reading.Broken`, never raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .backend import MAX_RECORD_BYTES, UnreadableEntry
from .core import StoreCore
from .reading import READ_BATCH, Broken
from .records import check_history, history_key, loads, parse_record_name
from .segments import MAX_SEGMENT_BYTES, SEGMENTS, DecodedSegment, SegmentName, decode_segment, parse_segment_name
from .verify import check_dna

Commit = dict[str, Any]


def record_id(key: str) -> str | None:
    """The id a record's key (``{folder}/{id}.json``) names, or None."""
    return parse_record_name(key.rsplit("/", 1)[-1])


def check_history_record(core: StoreCore, key: str, rec: Any, *, with_dna: bool = True) -> Commit:
    """``rec`` (parsed from ``key``) if it is a valid history record, DNA validated against
    the run's bounds; CorruptRecord naming the problem if not. ``with_dna=False``: all
    but the DNA is checked, and the result has no ``dna``."""
    rec = check_history(rec, record_id(key), with_dna=with_dna)
    if with_dna:
        check_dna(rec["dna"], core.bounds, core.dna_validator)
    return rec


def history_checker(core: StoreCore, with_dna: bool = True) -> Callable[[str, Any], Commit]:
    """:func:`check_history_record` of ``core`` as a check of ``(key, record)``."""
    return lambda key, rec: check_history_record(core, key, rec, with_dna=with_dna)


def read_immutable(core: StoreCore, keys: list[str], what: str, check: Any, tag: str,
                   max_bytes: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    """``{key: checked record, Broken, or None if absent}`` for objects that never
    change once created (history records, commits): remembered per store object (under
    ``tag``), and kept in the read cache once they checked out; read in bounded batches."""
    memo = core.memo.setdefault(tag, {})
    out: dict[str, Any] = {}
    todo = []
    for key in keys:
        if key in memo:
            out[key] = memo[key]
        else:
            todo.append(key)
    cache = core.read_cache
    if cache is not None and todo:
        rest = []
        for key in todo:
            raw = cache.get(key, max_bytes)
            if raw is not None:
                try:
                    out[key] = memo[key] = check(key, loads(raw, what))
                    continue
                except ValueError:
                    cache.drop(key)
            rest.append(key)
        todo = rest
    for start in range(0, len(todo), READ_BATCH):
        for key, raw in core.backend.read_many(todo[start:start + READ_BATCH], max_bytes).items():
            if raw is None:
                out[key] = None
                continue
            if isinstance(raw, UnreadableEntry):
                out[key] = Broken(key, raw.problem, "unreadable")
                continue
            try:
                out[key] = memo[key] = check(key, loads(raw, what))
            except ValueError as exc:
                out[key] = Broken(key, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
                continue
            if cache is not None:
                cache.put(key, raw)
    return out


def read_segments(core: StoreCore, names: list[SegmentName], with_dna: bool) -> dict[str, DecodedSegment]:
    """Each named segment, decoded and checked (remembered per store object, kept in the
    read cache when it checked out); a segment gone meanwhile decodes as empty.
    ``with_dna=False``: only the first half of each segment (the records without their
    DNA) is inflated, parsed and checked.

    A segment is decoded at most once per store object and ``with_dna``, broken ones too (a
    broken segment is remembered as broken: a reader asking for many ids it covers, like
    ``evo report``'s drawings, never decodes it again)."""
    memo = core.memo.setdefault("segments", {})
    out: dict[str, DecodedSegment] = {}
    todo = []
    for p in names:
        dec = memo.get((p.key, with_dna))
        if dec is None and not with_dna:   # a whole valid one serves a reader of the first half
            whole = memo.get((p.key, True))
            dec = whole if whole is not None and whole.problem is None else None
        if dec is not None:
            out[p.key] = dec
        else:
            todo.append(p)
    cache = core.read_cache
    rest = []
    for p in todo:
        raw = cache.get(p.key, MAX_SEGMENT_BYTES) if cache else None
        if raw is not None:
            dec = decode_segment(p, raw, history_checker(core, with_dna), with_dna=with_dna)
            if dec.problem is None:
                out[p.key] = memo[(p.key, with_dna)] = dec
                continue
            cache.drop(p.key)
        rest.append(p)
    by_key = {p.key: p for p in rest}
    for start in range(0, len(rest), 16):   # 16 segments (at most 8 MiB each) at a time
        batch = [p.key for p in rest[start:start + 16]]
        for key, raw in core.backend.read_many(batch, MAX_SEGMENT_BYTES).items():
            if raw is None:
                dec = DecodedSegment([])
            elif isinstance(raw, UnreadableEntry):
                dec = memo[(key, with_dna)] = DecodedSegment([], raw.problem)
            else:
                dec = memo[(key, with_dna)] = decode_segment(by_key[key], raw, history_checker(core, with_dna),
                                                             with_dna=with_dna)
                if dec.problem is None and cache:
                    cache.put(key, raw)
            out[key] = dec
    return out


def list_segments(core: StoreCore) -> list[SegmentName]:
    """The parsed names of ``segments/`` (one listing; other names are left out)."""
    return [p for p in map(parse_segment_name, core.backend.list(SEGMENTS)) if p is not None]


def history_record(core: StoreCore, ident: str, segments: list[SegmentName] | None = None) -> Commit | None:
    """The checked history record of ``ident`` from its file or, once rolled up, from a
    segment whose name covers it (``segments``: the parsed listing of ``segments/``, if
    the caller has it); None if it has none. CorruptRecord/UnreadableEntry when its file
    is broken."""
    try:
        return check_history_record(core, history_key(ident),
                                    loads(core.backend.read(history_key(ident)), "history record"))
    except FileNotFoundError:
        pass
    if segments is None:
        segments = list_segments(core)
    covering = [p for p in segments if p.first <= ident <= p.last]
    for dec in read_segments(core, covering, with_dna=True).values():
        for rec in dec.records:
            if rec["id"] == ident:
                return rec
    return None

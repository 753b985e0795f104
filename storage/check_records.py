"""The record-reading half of ``evo check`` (:mod:`storage.check`): history, quarantine and
heartbeat records, kept-weights markers and every listed individual, each read bounded and
in small batches; plus what both halves share (the findings so far, moving aside).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

import dna as dna_lib

from .backend import TEMP_PREFIX, Backend, Entry, UnreadableEntry
from .facets import HistoryFacet, PopulationFacet
from .reading import Broken, read_json
from .records import (
    ALIVE, HISTORY, KEPT, PAYLOAD, QUARANTINE, CorruptRecord, IndividualInfo, dumps, history_key, loads,
    looks_like_record_name, parse_alive_name, parse_kept_name, parse_payload_name, parse_record_name,
    quarantine_key, same_individual,
)
from .segments import MAX_SEGMENT_BYTES, SEGMENT_RECORDS, SEGMENTS, decode_segment, parse_segment_name
from .verify import DnaValidator, verify_weights, weights_size_problem

CHECK_BATCH = 64   # records read at once: bounds memory on a store full of maximal records


class AuditedStore(Protocol):
    """What ``check`` uses of a store: its backend's primitives, its settings and two of its
    facets (:class:`storage.PopulationStore` has them all)."""

    population: PopulationFacet
    history: HistoryFacet

    @property
    def backend(self) -> Backend: ...

    @property
    def keep_best(self) -> int: ...

    @property
    def url(self) -> str: ...

    def now(self) -> float: ...

    def with_run(self, *, bounds: dna_lib.Bounds | None = None,
                 dna_validator: DnaValidator | None = None) -> "AuditedStore": ...


class Findings:
    """One run of ``check``: the listings it took and what it found so far."""

    payloads: dict[str, Entry]   # payload/ as listed before alive/ (set by the run)
    history_ids: set[str]
    quarantine_ids: set[str]

    def __init__(self, store: AuditedStore, repair: bool, grace_seconds: float,
                 bounds: dna_lib.Bounds | None, dna_validator: DnaValidator | None, deep: bool):
        self.store = store.with_run(bounds=bounds, dna_validator=dna_validator)
        self.backend = store.backend
        self.repair, self.grace, self.deep = repair, grace_seconds, deep
        self.now = self.store.now()
        self.problems: list[str] = []
        self.found: Counter[str] = Counter()
        self.repaired: Counter[str] = Counter()
        self.pending = 0
        self.healthy = 0
        self.segments = 0
        self.segment_ids: set[str] = set()    # ids held by valid history segments
        self.referenced: set[str] = set()     # payload names in use
        self.protected_ids: set[str] = set()  # ids whose payloads are not ours to judge now
        self.listed: dict[str, IndividualInfo] = {}   # alive/ as listed after segments/
        self.kill_marks: dict[str, dict[str, Any]] = {}   # valid history/ records (without DNA)
        self.quarantined_keys: dict[str, Any] = {}        # id -> the alive_key its quarantine record names

    def problem(self, kind: str, text: str) -> None:
        self.found[kind] += 1
        self.problems.append(f"{kind}: {text}")

    def fixed(self, kind: str) -> None:
        self.repaired[kind] += 1

    def could_not(self, what: str, exc: BaseException) -> None:
        """A repair the store refused: said once, and the problem stays unrepaired."""
        why = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200] or type(exc).__name__
        self.problems.append(f"could not {what}: {why}")

    def _unreadable(self, key: str, problem: str) -> None:
        """A regular file that cannot be used as it is: report; repair moves it aside."""
        self.problem("unreadable", f"{key}: {problem}")
        if self.repair:
            self._move_aside(key, "unreadable")

    def stray(self, key: str, text: str) -> None:
        """An object whose name is no part of the layout, in one of evo's folders: report;
        repair moves it aside (into ``quarantine/moved/``, bytes kept, nothing deleted)."""
        self.problem("stray", text)
        if self.repair:
            self._move_aside(key, "stray")

    def _move_aside(self, key: str, kind: str) -> str | None:
        dirname, _, name = key.rpartition("/")
        try:
            moved = self.backend.move_aside(dirname, name)
        except FileNotFoundError:
            self.fixed(kind)
            return None
        except (OSError, UnreadableEntry) as exc:
            self.could_not(f"move {key} aside", exc)
            return None
        self.fixed(kind)
        return moved

    def _listed(self, dirname: str, parse: Any, what: str) -> list[IndividualInfo]:
        infos = []
        for name in self.backend.list(dirname):
            info = parse(name)
            if info is not None:
                infos.append(info)
            elif not name.startswith(TEMP_PREFIX):
                self.stray(f"{dirname}/{name}", f"{dirname}/{name} is not {what}")
        return infos


class RecordAudits(Findings):
    """The audits that read records (see the module docstring)."""

    # ----- history segments -----
    def audit_segments(self) -> None:
        """Every segment read and checked; duplicates of its records in ``history/`` (a
        roll-up that died before deleting them) are orphans after the grace period."""
        entries = {e.name: e for e in self.backend.list_detail(SEGMENTS)}
        # listed AFTER segments/: a roll-up only takes records of individuals it found unlisted
        # (and an id is never listed again), so a segment holding an id listed now is no roll-up's
        self.listed = {i.id: i for i in map(parse_alive_name, self.backend.list(ALIVE)) if i is not None}
        good: dict[str, float] = {}          # id -> mtime of a valid segment holding it
        bad: list[tuple[str, str, str, tuple[str, ...], float]] = []
        for name, entry in sorted(entries.items()):
            if name.startswith(TEMP_PREFIX):
                continue
            parsed = parse_segment_name(name)
            key = f"{SEGMENTS}/{name}"
            if parsed is None:
                self.stray(key, f"{key} is not a history segment")
                continue
            try:
                raw = self.backend.read(key, MAX_SEGMENT_BYTES)
            except FileNotFoundError:
                continue
            except UnreadableEntry as exc:
                bad.append((key, exc.problem, "unreadable", (), entry.mtime))
                continue
            dec = decode_segment(parsed, raw, self.store.history.check_history_record)
            if dec.problem:
                bad.append((key, f"history segment {dec.problem}", "corrupt", dec.ids, entry.mtime))
                continue
            living = self._living(dec.ids)
            if living:
                bad.append((key, f"history segment names the live individual {living} (its commit checks "
                                 "out) as dead: no roll-up takes a listed individual", "corrupt", dec.ids, entry.mtime))
                continue
            self.segments += 1
            for ident in dec.ids:
                good[ident] = min(good.get(ident, entry.mtime), entry.mtime)
        self.segment_ids = set(good)
        for key, problem, kind, ids, mtime in bad:
            self.problem(kind, f"{key}: {problem}")
            if self.repair:
                moved = self._move_aside(key, kind)
                if moved is not None:
                    for ident in ids:   # never a listed one: a segment is no evidence of its death
                        if ident not in good and ident not in self.history_ids and ident not in self.listed:
                            self._record_lost(ident, f"history segment: {problem}", mtime, moved)
        for ident in sorted(self.history_ids & set(good)):
            key = history_key(ident)
            if self.now - good[ident] < self.grace:
                self.pending += 1
                continue
            self.problem("orphans", f"{key} is also in a history segment (a roll-up died before deleting it)")
            if self.repair:
                try:
                    self.backend.delete(key)
                    self.fixed("orphans")
                    self.history_ids.discard(ident)
                except OSError as exc:
                    self.could_not(f"delete {key}", exc)

    def _living(self, ids: tuple[str, ...]) -> str | None:
        """The first of ``ids`` that is listed in ``alive/`` (still, now) with a commit that
        checks out, or None."""
        for ident in ids:
            info = self.listed.get(ident)
            if info is None:
                continue
            try:
                self.store.population.verify_commit(info, self.backend.read(info.key))
            except (FileNotFoundError, UnreadableEntry, CorruptRecord):
                continue
            return ident
        return None

    def _record_lost(self, ident: str, reason: str, when: float, moved: str) -> None:
        """A quarantine record for an id whose only history record was moved aside, so it
        still counts as born once (and as gone at ``when``)."""
        record = {"schema": 1, "id": ident, "reason": reason[:500], "time": when, "alive_key": None,
                  "commit": None, "moved_to": moved}
        try:
            if self.backend.create(quarantine_key(ident), dumps(record)):
                self.quarantine_ids.add(ident)
        except OSError as exc:
            self.could_not(f"record {ident} in quarantine/", exc)

    def roll_up(self) -> None:
        """Repair's last step: roll sealed records older than the grace period up into segments."""
        try:
            done = self.store.history.roll_up(min_age=self.grace)
        except (OSError, UnreadableEntry) as exc:
            self.could_not("roll the history up into segments", exc)
            return
        if done.records:
            self.repaired["rolled_up"] += done.records
            self.problems.append(f"rolled {done.records} history records up into {done.segments + done.joined} "
                                 f"segment(s) of {SEGMENT_RECORDS}")

    # ----- records -----
    def audit_history(self) -> None:
        """Every history record must check out (DNA against the run's bounds included)."""
        names = self.backend.list(HISTORY)
        self.not_records(HISTORY, names)
        keys = sorted(f"{HISTORY}/{n}" for n in names if parse_record_name(n))
        for key, obj in read_json(self.backend, keys, "history record", batch=CHECK_BATCH):
            ident = parse_record_name(key.rsplit("/", 1)[1])
            if isinstance(obj, Broken):
                problem, kind = obj.problem, obj.kind
            else:
                try:
                    rec = self.store.history.check_history_record(key, obj)
                    self.kill_marks[ident] = {k: v for k, v in rec.items() if k != "dna"}
                    continue
                except CorruptRecord as exc:
                    problem, kind = str(exc), "corrupt"
            self.problem(kind, f"{key}: {problem}")
            if self.repair:
                self._quarantine_history(key, ident, problem, kind)

    def not_records(self, dirname: str, names: list[str]) -> None:
        """Names in ``history/`` or ``quarantine/`` of the form ``{id}.json`` whose id is no id
        (a date that does not exist, e.g. month 13): corrupt; repair moves them aside."""
        for name in names:
            if looks_like_record_name(name) and parse_record_name(name) is None:
                key = f"{dirname}/{name}"
                self.problem("corrupt", f"{key}: its name is no individual's id (no such date or time)")
                if self.repair:
                    self._move_aside(key, "corrupt")

    def _quarantine_history(self, key: str, ident: str, problem: str, kind: str) -> None:
        """Record the id as quarantined (so it still counts as born once, and as gone when
        its record was written: the death it recorded), then move the record aside."""
        try:
            entry = self.backend.stat(key)
        except UnreadableEntry:
            entry = None
        moved = self._move_aside(key, kind)
        if moved is None:
            return
        self.history_ids.discard(ident)
        if ident in self.listed:   # a broken record is no evidence against a listed one
            return
        record = {"schema": 1, "id": ident, "reason": f"history record: {problem}"[:500],
                  "time": entry.mtime if entry else self.now, "alive_key": None, "commit": None,
                  "moved_to": moved}
        try:
            if self.backend.create(quarantine_key(ident), dumps(record)):
                self.quarantine_ids.add(ident)
        except OSError as exc:
            self.could_not(f"record {ident} in quarantine/", exc)
        self.history_ids.discard(ident)

    def check_quarantine_record(self, key: str, rec: Any) -> bool:
        """True if ``rec`` is a quarantine record of the id its name states (and noted: the
        ``alive/`` key it names, the evidence that may unlist that individual)."""
        ident = parse_record_name(key.rsplit("/", 1)[1])
        if not isinstance(rec, dict) or ident is None or rec.get("id") != ident:
            return False
        self.quarantined_keys[ident] = rec.get("alive_key")
        return True

    def audit_records(self, dirname: str, what: str, check: Any, max_bytes: int | None = None) -> None:
        """Records that are not the layout's: unreadable ones are moved aside by repair."""
        names = [n for n in self.backend.list(dirname) if not n.startswith(TEMP_PREFIX)]
        if dirname == QUARANTINE:
            self.not_records(dirname, names)
            names = [n for n in names if not (looks_like_record_name(n) and parse_record_name(n) is None)]
        keys = sorted(f"{dirname}/{n}" for n in names)
        kwargs = {"max_bytes": max_bytes} if max_bytes else {}
        for key, obj in read_json(self.backend, keys, what, batch=CHECK_BATCH, **kwargs):
            if isinstance(obj, Broken):
                self._unreadable(key, obj.problem)
            elif not check(key, obj):
                self.stray(key, f"{key} is not a valid {what}")

    def audit_kept(self) -> None:
        """Kept-weights markers must name existing weights of their own individual."""
        backend = self.backend
        markers = self._listed(KEPT, parse_kept_name, "a kept-weights marker")
        for info, raw in _read_all(backend, markers):
            if raw is None:
                continue  # pruned while we looked
            marker = load_record(raw) if not isinstance(raw, UnreadableEntry) else None
            payload = marker.get("payload") if isinstance(marker, dict) else None
            pname = payload[len(PAYLOAD) + 1:] if isinstance(payload, str) \
                and payload.startswith(PAYLOAD + "/") else ""
            if parse_payload_name(pname) != info.id:
                self.problem("corrupt", f"{info.key} is not a valid kept-weights marker")
                if self.repair and backend.delete(info.key):
                    self.fixed("corrupt")
                continue
            try:
                there = pname in self.payloads or backend.stat(payload) is not None
            except UnreadableEntry:
                there = False
            if not there and backend.exists(info.key):  # (a prune deletes the marker first)
                self.problem("torn", f"{info.key}: its weights {payload} are missing")
                if self.repair and backend.delete(info.key):
                    self.fixed("torn")
                continue
            self.referenced.add(pname)

    def audit_alive(self) -> None:
        """Every listed individual: zombie, unreadable, corrupt, torn, or healthy."""
        backend = self.backend
        listed = self._listed(ALIVE, parse_alive_name, "an individual")
        for info, raw in _read_all(backend, listed):
            if raw is None:
                self.protected_ids.add(info.id)  # left the listing while we looked
                continue
            if (info.id in self.history_ids or info.id in self.quarantine_ids) and self._zombie(info, raw):
                why = "quarantined" if info.id in self.quarantine_ids else "killed"
                self.problem("zombies", f"{info.key} is {why} but still listed")
                if self.repair:
                    backend.delete(info.key)
                    self.fixed("zombies")
                continue
            self.protected_ids.add(info.id)  # until it proves healthy: then by payload name
            if isinstance(raw, UnreadableEntry):
                self.problem("unreadable", f"{info.key}: {raw.problem}")
                if self.repair:
                    self._repair_quarantine("unreadable", info, f"commit {raw.problem}", None)
                continue
            try:
                commit = self.store.population.verify_commit(info, raw)
            except CorruptRecord as exc:
                self._quarantine("corrupt", info, str(exc), raw)
                continue
            pkey = commit["payload"]
            pname = pkey[len(PAYLOAD) + 1:]
            size = commit["payload_size"]
            entry = self.payloads.get(pname)
            if entry is None or entry.size != size:
                try:
                    entry = backend.stat(pkey)
                except UnreadableEntry:
                    entry = None
            if entry is None or entry.size != size:
                if not backend.exists(info.key) or backend.exists(history_key(info.id)):
                    continue  # killed while we looked
                why = weights_size_problem(entry.size if entry else None, size)
                self._quarantine("torn", info, f"{why} ({pkey})", raw, reason=why)
                continue
            if self.deep:
                try:
                    verify_weights(commit, backend.read(pkey, max_bytes=size))
                except FileNotFoundError:
                    continue  # killed while we looked
                except UnreadableEntry as exc:
                    self._quarantine("unreadable", info, str(exc), raw, reason=f"weights {exc.problem}")
                    continue
                except CorruptRecord as exc:
                    self._quarantine("corrupt", info, str(exc), raw)
                    continue
            self.protected_ids.discard(info.id)
            self.referenced.add(pname)
            self.healthy += 1

    def _zombie(self, info: IndividualInfo, raw: Any) -> bool:
        """Whether a listed individual that has a history or quarantine record is dead by its
        own evidence: its commit does not check out (then any record will do), or its kill
        marker holds this very commit, or its quarantine record names this very ``alive/``
        key. Otherwise the living win: the records that name it are reported as corrupt (and
        moved aside by repair, without a quarantine record), and it stays."""
        try:
            commit = self.store.population.verify_commit(info, raw) if isinstance(raw, bytes) else None
        except CorruptRecord:
            commit = None
        if commit is None:
            return True
        ident = info.id
        mark = self.kill_marks.get(ident)
        if ident in self.history_ids and mark is not None and same_individual(mark, commit):
            return True
        if ident in self.quarantine_ids and self.quarantined_keys.get(ident) == info.key:
            return True
        for key, there in ((history_key(ident), ident in self.history_ids),
                           (quarantine_key(ident), ident in self.quarantine_ids)):
            if not there or not self.backend.exists(info.key):
                continue   # (unlisted meanwhile: a kill or quarantine of its own finished)
            self.problem("corrupt", f"{key} names the live individual {ident} as gone, but does not hold "
                                    f"its commit ({info.key}, which checks out): the living win")
            if self.repair:
                self._move_aside(key, "corrupt")
        self.history_ids.discard(ident)
        self.quarantine_ids.discard(ident)
        return False

    def _quarantine(self, kind: str, info: IndividualInfo, text: str, raw: bytes,
                    reason: str | None = None) -> None:
        self.problem(kind, f"{info.key}: {text}")
        if self.repair:
            self._repair_quarantine(kind, info, reason or text, raw)

    def _repair_quarantine(self, kind: str, info: IndividualInfo, reason: str, raw: bytes | None) -> None:
        try:
            self.store.population.quarantine(info, reason, raw=raw, unusable=raw is None)
        except OSError as exc:
            self.could_not(f"quarantine {info.key}", exc)
            return
        if self.backend.exists(info.key):
            self.problems.append(f"could not take {info.key} off the live listing (permissions?)")
            return
        self.fixed(kind)


def _read_all(backend: Any, infos: list[IndividualInfo]):
    """(info, bytes / UnreadableEntry / None) for each info, CHECK_BATCH reads at a time."""
    for start in range(0, len(infos), CHECK_BATCH):
        batch = infos[start:start + CHECK_BATCH]
        raws = backend.read_many([i.key for i in batch])
        for i in batch:
            yield i, raws.get(i.key)


def load_record(raw: bytes | None) -> Any:
    """The JSON in ``raw``, or None when there is none or it does not parse."""
    if raw is None:
        return None
    try:
        return loads(raw, "record")
    except CorruptRecord:
        return None

"""The history of a store: every individual it knows of, alive and dead (the store's
``history`` facet): the census, the history of the dead and its roll-ups, the quarantine,
the kept weights of the best dead. The one reading API of every reader outside
``storage/`` (status, plot, lineage, best, audit, benchmarks) and of ``evo check``.

Every record is read bounded, in batches, and checked like the worker checks it (DNA
against the run's bounds included); what does not check out comes back as a
:class:`~storage.reading.Broken` naming the entry and its problem, never raises, and is
never written anywhere by a reader.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .backend import UnreadableEntry
from .core import StoreCore
from .immutable import (
    check_history_record, history_checker, history_record, list_segments, read_immutable, read_segments, record_id,
)
from .population import Population
from .reading import Broken, read_checked
from .records import (
    ALIVE, HISTORY, KEPT, QUARANTINE, CorruptRecord, Individual, IndividualInfo, birth_of, check_id,
    history_key, individual_from, parse_kept_name, parse_record_name, quarantine_key, same_individual,
)
from .rollup import ROLLUP_INTERVAL, RollupResult, Rollups, roll_up
from .segments import SEGMENT_RECORDS, SEGMENTS, WORKER_MIN_AGE, parse_segment_name
from .verify import verify_weights

log = logging.getLogger("evo.storage")
Commit = dict[str, Any]


@dataclass(frozen=True)
class Census:
    """Every individual a store knows of, from one pass over it (:meth:`History.census`).

    ``listed``: the ``alive/`` listing, oldest first, taken before anything else, so that an
    individual killed or quarantined while the census ran is found listed *and* in the
    history or quarantine: never missing. ``commits``: each listed individual's checked
    commit by id, a Broken naming its problem, or None if it left the listing before it was
    read (empty when the census did not read them). ``history`` and ``quarantine``: the valid
    records (the history by death, the quarantine by id; each history record once, whether
    it was read from ``history/`` or from a segment, and without ``dna`` when the census
    was taken with ``history_dna=False``); ``broken_history`` and ``broken_quarantine``:
    their entries that did not check out (a broken segment is one entry, and each record
    only it held another, keyed ``segments/{name}#{id}``). ``foreign``: names in
    ``alive/`` and ``history/`` that are not objects at all (never read; ``evo check`` moves
    them aside).

    The store is never trusted over the living: a listed individual whose commit checks out
    counts as dead (or quarantined) only by its own evidence: its kill marker
    ``history/{id}.json`` holding its very commit (a killer died before unlisting it), or
    its own quarantine record (naming its ``alive/`` key). A segment never makes it dead: no
    legitimate roll-up takes a listed individual's record. Records and segments that say
    otherwise are left out of ``history`` and ``quarantine`` and listed in ``contradicted``
    (keyed by the entry, never as a death of that id).
    """

    listed: tuple[IndividualInfo, ...]
    commits: Mapping[str, Commit | Broken | None]
    history: tuple[Commit, ...]
    quarantine: tuple[dict[str, Any], ...]
    broken_history: tuple[Broken, ...] = ()
    broken_quarantine: tuple[Broken, ...] = ()
    foreign: tuple[Broken, ...] = ()      # symlinks, folders, FIFOs in alive/ and history/
    contradicted: tuple[Broken, ...] = ()  # entries naming a live, valid individual dead: unused

    @property
    def dead_ids(self) -> frozenset[str]:
        """Ids with an entry in ``history/`` (a valid record or a broken one): they died."""
        return frozenset(r["id"] for r in self.history) | _ids(self.broken_history)

    @property
    def quarantined_ids(self) -> frozenset[str]:
        """Ids with an entry in ``quarantine/`` (a valid record or a broken one)."""
        return frozenset(r["id"] for r in self.quarantine) | _ids(self.broken_quarantine)


def _ids(broken: Iterable[Broken]) -> frozenset[str]:
    return frozenset(b.id for b in broken if b.id is not None)


class History:
    """Every individual a store knows of, alive and dead: the census, the history of the dead
    (``history/`` and its roll-ups into ``segments/``), the quarantine and the kept weights
    (the store's ``history`` facet).

    Contract: every record is read bounded and checked like the worker checks it (DNA
    against the run's bounds included); what does not check out comes back as a
    :class:`~storage.reading.Broken` (or is left out and logged, by the ``read_``/``list_``
    forms), never raises, and no reader writes anything. Each history record is returned
    once, whether it is in ``history/`` or in a segment, also while roll-ups run.
    """

    def __init__(self, core: StoreCore, population: Population):
        self._core = core
        self._backend = core.backend
        self._population = population
        self._rollups = Rollups(core)

    def census(self, *, read_alive: bool = True, history_dna: bool = True, alive_dna: bool = True) -> Census:
        """One consistent read of every individual (see :class:`Census`): one listing of
        ``alive/`` (and, with ``read_alive``, its commits), then every history record (the
        segments and ``history/``) and every record of ``quarantine/``. Nothing is
        quarantined or written. ``history_dna=False``: the dead individuals' records come
        without their DNA (status, plots, lineage and audit never use it), and their DNA is
        neither parsed nor checked (a segment is read only up to its records' other fields:
        many times faster, and far less memory); every other field is checked as always.
        ``alive_dna=False``: likewise for the live commits.

        Records never change, so a store object remembers what it has read: a second census
        on the same object reads only what is new (``evo status --watch``); remote stores also
        keep them in a local read cache (:mod:`storage.readcache`) across processes.
        """
        listed = self._population.list_alive()
        commits = {i.id: c for i, c in self._population.scan_alive(listed, with_dna=alive_dna)} if read_alive else {}
        found, broken_history, held = self._history(history_dna)
        history = sorted(found.values(), key=lambda r: (r["death"], r["id"]))
        quarantine, broken_quarantine = self.scan_quarantine()
        foreign = tuple(Broken(f"{d}/{f.name}", f"is {f.what}; nothing is read through it", "foreign")
                        for d in (ALIVE, HISTORY) for f in self._backend.list_foreign(d))
        history, quarantine, contradicted = self._the_living_win(listed, commits if read_alive else None,
                                                                  history, quarantine, held)
        # a broken segment's records are no evidence either: its id-named entries for the living go
        alive_ids = {i.id for i in listed if not read_alive or isinstance(commits.get(i.id), dict)}
        broken_history = [b for b in broken_history if "#" not in b.key or b.id not in alive_ids]
        return Census(tuple(listed), commits, tuple(history), tuple(quarantine),
                      tuple(broken_history), tuple(broken_quarantine), foreign, tuple(contradicted))

    def _the_living_win(self, listed: list[IndividualInfo], commits: Mapping[str, Any] | None,
                        history: list[Commit], quarantine: list[dict[str, Any]], held: Mapping[str, str],
                        ) -> tuple[list[Commit], list[dict[str, Any]], list[Broken]]:
        """The history and quarantine records without those that contradict a listed
        individual whose commit checks out (see :class:`Census`), and the entries they came
        from. ``commits`` None: the commits were not read (only segments are overruled)."""
        live: dict[str, tuple[IndividualInfo, Any]] = {}
        for info in listed:
            commit = None if commits is None else commits.get(info.id)
            if commits is None or isinstance(commit, dict):
                live[info.id] = (info, commit)
        if not live:
            return history, quarantine, []
        contradicted: dict[str, Broken] = {}

        def overruled(ident: str, own: bool, key: str, what: str) -> bool:
            info, _ = live[ident]
            if own or not self._population.still_listed(info):   # killed since the listing: dead
                return False
            contradicted.setdefault(key, Broken(
                key, f"{what} names the live individual {ident} ({info.key}, whose commit checks out) "
                     "as gone; the living win: it counts as alive"))
            return True

        kept_history = [
            r for r in history
            if r["id"] not in live or not overruled(
                r["id"], r["id"] not in held and (live[r["id"]][1] is None or same_individual(r, live[r["id"]][1])),
                held.get(r["id"], history_key(r["id"])),
                "its history segment" if r["id"] in held else "its history record")]
        kept_quarantine = [
            q for q in quarantine
            if q["id"] not in live or not overruled(q["id"], q.get("alive_key") == live[q["id"]][0].key,
                                                    quarantine_key(q["id"]), "its quarantine record")]
        return kept_history, kept_quarantine, list(contradicted.values())

    def births(self) -> list[float]:
        """Birth times (unix seconds, sorted) of every individual alive or dead, from one
        listing of ``alive/``, then one of ``history/`` and the ids of the history segments
        (read once per store object)."""
        ids = {i.id for i in self._population.list_alive()}
        ids |= self.dead_ids()
        return sorted(birth_of(i) for i in ids)

    def history_layout(self) -> dict[str, int]:
        """Where the history is kept (for benchmarks and audits): ``segments`` (valid ones),
        ``broken_segments``, ``in_segments`` (distinct ids they hold), ``files`` (records
        in ``history/``) and ``files_also_in_segments`` (left by a roll-up that died)."""
        files = {i for i in map(parse_record_name, self._backend.list(HISTORY)) if i}
        names = [p for p in map(parse_segment_name, self._backend.list(SEGMENTS)) if p is not None]
        decoded = read_segments(self._core, names, with_dna=False)
        held = set().union(*(d.ids for d in decoded.values() if d.problem is None))
        return {"segments": sum(1 for d in decoded.values() if d.problem is None),
                "broken_segments": sum(1 for d in decoded.values() if d.problem is not None),
                "in_segments": len(held), "files": len(files), "files_also_in_segments": len(files & held)}

    def dead_ids(self) -> set[str]:
        """Ids with a history record: the names in ``history/`` and the ids the valid
        segments hold (each segment read once per store object, without its DNA)."""
        ids = {i for i in map(parse_record_name, self._backend.list(HISTORY)) if i}
        for name in self._backend.list(SEGMENTS):
            parsed = parse_segment_name(name)
            if parsed is not None:
                ids.update(read_segments(self._core, [parsed], with_dna=False)[parsed.key].ids)
        return ids

    # ----- history -----
    def read_history(self) -> list[Commit]:
        """The record of every individual that died (commit fields + death, killer, reason).

        Sorted by death time. Reads every record: for plots and lineage, not the hot path.
        Records that do not check out (including their DNA, against the run's bounds) are
        skipped with a warning; :meth:`scan_history` also returns them.
        """
        records, broken = self.scan_history()
        _warn(self._core.url, broken)
        return records

    def scan_history(self, *, with_dna: bool = True) -> tuple[list[Commit], list[Broken]]:
        """(valid history records sorted by death, the broken entries of the history).

        A record is valid when it checks out like a commit, names the id it is stored
        under, has a death time, and its DNA validates against the run's bounds: nothing
        unchecked reaches a plot, a ranking or a lineage. ``with_dna=False``: the records come
        without ``dna``, which is then not checked (nothing unchecked is passed on; ``evo check``
        and every reader of the DNA check it).

        Every record is returned once, from a valid segment or from its ``history/`` file,
        also while a roll-up runs or after one died half-way: ``history/`` is listed before
        ``segments/``, and when a listed record vanished before it was read (rolled up
        meanwhile), ``segments/`` is listed again.
        """
        found, broken, _ = self._history(with_dna)
        return sorted(found.values(), key=lambda r: (r["death"], r["id"])), broken

    def _history(self, with_dna: bool) -> tuple[dict[str, Commit], list[Broken], dict[str, str]]:
        """(valid records by id, broken entries, {id: the segment its record was taken from})."""
        names = sorted(n for n in self._backend.list(HISTORY) if parse_record_name(n))
        found: dict[str, Commit] = {}
        broken_segments: list[Broken] = []
        only_in_broken: dict[str, str] = {}     # id -> the broken segment that held it
        held: dict[str, str] = {}               # id -> the valid segment its record came from
        seen: set[str] = set()

        def take_segments() -> None:
            new = [p for p in map(parse_segment_name, self._backend.list(SEGMENTS))
                   if p is not None and p.key not in seen]
            seen.update(p.key for p in new)
            for key, dec in sorted(read_segments(self._core, new, with_dna).items()):
                if dec.problem:
                    broken_segments.append(Broken(key, f"history segment {dec.problem}"))
                    for ident in dec.ids:
                        only_in_broken.setdefault(ident, key)
                for rec in dec.records:
                    if rec["id"] not in found:
                        found[rec["id"]] = rec
                        held[rec["id"]] = key

        take_segments()
        keys = [f"{HISTORY}/{n}" for n in names if parse_record_name(n) not in found]
        got = read_immutable(self._core, keys, "history record", history_checker(self._core, with_dna),
                                   "history" if with_dna else "history-nodna")
        broken_files = []
        vanished = False
        for key in keys:
            value = got.get(key)
            if value is None:
                vanished = True
            elif isinstance(value, Broken):
                broken_files.append(value)
            else:
                found.setdefault(value["id"], value)
        if vanished:   # rolled up (or moved aside) since the listing: its segment is newer
            take_segments()
        broken = [b for b in broken_files if b.id not in found]
        named = {b.id for b in broken}
        broken += broken_segments
        broken += [Broken(f"{key}#{ident}", "its record is only in a broken history segment")
                   for ident, key in sorted(only_in_broken.items()) if ident not in found and ident not in named]
        return found, broken, held

    def check_history_record(self, key: str, rec: Any, *, with_dna: bool = True) -> Commit:
        """``rec`` (parsed from ``key``) if it is a valid history record, DNA validated against
        the run's bounds; CorruptRecord naming the problem if not. ``with_dna=False``: all
        but the DNA is checked, and the result has no ``dna``."""
        return check_history_record(self._core, key, rec, with_dna=with_dna)

    def count_history(self) -> int:
        """How many individuals have died (the ids of :meth:`dead_ids`)."""
        return len(self.dead_ids())

    # ----- quarantine -----
    def list_quarantine(self) -> list[dict[str, Any]]:
        """Quarantine records (id, reason, time, the original commit), by id; unreadable
        ones are skipped with a warning."""
        records, broken = self.scan_quarantine()
        _warn(self._core.url, broken)
        return records

    def scan_quarantine(self) -> tuple[list[dict[str, Any]], list[Broken]]:
        """(quarantine records by id, the entries of ``quarantine/`` that are broken)."""
        def check(key: str, rec: Any) -> dict[str, Any]:
            if not isinstance(rec, dict) or rec.get("id") != record_id(key):
                raise CorruptRecord("not a quarantine record of that id")
            return rec
        return _split_broken(read_checked(self._backend, self._record_keys(QUARANTINE),
                                          "quarantine record", check))

    def _record_keys(self, dirname: str) -> list[str]:
        return sorted(f"{dirname}/{n}" for n in self._backend.list(dirname) if parse_record_name(n))

    # ----- kept weights of the dead -----
    def list_kept(self) -> list[IndividualInfo]:
        """Dead individuals whose weights are kept, best first (``keep_best``)."""
        infos = [parse_kept_name(n) for n in self._backend.list(KEPT)]
        return sorted((i for i in infos if i is not None), key=lambda i: (i.fitness, i.id), reverse=True)

    def read_kept(self, target: IndividualInfo | str) -> Individual | None:
        """A dead individual with kept weights, verified like a live one; None if unavailable."""
        ident = target.id if isinstance(target, IndividualInfo) else check_id(target)
        try:
            record = history_record(self._core, ident)
            if record is None:
                return None
            weights = self._backend.read(record["payload"], max_bytes=record["payload_size"])
            verify_weights(record, weights)
        except FileNotFoundError:
            return None
        except (CorruptRecord, UnreadableEntry) as exc:
            log.warning("%s: kept individual %s is unreadable: %s", self._core.url, ident, exc)
            return None
        return individual_from(record, weights)


    def dna_of(self, idents: list[str]) -> dict[str, dict[str, Any]]:
        """The DNA of each of ``idents`` whose record can be read and checks out, DNA included
        (validated against the run's bounds): a live one's from its commit, a dead one's from
        its history file or the segment that holds it. Ids without such a record are left out.
        For a reader that took its census without DNA and needs a few (``evo report``'s
        drawings)."""
        listed = {i.id: i for i in self._population.list_alive()}
        out: dict[str, dict[str, Any]] = {}
        alive = [listed[i] for i in idents if i in listed]
        for info, commit in self._population.scan_alive(alive, with_dna=True):
            if isinstance(commit, dict):
                out[info.id] = commit["dna"]
        segments = None   # listed once, and only if a dead one is asked for
        for ident in idents:
            if ident in out or ident in listed:
                continue
            if segments is None:
                segments = list_segments(self._core)
            try:
                rec = history_record(self._core, ident, segments)
            except (ValueError, UnreadableEntry):
                continue
            if rec is not None:
                out[ident] = rec["dna"]
        return out

    # ----- roll-ups -----
    def roll_up(self, *, min_age: float = WORKER_MIN_AGE, segment_records: int = SEGMENT_RECORDS,
                max_segments: int | None = None) -> RollupResult:
        """Roll the oldest sealed history records up into segments of ``segment_records``
        (full segments only), at most ``max_segments`` of them (:mod:`storage.rollup`).
        Safe with any number of concurrent rollers, readers and killers."""
        return roll_up(self._core, min_age=min_age, segment_records=segment_records, max_segments=max_segments)

    def roll_up_soon(self, *, min_age: float = WORKER_MIN_AGE, segment_records: int = SEGMENT_RECORDS,
                     interval: float = ROLLUP_INTERVAL) -> bool:
        """What a worker calls after its kills: at most once per ``interval`` seconds (with
        jitter) start one roll-up of at most one segment in a background thread, unless one
        still runs. True if it started one. Never raises."""
        return self._rollups.soon(min_age=min_age, segment_records=segment_records, interval=interval)

    def wait_for_roll_up(self, timeout: float | None = None) -> None:
        """Wait for a background roll-up started by :meth:`roll_up_soon` to finish."""
        self._rollups.wait(timeout)


def _warn(url: str, broken: list[Broken]) -> None:
    for b in broken:
        log.warning("%s: skipping %s: %s", url, b.key, b.problem)


def _split_broken(items: Any) -> tuple[list[Any], list[Broken]]:
    good, broken = [], []
    for _, obj in items:
        (broken if isinstance(obj, Broken) else good).append(obj)
    return good, broken

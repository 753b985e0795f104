"""Reading the population as a whole: the one API of every reader outside ``storage/``
(status, plot, lineage, best, audit, benchmarks) and of ``evo check``.

Every record is read bounded, in batches, and checked like the worker checks it (DNA
against the run's bounds included); what does not check out comes back as a
:class:`~storage.reading.Broken` naming the entry and its problem, never raises, and is
never written anywhere by a reader.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dna as dna_lib

from .backend import UnreadableEntry
from .core import StoreCore
from .reading import READ_BATCH, Broken, read_checked
from .records import (
    ALIVE, HISTORY, KEPT, QUARANTINE, CorruptRecord, Individual, IndividualInfo, birth_of, check_commit,
    check_history, check_id, history_key, individual_from, loads, parse_kept_name, parse_record_name,
)
from .verify import DnaValidator, check_dna, verify_weights

log = logging.getLogger("evo.storage")

Commit = dict[str, Any]


@dataclass(frozen=True)
class Census:
    """Every individual a store knows of, from one pass over it (:meth:`PopulationReaders.census`).

    ``listed``: the ``alive/`` listing, oldest first, taken before anything else, so that an
    individual killed or quarantined while the census ran is found listed *and* in the
    history or quarantine: never missing. ``commits``: each listed individual's checked
    commit by id, a Broken naming its problem, or None if it left the listing before it was
    read (empty when the census did not read them). ``history`` and ``quarantine``: the valid
    records (the history by death, the quarantine by id); ``broken_history`` and
    ``broken_quarantine``: their entries that did not check out. ``foreign``: names in
    ``alive/`` and ``history/`` that are not objects at all (never read; ``evo check`` moves
    them aside).
    """

    listed: tuple[IndividualInfo, ...]
    commits: Mapping[str, Commit | Broken | None]
    history: tuple[Commit, ...]
    quarantine: tuple[dict[str, Any], ...]
    broken_history: tuple[Broken, ...] = ()
    broken_quarantine: tuple[Broken, ...] = ()
    foreign: tuple[Broken, ...] = ()      # symlinks, folders, FIFOs in alive/ and history/

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


class PopulationReaders(StoreCore):
    """The reading side of :class:`storage.PopulationStore`."""

    def census(self, *, read_alive: bool = True) -> Census:
        """One consistent read of every individual (see :class:`Census`): one listing of
        ``alive/`` (and, with ``read_alive``, its commits), then every record of ``history/``
        and ``quarantine/``. Nothing is quarantined or written."""
        listed = self.list_alive()
        commits = {i.id: c for i, c in self.scan_alive(listed)} if read_alive else {}
        history, broken_history = self.scan_history()
        quarantine, broken_quarantine = self.scan_quarantine()
        foreign = tuple(Broken(f"{d}/{f.name}", f"is {f.what}; nothing is read through it", "foreign")
                        for d in (ALIVE, HISTORY) for f in self.backend.list_foreign(d))
        return Census(tuple(listed), commits, tuple(history), tuple(quarantine),
                      tuple(broken_history), tuple(broken_quarantine), foreign)

    def births(self) -> list[float]:
        """Birth times (unix seconds, sorted) of every individual alive or dead, from one
        listing of ``alive/`` and then one of ``history/``; reads nothing."""
        ids = {i.id for i in self.list_alive()}
        ids |= {i for i in map(parse_record_name, self.backend.list(HISTORY)) if i}
        return sorted(birth_of(i) for i in ids)

    # ----- live commits -----
    def scan_alive(self, infos: list[IndividualInfo] | None = None,
                   ) -> Iterator[tuple[IndividualInfo, Commit | Broken | None]]:
        """For each live individual (``infos``, default: one listing), its checked commit
        (DNA validated against the run's bounds), a Broken naming its problem, or None if it
        left the listing meanwhile. Reads in bounded batches; quarantines nothing."""
        infos = self.list_alive() if infos is None else infos
        by_key = {i.key: i for i in infos}

        def check(key: str, obj: Any) -> Commit:
            commit = check_commit(obj, by_key[key])
            check_dna(commit["dna"], self.bounds, self.dna_validator)
            return commit

        for start in range(0, len(infos), READ_BATCH):
            batch = infos[start:start + READ_BATCH]
            got = dict(read_checked(self.backend, [i.key for i in batch], "commit", check))
            for info in batch:
                yield info, got.get(info.key)

    def verify_commit(self, info: IndividualInfo, raw: bytes, bounds: dna_lib.Bounds | None = None,
                      dna_validator: DnaValidator | None = None) -> Commit:
        """The commit object ``raw`` of ``info``, checked field by field and its DNA validated
        (against ``bounds``/``dna_validator``, else the store's); CorruptRecord if not."""
        commit = check_commit(loads(raw, "commit"), info)
        check_dna(commit["dna"], bounds or self.bounds, dna_validator or self.dna_validator)
        return commit

    # ----- history -----
    def read_history(self) -> list[Commit]:
        """The record of every individual that died (commit fields + death, killer, reason).

        Sorted by death time. Reads every record: for plots and lineage, not the hot path.
        Records that do not check out (including their DNA, against the run's bounds) are
        skipped with a warning; :meth:`scan_history` also returns them.
        """
        records, broken = self.scan_history()
        _warn(self.url, broken)
        return records

    def scan_history(self) -> tuple[list[Commit], list[Broken]]:
        """(valid history records sorted by death, the broken entries of ``history/``).

        A record is valid when it checks out like a commit, names the id it is stored
        under, has a death time, and its DNA validates against the run's bounds: nothing
        unchecked reaches a plot, a ranking or a lineage.
        """
        records, broken = _split_broken(read_checked(
            self.backend, self._record_keys(HISTORY), "history record", self.check_history_record))
        return sorted(records, key=lambda r: (r["death"], r["id"])), broken

    def check_history_record(self, key: str, rec: Any) -> Commit:
        """``rec`` (parsed from ``key``) if it is a valid history record, DNA validated against
        the run's bounds; CorruptRecord naming the problem if not."""
        rec = check_history(rec, _record_id(key))
        check_dna(rec["dna"], self.bounds, self.dna_validator)
        return rec

    def count_history(self) -> int:
        """How many individuals have died (one listing)."""
        return sum(1 for n in self.backend.list(HISTORY) if parse_record_name(n))

    # ----- quarantine -----
    def list_quarantine(self) -> list[dict[str, Any]]:
        """Quarantine records (id, reason, time, the original commit), by id; unreadable
        ones are skipped with a warning."""
        records, broken = self.scan_quarantine()
        _warn(self.url, broken)
        return records

    def scan_quarantine(self) -> tuple[list[dict[str, Any]], list[Broken]]:
        """(quarantine records by id, the entries of ``quarantine/`` that are broken)."""
        def check(key: str, rec: Any) -> dict[str, Any]:
            if not isinstance(rec, dict) or rec.get("id") != _record_id(key):
                raise CorruptRecord("not a quarantine record of that id")
            return rec
        return _split_broken(read_checked(self.backend, self._record_keys(QUARANTINE),
                                          "quarantine record", check))

    def _record_keys(self, dirname: str) -> list[str]:
        return sorted(f"{dirname}/{n}" for n in self.backend.list(dirname) if parse_record_name(n))

    # ----- kept weights of the dead -----
    def list_kept(self) -> list[IndividualInfo]:
        """Dead individuals whose weights are kept, best first (``keep_best``)."""
        infos = [parse_kept_name(n) for n in self.backend.list(KEPT)]
        return sorted((i for i in infos if i is not None), key=lambda i: (i.fitness, i.id), reverse=True)

    def read_kept(self, target: IndividualInfo | str) -> Individual | None:
        """A dead individual with kept weights, verified like a live one; None if unavailable."""
        ident = target.id if isinstance(target, IndividualInfo) else check_id(target)
        try:
            record = self.check_history_record(history_key(ident),
                                               loads(self.backend.read(history_key(ident)), "history record"))
            weights = self.backend.read(record["payload"], max_bytes=record["payload_size"])
            verify_weights(record, weights)
        except FileNotFoundError:
            return None
        except (CorruptRecord, UnreadableEntry) as exc:
            log.warning("%s: kept individual %s is unreadable: %s", self.url, ident, exc)
            return None
        return individual_from(record, weights)


def _record_id(key: str) -> str | None:
    return parse_record_name(key.rsplit("/", 1)[-1])


def _warn(url: str, broken: list[Broken]) -> None:
    for b in broken:
        log.warning("%s: skipping %s: %s", url, b.key, b.problem)


def _split_broken(items: Any) -> tuple[list[Any], list[Broken]]:
    good, broken = [], []
    for _, obj in items:
        (broken if isinstance(obj, Broken) else good).append(obj)
    return good, broken

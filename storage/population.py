"""The population store: the evolution's shared state, written once over a backend's primitives.

Protocols (docs/layout.md has the full picture):

- Publish: the weights go to a unique name under ``payload/``; then the small commit object
  ``alive/{id}~{fitness}.json`` is *created only if absent*. The individual exists exactly
  when its commit object does, and the commit names a payload that is already whole.
- Kill: the killer reads the victim's commit and creates ``history/{id}.json`` only if
  absent. Whoever creates it is the one killer; everyone else learns "already dead". The
  killer then (maybe keeps the weights,) deletes the alive entry, then the payload.
- Corruption found while reading moves the entry to ``quarantine/`` (create-if-absent, so it
  is logged once) and the reader gets None; nothing from the store is ever unpickled.

No locks: every exclusive step is one ``Backend.create``. A crash at any point leaves either
nothing visible or a whole individual, plus garbage that ``check(repair=True)`` removes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import dna as dna_lib

from .backend import MOVED_DIR, Backend, StoreError, UnreadableEntry, is_key, moved_key
from .crash import crash_point
from .reading import READ_BATCH, Broken, read_checked, read_json
from .records import (
    ALIVE, CONFIG_KEY, HISTORY, KEPT, LAUNCHES, MAX_CONFIG_BYTES, MAX_HEARTBEAT_BYTES, PAYLOAD,
    QUARANTINE, STATE, WORKERS, CorruptRecord, Individual, IndividualInfo, alive_key, check_commit,
    check_history, check_id, check_safe_name, dna_hash, dumps, history_key, individual_from,
    is_safe_name, kept_key, loads, new_id, parse_alive_name, parse_kept_name, parse_payload_name,
    parse_record_name, payload_key, quarantine_key,
)
from .safetensors_check import safetensors_problem

if TYPE_CHECKING:
    from .check import CheckReport

log = logging.getLogger("evo.storage")

DnaValidator = Callable[[dict], object]
"""Checks a DNA JSON object of a kind storage does not know; raises ValueError if invalid."""

# Structural validation only: used when the caller gives no run bounds, so that a run with
# wider bounds never has valid individuals quarantined by a reader that lacks its config.
STRUCTURE_ONLY = dna_lib.Bounds(
    max_vertices=10**6, max_edges=10**6, max_channels=10**9, max_filter_size=2**31 - 1,
    max_stride=2**30, min_learning_rate=sys.float_info.min, max_learning_rate=sys.float_info.max)

MAX_FITNESS = 1e9  # |fitness| must fit the 6-decimal name format exactly


class PopulationStore:
    """One population directory; safe to use from many processes and machines at once.

    ``keep_best``: keep the weights of the best K dead individuals (by fitness, higher is
    better). ``bounds`` and ``dna_validator``: the run's DNA bounds, and the check of DNA of
    kinds other than ``large_scale``; every DNA read from the store (live, killed, in the
    history) is validated with them (without bounds, only the DNA's structure is checked).
    ``clock``: unix time source (tests pass a fake one to age things).
    """

    def __init__(self, backend: Backend, *, keep_best: int = 0,
                 dna_validator: DnaValidator | None = None, bounds: dna_lib.Bounds | None = None,
                 clock: Callable[[], float] = time.time):
        if keep_best < 0:
            raise ValueError("keep_best must be >= 0")
        self.backend = backend
        self.keep_best = keep_best
        self.dna_validator = dna_validator
        self.bounds = bounds
        self._clock = clock

    @property
    def url(self) -> str:
        """The store's URL (no credentials)."""
        return self.backend.url

    def now(self) -> float:
        """The store's clock (unix seconds): what it writes as times of births and deaths."""
        return self._clock()

    def with_run(self, *, keep_best: int | None = None, bounds: dna_lib.Bounds | None = None,
                 dna_validator: DnaValidator | None = None) -> "PopulationStore":
        """The same store with the run's settings (from its config); None keeps the current."""
        return PopulationStore(
            self.backend, keep_best=self.keep_best if keep_best is None else keep_best,
            dna_validator=dna_validator or self.dna_validator, bounds=bounds or self.bounds,
            clock=self._clock)

    def with_keep_best(self, keep_best: int) -> "PopulationStore":
        """The same store with another ``keep_best`` (e.g. from the run config)."""
        return self.with_run(keep_best=keep_best)

    # ----- the run's config -----
    def init_config(self, text: str) -> bool:
        """Store ``config.json`` if there is none yet; True iff this call stored it."""
        return self.backend.create(CONFIG_KEY, text.encode("utf-8"))

    def read_config(self) -> str:
        """The text of ``config.json``; StoreError if this is not a population directory."""
        try:
            raw = self.backend.read(CONFIG_KEY, MAX_CONFIG_BYTES)
        except FileNotFoundError:
            raise StoreError(f"{self.url}: no config.json "
                             "(not a population directory; run 'evo init')") from None
        except UnreadableEntry as exc:
            raise StoreError(f"{self.url}/{exc}") from None
        except OSError as exc:  # the store itself is unreachable or forbidden
            raise StoreError(f"{self.url}: cannot read config.json: {exc.strerror or exc}") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError(f"{self.url}/config.json is not UTF-8 text") from None

    # ----- the live population -----
    def list_alive(self) -> list[IndividualInfo]:
        """Live individuals (id, fitness, birth), oldest first, from ONE listing; reads nothing.

        May include a *zombie* (killed by a worker that crashed before cleaning up): killing
        it again returns False and removes it from the listing.
        """
        infos = [parse_alive_name(n) for n in self.backend.list(ALIVE)]
        return sorted((i for i in infos if i is not None), key=lambda i: i.id)

    def still_listed(self, info: IndividualInfo) -> bool:
        """True if ``info``'s commit is still in ``alive/`` now (one stat, no listing)."""
        return self.backend.exists(info.key)

    def find(self, ident: str) -> IndividualInfo | None:
        """The listing entry of a live individual, or None (costs one listing)."""
        check_id(ident)
        return next((i for i in self.list_alive() if i.id == ident), None)

    def scan_alive(self, infos: list[IndividualInfo] | None = None,
                   ) -> Iterator[tuple[IndividualInfo, dict[str, Any] | Broken | None]]:
        """For each live individual (``infos``, default: one listing), its checked commit
        (DNA validated against the run's bounds), a Broken naming its problem, or None if it
        left the listing meanwhile. Reads in bounded batches; quarantines nothing."""
        infos = self.list_alive() if infos is None else infos
        by_key = {i.key: i for i in infos}

        def check(key: str, obj: Any) -> dict[str, Any]:
            commit = check_commit(obj, by_key[key])
            check_dna(commit["dna"], self.bounds, self.dna_validator)
            return commit

        for start in range(0, len(infos), READ_BATCH):
            batch = infos[start:start + READ_BATCH]
            got = dict(read_checked(self.backend, [i.key for i in batch], "commit", check))
            for info in batch:
                yield info, got.get(info.key)

    def _resolve(self, target: IndividualInfo | str) -> IndividualInfo | None:
        return target if isinstance(target, IndividualInfo) else self.find(target)

    def read_individual(self, target: IndividualInfo | str, bounds: dna_lib.Bounds | None = None,
                        dna_validator: DnaValidator | None = None) -> Individual | None:
        """The whole individual (commit checked, DNA validated, weights' sha256 verified).

        None if it is gone (killed meanwhile) or corrupt; a corrupt one is moved to
        ``quarantine/`` with the reason and logged once. Pass the run's ``bounds`` to
        enforce them (without, only the DNA's structure is checked).
        """
        info = self._resolve(target)
        if info is None:
            return None
        try:
            raw = self.backend.read(info.key)
        except FileNotFoundError:
            return None
        except UnreadableEntry as exc:
            self._quarantine(info, f"commit {exc.problem}", unusable=True)
            return None
        try:
            commit = self.verify_commit(info, raw, bounds, dna_validator)
        except CorruptRecord as exc:
            self._quarantine(info, str(exc), raw=raw)
            return None
        try:
            weights = self.backend.read(commit["payload"], max_bytes=commit["payload_size"])
        except FileNotFoundError:
            if self._is_dead_or_gone(info):
                return None
            self._quarantine(info, weights_size_problem(None, 0), raw=raw)
            return None
        except UnreadableEntry as exc:
            self._quarantine(info, f"weights {exc.problem}", raw=raw)
            return None
        try:
            verify_weights(commit, weights)
        except CorruptRecord as exc:
            self._quarantine(info, str(exc), raw=raw)
            return None
        return individual_from(commit, weights)

    def verify_commit(self, info: IndividualInfo, raw: bytes, bounds: dna_lib.Bounds | None = None,
                       dna_validator: DnaValidator | None = None) -> dict[str, Any]:
        """The commit object ``raw`` of ``info``, checked field by field and its DNA validated
        (against ``bounds``/``dna_validator``, else the store's); CorruptRecord if not."""
        commit = check_commit(loads(raw, "commit"), info)
        check_dna(commit["dna"], bounds or self.bounds, dna_validator or self.dna_validator)
        return commit

    def _is_dead_or_gone(self, info: IndividualInfo) -> bool:
        if self.backend.exists(history_key(info.id)):
            self.backend.delete(info.key)  # a zombie: take it off the listing
            return True
        return not self.backend.exists(info.key)

    # ----- publish -----
    def publish(self, dna: dict[str, Any], weights: bytes, *, parent: str | None, mutation: str,
                fitness: float, worker: str, metrics: dict[str, Any] | None = None) -> IndividualInfo:
        """Make a new individual visible, whole, in one step; return its listing entry.

        ``dna`` is the DNA as a JSON object (``DNA.to_dict()``), ``weights`` a safetensors
        blob. Writes the weights under a unique name, then creates the commit object.
        Bad arguments raise ValueError; nothing is written then.
        """
        if not isinstance(fitness, (int, float)) or isinstance(fitness, bool) \
                or not math.isfinite(fitness) or abs(fitness) >= MAX_FITNESS:
            raise ValueError(f"fitness must be a finite number below {MAX_FITNESS:g} in size, "
                             f"got {fitness!r}")
        if not isinstance(dna, dict):
            raise ValueError("dna must be a JSON object (DNA.to_dict())")
        if parent is not None:
            check_id(parent)
        if not isinstance(mutation, str) or len(mutation) > 64:
            raise ValueError(f"bad mutation name {mutation!r}")
        if not isinstance(worker, str) or len(worker) > 256:
            raise ValueError("worker must be a string of at most 256 characters")
        metrics = dict(metrics or {})
        weights = bytes(weights)
        problem = safetensors_problem(weights)
        if problem:
            raise ValueError(f"weights are not a valid safetensors blob: {problem}")
        try:
            dumps(dna)
            dumps(metrics)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"dna and metrics must be finite JSON data: {exc}") from None
        sha = hashlib.sha256(weights).hexdigest()
        fitness = float(fitness)
        for _ in range(3):  # a new id only on the (practically impossible) id collision
            ident, birth = new_id(self._clock())
            pkey = payload_key(ident, secrets.token_hex(8))
            self.backend.write(pkey, weights)
            crash_point("publish:after_payload")
            commit = {
                "schema": 1, "id": ident, "parent": parent, "mutation": mutation, "dna": dna,
                "dna_hash": dna_hash(dna), "fitness": fitness, "birth": birth, "worker": worker,
                "metrics": metrics, "payload": pkey, "payload_sha256": sha,
                "payload_size": len(weights),
            }
            key = alive_key(ident, fitness)
            crash_point("publish:before_commit")
            if self.backend.create(key, dumps(commit)):
                crash_point("publish:after_commit")
                info = parse_alive_name(key.split("/", 1)[1])
                assert info is not None
                return info
            self.backend.delete(pkey)
        raise StoreError(f"{self.url}: could not find a free id to publish under")

    # ----- kill -----
    def kill(self, target: IndividualInfo | str, *, worker: str, reason: str = "selection") -> bool:
        """Kill a live individual, exactly once across all workers.

        True iff this call killed it: its history record is written, and its weights are
        deleted (or kept when it is among the best ``keep_best`` dead). False if it was
        already dead or gone (pick another), or corrupt (then it is quarantined).
        """
        info = self._resolve(target)
        if info is None:
            return False
        try:
            raw = self.backend.read(info.key)
        except FileNotFoundError:
            return False
        except UnreadableEntry as exc:
            self._quarantine(info, f"commit {exc.problem}", unusable=True)
            return False
        try:  # validated like any read: nothing unchecked goes into history/
            commit = self.verify_commit(info, raw)
        except CorruptRecord as exc:
            self._quarantine(info, str(exc), raw=raw)
            return False
        record = dict(commit, death=self._clock(), killer=str(worker)[:256], reason=str(reason)[:64])
        if not self.backend.create(history_key(info.id), dumps(record)):
            # Already dead. Deleting the alive entry is harmless (the killer does the same)
            # and stops selection from picking a zombie whose killer crashed.
            self.backend.delete(info.key)
            return False
        crash_point("kill:after_claim")
        self._finish_kill(record, info.key)
        return True

    def _finish_kill(self, record: dict[str, Any], key: str) -> None:
        """After a won kill: decide whether to keep the weights, unlist, delete the weights."""
        kept = self.keep_best > 0 and self.keep_weights_if_best(record)
        crash_point("kill:after_keep")
        self.backend.delete(key)
        crash_point("kill:after_unlist")
        if not kept:
            self.backend.delete(record["payload"])

    def keep_weights_if_best(self, record: dict[str, Any]) -> bool:
        """Mark a dead individual's weights as kept if it is among the best K; prune the rest.

        Concurrent prunes may briefly leave more than K, never fewer: an entry is pruned
        only by someone who sees K better ones, and the best K are never outranked.
        """
        mine = parse_kept_name(kept_key(record["id"], record["fitness"]).split("/", 1)[1])
        assert mine is not None
        kept = [i for i in (parse_kept_name(n) for n in self.backend.list(KEPT)) if i is not None]
        ranked = sorted({i.id: i for i in kept + [mine]}.values(),
                        key=lambda i: (i.fitness, i.id), reverse=True)
        best = {i.id for i in ranked[:self.keep_best]}
        if mine.id not in best:
            return False
        marker = {"schema": 1, "id": record["id"], "fitness": record["fitness"],
                  "payload": record["payload"], "payload_sha256": record["payload_sha256"],
                  "payload_size": record["payload_size"]}
        self.backend.create(mine.key, dumps(marker))
        for loser in ranked[self.keep_best:]:
            self._unkeep(loser)
        return True

    def _unkeep(self, info: IndividualInfo) -> None:
        try:
            marker = loads(self.backend.read(info.key), "kept marker")
        except FileNotFoundError:
            return
        except (CorruptRecord, UnreadableEntry):
            marker = None
        self.backend.delete(info.key)  # marker first: weights are never pinned but absent
        payload = marker.get("payload") if isinstance(marker, dict) else None
        if isinstance(payload, str) and payload.startswith(PAYLOAD + "/") \
                and parse_payload_name(payload[len(PAYLOAD) + 1:]) == info.id:
            self.backend.delete(payload)

    # ----- quarantine -----
    def quarantine(self, target: IndividualInfo | str, reason: str, *, raw: bytes | None = None,
                   unusable: bool = False) -> bool:
        """Move a live individual to ``quarantine/`` with ``reason``; True iff this call did.

        Its weights stay (for inspection); it leaves the live listing. ``raw``: its commit
        bytes when the caller has read them already; ``unusable``: its commit cannot be read
        as it is (it is then moved aside, never read or copied).
        """
        info = self._resolve(target)
        return False if info is None else self._quarantine(info, reason, raw=raw, unusable=unusable)

    def _quarantine(self, info: IndividualInfo, reason: str, raw: bytes | None = None,
                    unusable: bool = False) -> bool:
        """Record ``reason`` in ``quarantine/{id}.json`` (created once: logged once), then take
        the commit off ``alive/``. A commit that is a JSON object is kept in the record and
        deleted; any other (unreadable, oversized, not JSON) is moved aside as it is, never
        copied, so nothing is lost and no bytes from outside the store enter a record."""
        if raw is None and not unusable:
            try:
                raw = self.backend.read(info.key)
            except FileNotFoundError:
                return False
            except UnreadableEntry:
                unusable = True
        commit = None
        if raw is not None:
            try:
                parsed = loads(raw, "commit")
            except CorruptRecord:
                parsed = None
            commit = parsed if isinstance(parsed, dict) else None
        name = info.key.split("/", 1)[1]
        moved_to = None if commit is not None else moved_key(ALIVE, name)
        record = {
            "schema": 1, "id": info.id, "reason": reason[:500], "time": self._clock(),
            "alive_key": info.key, "commit": commit, "moved_to": moved_to,
        }
        created = self.backend.create(quarantine_key(info.id), dumps(record))
        crash_point("quarantine:after_record")
        if not created and moved_to is not None:  # finish a quarantine whose writer died
            moved_to = self._recorded_move(info.id) or moved_to
        try:
            if moved_to is None:
                self.backend.delete(info.key)
            else:
                self.backend.move_aside(ALIVE, name, moved_to)
        except FileNotFoundError:
            pass  # someone else finished it
        except (OSError, UnreadableEntry) as exc:
            log.warning("%s: could not take %s off the live listing: %s", self.url, info.key,
                        getattr(exc, "strerror", None) or exc)
        if created:
            log.warning("%s: quarantined individual %s: %s", self.url, info.id, reason)
        else:
            log.debug("%s: individual %s was already quarantined", self.url, info.id)
        return created

    def _recorded_move(self, ident: str) -> str | None:
        """Where an existing quarantine record says the entry was moved, if it says so."""
        try:
            rec = loads(self.backend.read(quarantine_key(ident)), "quarantine record")
        except (FileNotFoundError, UnreadableEntry, CorruptRecord):
            return None
        where = rec.get("moved_to") if isinstance(rec, dict) else None
        return where if isinstance(where, str) and where.startswith(MOVED_DIR + "/") and is_key(where) else None

    def list_quarantine(self) -> list[dict[str, Any]]:
        """Quarantine records (id, reason, time, the original commit), by id; unreadable
        ones are skipped with a warning."""
        records, broken = self.scan_quarantine()
        for b in broken:
            log.warning("%s: skipping %s: %s", self.url, b.key, b.problem)
        return records

    def scan_quarantine(self) -> tuple[list[dict[str, Any]], list[Broken]]:
        """(quarantine records by id, the entries of ``quarantine/`` that are broken)."""
        def check(key: str, rec: Any) -> dict[str, Any]:
            if not isinstance(rec, dict) or rec.get("id") != _record_id(key):
                raise CorruptRecord("not a quarantine record of that id")
            return rec
        return _split_broken(read_checked(self.backend, self._record_keys(QUARANTINE),
                                          "quarantine record", check))

    # ----- history -----
    def read_history(self) -> list[dict[str, Any]]:
        """The record of every individual that died (commit fields + death, killer, reason).

        Sorted by death time. Reads every record: for plots and lineage, not the hot path.
        Records that do not check out (including their DNA, against the run's bounds) are
        skipped with a warning; :meth:`scan_history` also returns them.
        """
        records, broken = self.scan_history()
        for b in broken:
            log.warning("%s: skipping %s: %s", self.url, b.key, b.problem)
        return records

    def scan_history(self) -> tuple[list[dict[str, Any]], list[Broken]]:
        """(valid history records sorted by death, the broken entries of ``history/``).

        A record is valid when it checks out like a commit, names the id it is stored
        under, has a death time, and its DNA validates against the run's bounds: nothing
        unchecked reaches a plot, a ranking or a lineage.
        """
        records, broken = _split_broken(read_checked(
            self.backend, self._record_keys(HISTORY), "history record", self.check_history_record))
        return sorted(records, key=lambda r: (r["death"], r["id"])), broken

    def check_history_record(self, key: str, rec: Any) -> dict[str, Any]:
        """``rec`` (parsed from ``key``) if it is a valid history record, DNA validated against
        the run's bounds; CorruptRecord naming the problem if not."""
        rec = check_history(rec, _record_id(key))
        check_dna(rec["dna"], self.bounds, self.dna_validator)
        return rec

    def count_history(self) -> int:
        """How many individuals have died (one listing)."""
        return sum(1 for n in self.backend.list(HISTORY) if parse_record_name(n))

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

    # ----- workers and markers -----
    def heartbeat(self, worker_id: str, info: dict[str, Any] | None = None) -> None:
        """Record that ``worker_id`` is alive now (overwrites its previous heartbeat)."""
        check_safe_name(worker_id, "worker id")
        self.backend.write(f"{WORKERS}/{worker_id}.json",
                           dumps({"worker": worker_id, "time": self._clock(), "info": info or {}}))

    def list_workers(self) -> list[dict[str, Any]]:
        """Latest heartbeat of every worker (``worker``, ``time``, ``info``), by worker id.

        Heartbeats that are unreadable, oversized or malformed are left out.
        """
        keys = [f"{WORKERS}/{n}" for n in self.backend.list(WORKERS)
                if n.endswith(".json") and is_safe_name(n[:-len(".json")])]
        out = []
        for _, beat in read_json(self.backend, sorted(keys), "heartbeat", max_bytes=MAX_HEARTBEAT_BYTES):
            if isinstance(beat, dict) and isinstance(beat.get("worker"), str) \
                    and _finite_number(beat.get("time")):
                out.append(beat)
        return out

    def mark(self, name: str) -> bool:
        """Create marker ``state/{name}`` if absent; True iff this call created it."""
        check_safe_name(name, "marker name")
        return self.backend.create(f"{STATE}/{name}", dumps({"time": self._clock()}))

    def has_mark(self, name: str) -> bool:
        """True if marker ``state/{name}`` exists."""
        check_safe_name(name, "marker name")
        return self.backend.exists(f"{STATE}/{name}")

    def record_launch(self, name: str, info: dict[str, Any]) -> None:
        """Write ``launches/{name}.json`` (``name``, ``time``, ``info``): what a launcher started,
        e.g. a SLURM array's job id, so that ``evo status`` can ask the scheduler about it."""
        check_safe_name(name, "launch name")
        self.backend.write(f"{LAUNCHES}/{name}.json", dumps({"name": name, "time": self._clock(), "info": info}))

    def list_launches(self) -> list[dict[str, Any]]:
        """Every launch record (``name``, ``time``, ``info``), by name; unreadable ones are skipped."""
        keys = [f"{LAUNCHES}/{n}" for n in self.backend.list(LAUNCHES)
                if n.endswith(".json") and is_safe_name(n[:-len(".json")])]
        out = []
        for _, rec in read_json(self.backend, sorted(keys), "launch record", max_bytes=MAX_HEARTBEAT_BYTES):
            if isinstance(rec, dict) and isinstance(rec.get("name"), str) \
                    and _finite_number(rec.get("time")) and isinstance(rec.get("info"), dict):
                out.append(rec)
        return out

    # ----- maintenance -----
    def check(self, repair: bool = False, grace_seconds: float = 3600.0,
              bounds: dna_lib.Bounds | None = None,
              dna_validator: DnaValidator | None = None, deep: bool = False) -> "CheckReport":
        """Audit the store (and with ``repair`` fix it); see :mod:`storage.check`.

        ``deep`` also reads every live individual's weights to verify their checksum.
        """
        from .check import check_store

        return check_store(self, repair=repair, grace_seconds=grace_seconds, bounds=bounds,
                           dna_validator=dna_validator or self.dna_validator, deep=deep)


def _record_id(key: str) -> str | None:
    return parse_record_name(key.rsplit("/", 1)[-1])


def _finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _split_broken(items: Any) -> tuple[list[Any], list[Broken]]:
    good, broken = [], []
    for _, obj in items:
        (broken if isinstance(obj, Broken) else good).append(obj)
    return good, broken


def check_dna(d: dict[str, Any], bounds: dna_lib.Bounds | None,
              validator: DnaValidator | None) -> None:
    """Raise CorruptRecord unless ``d`` is a valid DNA: through ``validator`` when given
    (the run's search space), else by its kind (``large_scale`` or ``nasnet``)."""
    try:
        if validator is not None and d.get("kind") != "large_scale":
            validator(d)
        elif d.get("kind") == "nasnet":
            from dna.nasnet import nasnet_from_dict
            nasnet_from_dict(d, bounds or STRUCTURE_ONLY)
        else:
            dna_lib.validate(dna_lib.from_dict(d), bounds or STRUCTURE_ONLY)
    except CorruptRecord:
        raise
    except ValueError as exc:
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CorruptRecord(f"DNA does not validate: {text}") from None


def weights_size_problem(size: int | None, expected: int) -> str | None:
    """Why weights of ``size`` bytes (None: absent) are not the ``expected`` ones, or None."""
    if size is None:
        return "weights are missing"
    if size < expected:
        return f"weights are truncated ({size} of {expected} bytes)"
    if size > expected:
        return f"weights have {size} bytes, the commit says {expected}"
    return None


def verify_weights(commit: dict[str, Any], weights: bytes) -> None:
    """Raise CorruptRecord unless ``weights`` are the payload the commit describes, whole."""
    problem = weights_size_problem(len(weights), commit["payload_size"])
    if problem:
        raise CorruptRecord(problem)
    if hashlib.sha256(weights).hexdigest() != commit["payload_sha256"]:
        raise CorruptRecord("weights do not match their sha256")
    problem = safetensors_problem(weights)
    if problem:
        raise CorruptRecord(f"weights are not valid safetensors: {problem}")


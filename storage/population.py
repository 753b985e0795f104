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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dna as dna_lib

from .backend import Backend, StoreError
from .crash import crash_point
from .records import (
    ALIVE, CONFIG_KEY, HISTORY, HISTORY_EXTRA, KEPT, LAUNCHES, PAYLOAD, QUARANTINE, STATE, WORKERS,
    CorruptRecord,
    Individual, IndividualInfo, alive_key, check_commit, check_id, check_safe_name, dna_hash,
    dumps, history_key, individual_from, is_safe_name, kept_key, loads, new_id,
    parse_alive_name, parse_kept_name, parse_payload_name, parse_record_name, payload_key,
    quarantine_key,
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
    better). ``dna_validator``: checks DNA of kinds other than ``large_scale``.
    ``clock``: unix time source (tests pass a fake one to age things).
    """

    def __init__(self, backend: Backend, *, keep_best: int = 0,
                 dna_validator: DnaValidator | None = None,
                 clock: Callable[[], float] = time.time):
        if keep_best < 0:
            raise ValueError("keep_best must be >= 0")
        self.backend = backend
        self.keep_best = keep_best
        self.dna_validator = dna_validator
        self._clock = clock

    @property
    def url(self) -> str:
        """The store's URL (no credentials)."""
        return self.backend.url

    def with_keep_best(self, keep_best: int) -> "PopulationStore":
        """The same store with another ``keep_best`` (e.g. from the run config)."""
        return PopulationStore(self.backend, keep_best=keep_best,
                               dna_validator=self.dna_validator, clock=self._clock)

    # ----- the run's config -----
    def init_config(self, text: str) -> bool:
        """Store ``config.json`` if there is none yet; True iff this call stored it."""
        return self.backend.create(CONFIG_KEY, text.encode("utf-8"))

    def read_config(self) -> str:
        """The text of ``config.json``; StoreError if this is not a population directory."""
        try:
            raw = self.backend.read(CONFIG_KEY)
        except FileNotFoundError:
            raise StoreError(f"{self.url}: no config.json "
                             "(not a population directory; run 'evo init')") from None
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

    def find(self, ident: str) -> IndividualInfo | None:
        """The listing entry of a live individual, or None (costs one listing)."""
        check_id(ident)
        return next((i for i in self.list_alive() if i.id == ident), None)

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
        try:
            commit = self._verify_commit(info, raw, bounds, dna_validator)
        except CorruptRecord as exc:
            self._quarantine(info, str(exc), raw=raw)
            return None
        try:
            weights = self.backend.read(commit["payload"])
        except FileNotFoundError:
            if self._is_dead_or_gone(info):
                return None
            self._quarantine(info, weights_size_problem(None, 0), raw=raw)
            return None
        try:
            verify_weights(commit, weights)
        except CorruptRecord as exc:
            self._quarantine(info, str(exc), raw=raw)
            return None
        return individual_from(commit, weights)

    def _verify_commit(self, info: IndividualInfo, raw: bytes, bounds: dna_lib.Bounds | None,
                       dna_validator: DnaValidator | None) -> dict[str, Any]:
        commit = check_commit(loads(raw, "commit"), info)
        check_dna(commit["dna"], bounds, dna_validator or self.dna_validator)
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
        try:
            commit = check_commit(loads(raw, "commit"), info)
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
        kept = self.keep_best > 0 and self._keep_if_best(record)
        crash_point("kill:after_keep")
        self.backend.delete(key)
        crash_point("kill:after_unlist")
        if not kept:
            self.backend.delete(record["payload"])

    def _keep_if_best(self, record: dict[str, Any]) -> bool:
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
        except CorruptRecord:
            marker = None
        self.backend.delete(info.key)  # marker first: weights are never pinned but absent
        payload = marker.get("payload") if isinstance(marker, dict) else None
        if isinstance(payload, str) and payload.startswith(PAYLOAD + "/") \
                and parse_payload_name(payload[len(PAYLOAD) + 1:]) == info.id:
            self.backend.delete(payload)

    # ----- quarantine -----
    def quarantine(self, target: IndividualInfo | str, reason: str) -> bool:
        """Move a live individual to ``quarantine/`` with ``reason``; True iff this call did.

        Its weights stay (for inspection); it leaves the live listing.
        """
        info = self._resolve(target)
        return False if info is None else self._quarantine(info, reason)

    def _quarantine(self, info: IndividualInfo, reason: str, raw: bytes | None = None) -> bool:
        if raw is None:
            try:
                raw = self.backend.read(info.key)
            except FileNotFoundError:
                return False
        try:
            commit = loads(raw, "commit")
        except CorruptRecord:
            commit = None
        record = {
            "schema": 1, "id": info.id, "reason": reason[:500], "time": self._clock(),
            "alive_key": info.key, "commit": commit,
            "commit_text": None if commit is not None else raw[:65536].decode("utf-8", "replace"),
        }
        created = self.backend.create(quarantine_key(info.id), dumps(record))
        crash_point("quarantine:after_record")
        self.backend.delete(info.key)
        if created:
            log.warning("%s: quarantined individual %s: %s", self.url, info.id, reason)
        else:
            log.debug("%s: individual %s was already quarantined", self.url, info.id)
        return created

    def list_quarantine(self) -> list[dict[str, Any]]:
        """Quarantine records (id, reason, time, the original commit), by id."""
        return self._read_records(QUARANTINE, "quarantine record")

    # ----- history -----
    def read_history(self) -> list[dict[str, Any]]:
        """The record of every individual that died (commit fields + death, killer, reason).

        Sorted by death time. Reads every record: for plots and lineage, not the hot path.
        Unreadable records are skipped with a warning.
        """
        out = []
        for rec in self._read_records(HISTORY, "history record"):
            try:
                check_commit(rec, extra=HISTORY_EXTRA)
            except CorruptRecord as exc:
                log.warning("%s: skipping history record %s: %s", self.url, rec.get("id"), exc)
                continue
            out.append(rec)
        return sorted(out, key=lambda r: (r.get("death", 0.0), r["id"]))

    def count_history(self) -> int:
        """How many individuals have died (one listing)."""
        return sum(1 for n in self.backend.list(HISTORY) if parse_record_name(n))

    def _read_records(self, dirname: str, what: str) -> list[dict[str, Any]]:
        keys = [f"{dirname}/{n}" for n in self.backend.list(dirname) if parse_record_name(n)]
        out = []
        for key, raw in sorted(self.backend.read_many(keys).items()):
            if raw is None:
                continue
            try:
                rec = loads(raw, what)
            except CorruptRecord as exc:
                log.warning("%s: skipping %s: %s", self.url, key, exc)
                continue
            if isinstance(rec, dict) and rec.get("id") == parse_record_name(key.split("/", 1)[1]):
                out.append(rec)
            else:
                log.warning("%s: skipping %s: not a record of that id", self.url, key)
        return out

    # ----- kept weights of the dead -----
    def list_kept(self) -> list[IndividualInfo]:
        """Dead individuals whose weights are kept, best first (``keep_best``)."""
        infos = [parse_kept_name(n) for n in self.backend.list(KEPT)]
        return sorted((i for i in infos if i is not None), key=lambda i: (i.fitness, i.id), reverse=True)

    def read_kept(self, target: IndividualInfo | str) -> Individual | None:
        """A dead individual with kept weights, verified like a live one; None if unavailable."""
        ident = target.id if isinstance(target, IndividualInfo) else check_id(target)
        try:
            record = check_commit(loads(self.backend.read(history_key(ident)), "history record"),
                                  extra=HISTORY_EXTRA)
            weights = self.backend.read(record["payload"])
            verify_weights(record, weights)
        except FileNotFoundError:
            return None
        except CorruptRecord as exc:
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
        """Latest heartbeat of every worker (``worker``, ``time``, ``info``), by worker id."""
        keys = [f"{WORKERS}/{n}" for n in self.backend.list(WORKERS)
                if n.endswith(".json") and is_safe_name(n[:-len(".json")])]
        out = []
        for key, raw in sorted(self.backend.read_many(keys).items()):
            try:
                beat = loads(raw, "heartbeat") if raw is not None else None
            except CorruptRecord:
                beat = None
            if isinstance(beat, dict) and isinstance(beat.get("worker"), str) \
                    and isinstance(beat.get("time"), (int, float)):
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
        for _, raw in sorted(self.backend.read_many(keys).items()):
            try:
                rec = loads(raw, "launch record") if raw is not None else None
            except CorruptRecord:
                rec = None
            if isinstance(rec, dict) and isinstance(rec.get("name"), str) \
                    and isinstance(rec.get("time"), (int, float)) and isinstance(rec.get("info"), dict):
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


def check_dna(d: dict[str, Any], bounds: dna_lib.Bounds | None,
              validator: DnaValidator | None) -> None:
    """Raise CorruptRecord unless ``d`` is a valid DNA (large_scale, or via ``validator``)."""
    try:
        if validator is None or d.get("kind") == "large_scale":
            dna_lib.validate(dna_lib.from_dict(d), bounds or STRUCTURE_ONLY)
        else:
            validator(d)
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


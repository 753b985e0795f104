"""The population store: the evolution's shared state, written once over a backend's primitives.

Protocols (docs/layout.md has the full picture):

- Publish: the weights go to a unique name under ``payload/``; then the small commit object
  ``alive/{id}~{fitness}.json`` is *created only if absent*. The individual exists exactly
  when its commit object does, and the commit names a payload that is already whole.
- Kill: the killer reads the victim's commit and creates ``history/{id}.json`` only if
  absent. Whoever creates it is the one killer; everyone else learns "already dead". The
  killer then (maybe keeps the weights, :mod:`storage.kept`) deletes the alive entry, then
  the payload.
- Corruption found while reading moves the entry to ``quarantine/`` (create-if-absent, so it
  is logged once; :mod:`storage.quarantine`) and the reader gets None; nothing from the
  store is ever unpickled.

No locks: every exclusive step is one ``Backend.create``. A crash at any point leaves either
nothing visible or a whole individual, plus garbage that ``check(repair=True)`` removes.

:class:`PopulationStore` is the one entry point; its parts live along their seams: the
backend, settings, config and live listing (:mod:`storage.core`), whole-population readers
(:mod:`storage.readers`), quarantine, kept weights, heartbeats/markers/launch records
(:mod:`storage.runinfo`) and final trainings (:mod:`storage.retrain`).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import dna as dna_lib
from dna.numbers import is_finite_number

from .backend import StoreError, UnreadableEntry
from .check import CheckReport, check_store
from .datacache import DataCaches
from .kept import KeptWeights
from .policy import PolicyRecords
from .quarantine import Quarantining
from .readers import PopulationReaders
from .retrain import RetrainRecords
from .rollup import HistoryRollups
from .records import (
    CorruptRecord, Individual, IndividualInfo, alive_key, check_id, dna_hash, dumps, history_key,
    individual_from, new_id, parse_alive_name, payload_key,
)
from .runinfo import RunRecords
from .safetensors_check import safetensors_problem
from .verify import DnaValidator, verify_weights, weights_size_problem

MAX_FITNESS = 1e9  # |fitness| must fit the 6-decimal name format exactly


class PopulationStore(Quarantining, KeptWeights, PopulationReaders, HistoryRollups, RunRecords, DataCaches,
                      RetrainRecords, PolicyRecords):
    """One population directory; safe to use from many processes and machines at once.

    ``PopulationStore(backend, keep_best=K, dna_validator=..., bounds=..., clock=...,
    fault=...)``: see :class:`storage.core.StoreCore` for what each setting means.
    """

    def read_individual(self, target: IndividualInfo | str, bounds: dna_lib.Bounds | None = None,
                        dna_validator: DnaValidator | None = None) -> Individual | None:
        """The whole individual (commit checked, DNA validated, weights' sha256 verified).

        None if it is gone (killed meanwhile) or corrupt; a corrupt one is moved to
        ``quarantine/`` with the reason and logged once. Pass the run's ``bounds`` to
        enforce them (without, only the DNA's structure is checked).
        """
        info = self._resolve(target)
        got = None if info is None else self._read_commit(info, bounds, dna_validator)
        if got is None:
            return None
        raw, commit = got
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

    def _read_commit(self, info: IndividualInfo, bounds: dna_lib.Bounds | None = None,
                     dna_validator: DnaValidator | None = None) -> tuple[bytes, dict[str, Any]] | None:
        """(raw, checked commit) of a listed individual; None if it is gone, or if it does not
        check out (then it is quarantined)."""
        try:
            raw = self.backend.read(info.key)
        except FileNotFoundError:
            return None
        except UnreadableEntry as exc:
            self._quarantine(info, f"commit {exc.problem}", unusable=True)
            return None
        try:
            return raw, self.verify_commit(info, raw, bounds, dna_validator)
        except CorruptRecord as exc:
            self._quarantine(info, str(exc), raw=raw)
            return None

    def _is_dead_or_gone(self, info: IndividualInfo) -> bool:
        # (a rolled-up record is no longer in history/, but then info is no longer listed either)
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
        if not is_finite_number(fitness) or abs(fitness) >= MAX_FITNESS:
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
            self.fault("publish:after_payload")
            commit = {
                "schema": 1, "id": ident, "parent": parent, "mutation": mutation, "dna": dna,
                "dna_hash": dna_hash(dna), "fitness": fitness, "birth": birth, "worker": worker,
                "metrics": metrics, "payload": pkey, "payload_sha256": sha,
                "payload_size": len(weights),
            }
            key = alive_key(ident, fitness)
            self.fault("publish:before_commit")
            if self.backend.create(key, dumps(commit)):
                self.fault("publish:after_commit")
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
        # validated like any read: nothing unchecked goes into history/
        got = None if info is None else self._read_commit(info)
        if got is None:
            return False
        record = dict(got[1], death=self._clock(), killer=str(worker)[:256], reason=str(reason)[:64])
        if not self.backend.create(history_key(info.id), dumps(record)):
            # Already dead. Deleting the alive entry is harmless (the killer does the same)
            # and stops selection from picking a zombie whose killer crashed.
            self.backend.delete(info.key)
            return False
        self.fault("kill:after_claim")
        self._finish_kill(record, info.key)
        return True

    def _finish_kill(self, record: dict[str, Any], key: str) -> None:
        """After a won kill: decide whether to keep the weights, unlist, delete the weights."""
        kept = self.keep_best > 0 and self.keep_weights_if_best(record)
        self.fault("kill:after_keep")
        self.backend.delete(key)
        self.fault("kill:after_unlist")
        if not kept:
            self.backend.delete(record["payload"])

    # ----- maintenance -----
    def check(self, repair: bool = False, grace_seconds: float = 3600.0,
              bounds: dna_lib.Bounds | None = None,
              dna_validator: DnaValidator | None = None, deep: bool = False) -> CheckReport:
        """Audit the store (and with ``repair`` fix it); see :mod:`storage.check`.

        ``deep`` also reads every live individual's weights to verify their checksum.
        """
        return check_store(self, repair=repair, grace_seconds=grace_seconds, bounds=bounds,
                           dna_validator=dna_validator or self.dna_validator, deep=deep)

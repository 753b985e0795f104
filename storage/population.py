"""The live population: the individuals in ``alive/``, and how they are born, read, killed and
quarantined (the store's ``population`` facet; :mod:`storage.store` has the whole store).

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

The shared core (backend, settings, live listing) is :mod:`storage.core`; the quarantine
step is :mod:`storage.quarantine`, the keep-best step :mod:`storage.kept`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from typing import Any

import dna as dna_lib
from dna.numbers import is_finite_number

from .backend import TEMP_PREFIX, StoreError, UnreadableEntry
from .core import StoreCore
from .immutable import read_immutable
from .kept import keep_weights_if_best
from .quarantine import quarantine
from .reading import READ_BATCH, Broken
from .records import (
    ALIVE, HISTORY, CorruptRecord, Individual, IndividualInfo, alive_key, bounded_metrics, check_commit, check_id,
    dna_hash, dumps, history_key, individual_from, loads, new_id, parse_alive_name, payload_key, same_individual,
)
from .safetensors_check import safetensors_problem
from .segments import SEGMENTS
from .verify import DnaValidator, check_dna, verify_weights, weights_size_problem

Commit = dict[str, Any]
MAX_FITNESS = 1e9  # |fitness| must fit the 6-decimal name format exactly


class Population:
    """The live population of one store; safe to use from many processes and machines at once.

    Contract: ``list_alive`` lists without reading; ``read_individual`` returns a whole,
    verified individual or None (a corrupt one is quarantined on the way); ``publish`` makes
    an individual visible whole or not at all; ``kill`` succeeds for exactly one caller.
    Reading and killing never raise for a damaged entry (it is quarantined instead); only
    ``verify_commit``, the check ``evo check`` uses, raises CorruptRecord.
    """

    def __init__(self, core: StoreCore):
        self._core = core
        self._backend = core.backend

    # ----- the listing -----
    def list_alive(self) -> list[IndividualInfo]:
        """Live individuals (id, fitness, birth), oldest first, from ONE listing; reads nothing.

        May include a *zombie* (killed by a worker that crashed before cleaning up): killing
        it again returns False and removes it from the listing.
        """
        return self._core.list_alive()

    def find(self, ident: str) -> IndividualInfo | None:
        """The listing entry of a live individual, or None (costs one listing)."""
        return self._core.find(ident)

    def still_listed(self, info: IndividualInfo) -> bool:
        """True if ``info``'s commit is still in ``alive/`` now (one stat, no listing)."""
        return self._backend.exists(info.key)

    def has_individuals(self) -> bool:
        """True if ``alive/``, ``history/`` or ``segments/`` holds anything but temp files
        (three listings): the store has (had) individuals, whatever state their names are in."""
        return any(not name.startswith(TEMP_PREFIX)
                   for folder in (ALIVE, HISTORY, SEGMENTS) for name in self._backend.list(folder))

    # ----- reading -----
    def scan_alive(self, infos: list[IndividualInfo] | None = None, *, with_dna: bool = True,
                   ) -> Iterator[tuple[IndividualInfo, Commit | Broken | None]]:
        """For each live individual (``infos``, default: one listing), its checked commit
        (DNA validated against the run's bounds), a Broken naming its problem, or None if it
        left the listing meanwhile. Reads in bounded batches; quarantines nothing.
        ``with_dna=False``: the DNA is neither checked nor returned."""
        core = self._core
        infos = self.list_alive() if infos is None else infos
        by_key = {i.key: i for i in infos}

        def check(key: str, obj: Any) -> Commit:
            commit = check_commit(obj, by_key[key], with_dna=with_dna)
            if with_dna:
                check_dna(commit["dna"], core.bounds, core.dna_validator)
            return commit

        # A commit object is created once under a name never reused: what was read under a
        # name stays true (the listing, asked afresh each time, says whether it still exists).
        for start in range(0, len(infos), READ_BATCH):
            batch = infos[start:start + READ_BATCH]
            got = read_immutable(core, [i.key for i in batch], "commit", check,
                                 "commit" if with_dna else "commit-nodna")
            for info in batch:
                yield info, got.get(info.key)

    def verify_commit(self, info: IndividualInfo, raw: bytes, bounds: dna_lib.Bounds | None = None,
                      dna_validator: DnaValidator | None = None) -> Commit:
        """The commit object ``raw`` of ``info``, checked field by field and its DNA validated
        (against ``bounds``/``dna_validator``, else the store's); CorruptRecord if not."""
        commit = check_commit(loads(raw, "commit"), info)
        check_dna(commit["dna"], bounds or self._core.bounds, dna_validator or self._core.dna_validator)
        return commit

    def read_individual(self, target: IndividualInfo | str, bounds: dna_lib.Bounds | None = None,
                        dna_validator: DnaValidator | None = None) -> Individual | None:
        """The whole individual (commit checked, DNA validated, weights' sha256 verified).

        None if it is gone (killed meanwhile) or corrupt; a corrupt one is moved to
        ``quarantine/`` with the reason and logged once. Pass the run's ``bounds`` to
        enforce them (without, only the DNA's structure is checked).
        """
        info = self._core.resolve(target)
        got = None if info is None else self._read_commit(info, bounds, dna_validator)
        if got is None:
            return None
        raw, commit = got
        try:
            weights = self._backend.read(commit["payload"], max_bytes=commit["payload_size"])
        except FileNotFoundError:
            if self._is_dead_or_gone(info):
                return None
            quarantine(self._core, info, weights_size_problem(None, 0), raw=raw)
            return None
        except UnreadableEntry as exc:
            quarantine(self._core, info, f"weights {exc.problem}", raw=raw)
            return None
        try:
            verify_weights(commit, weights)
        except CorruptRecord as exc:
            quarantine(self._core, info, str(exc), raw=raw)
            return None
        return individual_from(commit, weights)

    def _read_commit(self, info: IndividualInfo, bounds: dna_lib.Bounds | None = None,
                     dna_validator: DnaValidator | None = None) -> tuple[bytes, dict[str, Any]] | None:
        """(raw, checked commit) of a listed individual; None if it is gone, or if it does not
        check out (then it is quarantined)."""
        try:
            raw = self._backend.read(info.key)
        except FileNotFoundError:
            return None
        except UnreadableEntry as exc:
            quarantine(self._core, info, f"commit {exc.problem}", unusable=True)
            return None
        try:
            return raw, self.verify_commit(info, raw, bounds, dna_validator)
        except CorruptRecord as exc:
            quarantine(self._core, info, str(exc), raw=raw)
            return None

    def _is_dead_or_gone(self, info: IndividualInfo) -> bool:
        # (a rolled-up record is no longer in history/, but then info is no longer listed either)
        if self._backend.exists(history_key(info.id)):
            self._backend.delete(info.key)  # a zombie: take it off the listing
            return True
        return not self._backend.exists(info.key)

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
        # as a reader will see them (plain JSON types), within the bounds every reader checks
        metrics = bounded_metrics(json.loads(dumps(metrics)))
        sha = hashlib.sha256(weights).hexdigest()
        fitness = float(fitness)
        for _ in range(3):  # a new id only on the (practically impossible) id collision
            ident, birth = new_id(self._core.now())
            pkey = payload_key(ident, secrets.token_hex(8))
            self._backend.write(pkey, weights)
            self._core.fault("publish:after_payload")
            commit = {
                "schema": 1, "id": ident, "parent": parent, "mutation": mutation, "dna": dna,
                "dna_hash": dna_hash(dna), "fitness": fitness, "birth": birth, "worker": worker,
                "metrics": metrics, "payload": pkey, "payload_sha256": sha,
                "payload_size": len(weights),
            }
            key = alive_key(ident, fitness)
            self._core.fault("publish:before_commit")
            if self._backend.create(key, dumps(commit)):
                self._core.fault("publish:after_commit")
                info = parse_alive_name(key.split("/", 1)[1])
                assert info is not None
                return info
            self._backend.delete(pkey)
        raise StoreError(f"{self._core.url}: could not find a free id to publish under")

    # ----- kill -----
    def kill(self, target: IndividualInfo | str, *, worker: str, reason: str = "selection") -> bool:
        """Kill a live individual, exactly once across all workers.

        True iff this call killed it: its history record is written, and its weights are
        deleted (or kept when it is among the best ``keep_best`` dead). False if it was
        already dead or gone (pick another), or corrupt (then it is quarantined).
        """
        info = self._core.resolve(target)
        # validated like any read: nothing unchecked goes into history/
        got = None if info is None else self._read_commit(info)
        if got is None:
            return False
        record = dict(got[1], death=self._core.now(), killer=str(worker)[:256], reason=str(reason)[:64])
        if not self._create_kill_marker(info, got[1], record):
            return False
        self._core.fault("kill:after_claim")
        self._finish_kill(record, info.key)
        return True

    def _create_kill_marker(self, info: IndividualInfo, commit: dict[str, Any], record: dict[str, Any]) -> bool:
        """Create ``history/{id}.json``; True iff this call did. When it exists already, the
        victim is dead only by its own evidence: a marker holding its very commit (another
        killer won; the victim is unlisted, harmless if that killer does it too, and it stops
        selection from picking a zombie whose killer crashed). Anything else there (planted,
        unparsable, another individual's) is foreign: the living win, so the victim stays
        listed; the entry is moved aside and the create tried once more."""
        key = history_key(info.id)
        for _ in range(2):
            if self._backend.create(key, dumps(record)):
                return True
            try:
                marker = loads(self._backend.read(key), "kill marker")
            except FileNotFoundError:
                continue                       # moved aside meanwhile: try again
            except (UnreadableEntry, CorruptRecord):
                marker = None
            if isinstance(marker, dict) and same_individual(marker, commit):
                self._backend.delete(info.key)
                return False
            try:
                self._backend.move_aside(HISTORY, key.split("/", 1)[1])
            except FileNotFoundError:
                continue
            except (OSError, UnreadableEntry, StoreError):
                return False                   # the store refuses: this victim is not ours to kill now
        return False

    def _finish_kill(self, record: dict[str, Any], key: str) -> None:
        """After a won kill: decide whether to keep the weights, unlist, delete the weights."""
        kept = self._core.keep_best > 0 and keep_weights_if_best(self._core, record)
        self._core.fault("kill:after_keep")
        self._backend.delete(key)
        self._core.fault("kill:after_unlist")
        if not kept:
            self._backend.delete(record["payload"])

    # ----- quarantine and kept weights -----
    def quarantine(self, target: IndividualInfo | str, reason: str, *, raw: bytes | None = None,
                   unusable: bool = False) -> bool:
        """Move a live individual to ``quarantine/`` with ``reason``; True iff this call did.

        Its weights stay (for inspection); it leaves the live listing. ``raw``: its commit
        bytes when the caller has read them already; ``unusable``: its commit cannot be read
        as it is (it is then moved aside, never read or copied).
        """
        info = self._core.resolve(target)
        return False if info is None else quarantine(self._core, info, reason, raw=raw, unusable=unusable)

    def keep_weights_if_best(self, record: dict[str, Any]) -> bool:
        """Mark a dead individual's weights as kept if it is among the best ``keep_best``;
        prune the rest (see :mod:`storage.kept`). True iff they are kept."""
        return keep_weights_if_best(self._core, record)

"""The ``retrain/`` half of ``evo check`` (:mod:`storage.check`): final trainings' records.

Each request ``retrain/{rid}.json`` must check out; its folder ``retrain/{rid}/`` may hold
only the names :mod:`storage.retrain` writes (claims, heartbeats, checkpoints, metrics, the
result and ``export/``). A result must check out, and with ``--deep`` its exported files
must match their SHA-256. A checkpoint whose weights are missing is torn (repair: its commit
is deleted; the one before it is resumed from); checkpoint weights no commit names, and the
checkpoints of a finished retrain, are orphans once the grace period has passed (repair:
delete). Anything else is stray (reported, never deleted) or foreign (repair: moved aside).

Untrusted entries (repair: moved aside): a request that does not check out (sizes out of
bounds included) or that names a dataset path other than config.json's; claims that are not
in the verified chain (``storage.retrain``: garbage, dated in the future, numbered beyond the
chain's end) and heartbeats of no valid claim or dated in the future. The chain's valid
claims, their heartbeats and every legitimate request are never touched.
"""

from __future__ import annotations

import re
from typing import Any

from dna.strict_json import UntrustedJSONError, parse_json

from .backend import TEMP_PREFIX, UnreadableEntry
from .check_records import Findings
from .reading import Broken, read_json
from .records import CONFIG_KEY, MAX_CONFIG_BYTES, CorruptRecord, loads
from .retrain import RetrainQueue
from .retrain_format import (
    BEAT_NAME, CKPT_NAME, CKPT_BLOB_NAME, CLAIM_NAME, RETRAIN, beat_problem, check_request, check_result,
    is_retrain_id,
)

_EXPORT_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}")
EXPORT_DIR, PACKAGE_DIR = "export", "evo_model"


class RetrainAudits(Findings):
    """``audit_retrain``: see the module docstring."""

    retrains = 0

    def audit_retrain(self) -> None:
        """Every request, and every retrain folder's names and records."""
        backend = self.backend
        names = backend.list(RETRAIN)
        rids = set()
        keys = []
        for name in sorted(names):
            if name.startswith(TEMP_PREFIX):
                self._temp(RETRAIN, name)
            elif name.endswith(".json") and is_retrain_id(name[:-len(".json")]):
                rids.add(name[:-len(".json")])
                keys.append(f"{RETRAIN}/{name}")
            else:
                self.stray(f"{RETRAIN}/{name}", f"{RETRAIN}/{name} is not a retrain request")
        for key, obj in read_json(backend, keys, "retrain request", batch=64):
            if isinstance(obj, Broken):
                self._unreadable(key, obj.problem)
                continue
            try:
                check_request(obj, key.rsplit("/", 1)[1][:-len(".json")])
            except CorruptRecord as exc:
                self.problem("corrupt", f"{key}: {exc}")
                if self.repair:
                    self._move_aside(key, "corrupt")
                continue
            run_dataset = self._run_dataset()
            if run_dataset is not None and "=" in obj["dataset"] and obj["dataset"] != run_dataset:
                self.problem("untrusted", f"{key} names a dataset path other than config.json's; "
                                          "evo retrain --pending refuses it")
                if self.repair:
                    self._move_aside(key, "untrusted")
        folders = set()
        for entry in backend.list_foreign(RETRAIN):
            if entry.what == "a directory" and is_retrain_id(entry.name):
                folders.add(entry.name)
            else:
                self._foreign_entry(RETRAIN, entry.name, entry.what)
        for rid in sorted(rids | folders):
            self._audit_one(rid, has_request=rid in rids)
        self.retrains = len(rids)

    def _audit_one(self, rid: str, has_request: bool) -> None:
        backend = self.backend
        folder = f"{RETRAIN}/{rid}"
        names = backend.list_detail(folder)
        if not has_request and names:
            self.problem("stray", f"{folder}/ has no request {folder}.json")
        by_name = {e.name: e for e in names}
        commits: dict[int, str] = {}
        blobs: dict[int, list[str]] = {}
        for name in sorted(by_name):
            if name.startswith(TEMP_PREFIX):
                self._temp(folder, name)
            elif m := CKPT_NAME.fullmatch(name):
                commits[int(m.group(1))] = name
            elif m := CKPT_BLOB_NAME.fullmatch(name):
                blobs.setdefault(int(m.group(1)), []).append(name)
            elif not (CLAIM_NAME.fullmatch(name) or BEAT_NAME.fullmatch(name) or name in ("metrics.json", "result.json")):
                self.stray(f"{folder}/{name}", f"{folder}/{name} is not part of a retrain")
        holes = self._audit_claims(rid, folder, by_name)
        done = "result.json" in by_name
        result = None
        if done:
            result = self._check_result(rid)
        referenced = set()
        for step, name in sorted(commits.items()):
            commit = self._load(f"{folder}/{name}")
            blob = commit.get("blob") if isinstance(commit, dict) else None
            if not isinstance(blob, str) or blob not in by_name:
                self.problem("torn", f"{folder}/{name}: its weights are missing")
                if self.repair and backend.delete(f"{folder}/{name}"):
                    self.fixed("torn")
                continue
            referenced.add(blob)
            if done:  # a finished retrain needs no checkpoint
                self._orphan(folder, name, by_name[name].mtime)
                self._orphan(folder, blob, by_name[blob].mtime)
        for step, group in blobs.items():
            for name in group:
                if name not in referenced:
                    self._orphan(folder, name, by_name[name].mtime)
        for entry in backend.list_foreign(folder):
            if entry.what == "a directory" and entry.name == EXPORT_DIR:
                self._audit_export(f"{folder}/{EXPORT_DIR}", result)
            else:
                self._foreign_entry(folder, entry.name, entry.what)
        if self.repair:   # foreign entries moved out of the chain leave dead claims in their place
            queue = RetrainQueue(self.store)
            for n in holes:
                queue.fill_claim(rid, n)

    def _check_result(self, rid: str) -> dict | None:
        key = f"{RETRAIN}/{rid}/result.json"
        obj = self._load(key, report=True)
        if obj is None:
            return None
        try:
            result = check_result(obj, rid)
        except CorruptRecord as exc:
            self.problem("corrupt", f"{key}: {exc}")
            return None
        if self.deep:
            for name, spec in result["files"].items():
                fkey = f"{RETRAIN}/{rid}/{EXPORT_DIR}/{name}"
                try:   # hashed while streaming, never held
                    self.backend.verify(fkey, spec["size"], spec["sha256"])
                except FileNotFoundError:
                    self.problem("torn", f"{fkey} is missing")
                except UnreadableEntry as exc:
                    self.problem("corrupt", f"{fkey}: {exc.problem} (against result.json)")
                except ValueError as exc:
                    self.problem("corrupt", f"{fkey}: {exc}")
        return result

    def _audit_export(self, folder: str, result: dict | None) -> None:
        listed = set(result["files"]) if result else None
        for sub, prefix in ((folder, ""), (f"{folder}/{PACKAGE_DIR}", f"{PACKAGE_DIR}/")):
            for name in self.backend.list(sub):
                if name.startswith(TEMP_PREFIX):
                    self._temp(sub, name)
                elif not _EXPORT_FILE.fullmatch(name) or (listed is not None and prefix + name not in listed):
                    self.stray(f"{sub}/{name}", f"{sub}/{name} is not a file of the exported model")
            for entry in self.backend.list_foreign(sub):
                if not (sub == folder and entry.what == "a directory" and entry.name == PACKAGE_DIR):
                    self._foreign_entry(sub, entry.name, entry.what)

    def _audit_claims(self, rid: str, folder: str, by_name: dict) -> list[int]:
        """Claims outside the verified chain (or foreign in it) and heartbeats of no valid
        claim, or dated in the future: reported; repair moves them aside. Returns the numbers
        inside the chain held by foreign entries (repair fills them with dead claims once the
        entries are moved aside, so that the claims after them stay in the chain)."""
        queue = RetrainQueue(self.store)
        _, end, foreign = queue.claim_chain(rid)
        valid = set()
        for name in sorted(by_name):
            if m := CLAIM_NAME.fullmatch(name):
                n = int(m.group(1))
                if n >= end or n in foreign:
                    self._untrusted(f"{folder}/{name}", "is beyond the chain of claims" if n >= end
                                    else "is not a valid claim (or dated in the future)")
                else:
                    valid.add(n)
        for name in sorted(by_name):
            if m := BEAT_NAME.fullmatch(name):
                n = int(m.group(1))
                why = "belongs to no valid claim" if n not in valid else beat_problem(
                    self._load(f"{folder}/{name}"), n, self.now)
                if why:
                    self._untrusted(f"{folder}/{name}", why)
        return foreign

    def _untrusted(self, key: str, why: str) -> None:
        self.problem("untrusted", f"{key} {why}; it is ignored")
        if self.repair:
            self._move_aside(key, "untrusted")

    def _run_dataset(self) -> str | None:
        """config.json's dataset text (read once, bounded), or None when it does not read."""
        if not hasattr(self, "_dataset_of_run"):
            value: Any = None
            try:
                obj = parse_json(self.backend.read(CONFIG_KEY, MAX_CONFIG_BYTES), "config.json")
                value = obj.get("dataset") if isinstance(obj, dict) else None
            except (FileNotFoundError, UnreadableEntry, UntrustedJSONError, ValueError):
                pass
            self._dataset_of_run = value if isinstance(value, str) else None
        return self._dataset_of_run

    # ----- helpers -----
    def _load(self, key: str, report: bool = False):
        try:
            return loads(self.backend.read(key), "retrain record")
        except FileNotFoundError:
            return None
        except UnreadableEntry as exc:
            if report:
                self._unreadable(key, exc.problem)
            return None
        except CorruptRecord as exc:
            if report:
                self.problem("corrupt", f"{key}: {exc}")
            return None

    def _orphan(self, folder: str, name: str, mtime: float) -> None:
        if self.now - mtime < self.grace:
            self.pending += 1
            return
        self.problem("orphans", f"{folder}/{name} is referenced by nothing")
        if self.repair:
            try:
                self.backend.delete(f"{folder}/{name}")
                self.fixed("orphans")
            except OSError as exc:
                self.could_not(f"delete {folder}/{name}", exc)

    def _temp(self, folder: str, name: str) -> None:
        entry = next((e for e in self.backend.list_detail(folder) if e.name == name), None)
        if entry is None:
            return
        if self.now - entry.mtime < self.grace:
            self.pending += 1
            return
        self.problem("orphans", f"{folder}/{name} is a temp file of a crashed writer")
        if self.repair:
            try:
                if self.backend.delete_temp(folder, name):
                    self.fixed("orphans")
            except OSError as exc:
                self.could_not(f"delete {folder}/{name}", exc)

    def _foreign_entry(self, folder: str, name: str, what: str) -> None:
        where = f"{folder}/{name}"
        self.problem("foreign", f"{where!r} is {what}; nothing is read through it")
        if self.repair:
            try:
                moved = self.backend.move_aside(folder, name)
            except FileNotFoundError:
                self.fixed("foreign")
            except (OSError, UnreadableEntry) as exc:
                self.could_not(f"move {where!r} aside", exc)
            else:
                self.problems.append(f"moved {where!r} aside to {moved}")
                self.fixed("foreign")

"""The ``data/`` half of ``evo check`` (:mod:`storage.check`): the run's decoded dataset.

For each cache key found in ``data/`` the verified chain is rebuilt as readers build it
(:mod:`storage.datacache`: valid claims from generation 0 on, at most ``MAX_SKIP`` apart),
and then, each a problem until repaired:

- foreign: a claim that does not check out (not JSON, a field out of bounds, dated in the
  future), a claim, manifest, progress record or part of a generation outside the chain
  (e.g. generation 1000000), or a progress record that does not check out. Repair: moved
  aside as it is (``quarantine/moved/``). Readers already ignore all of these.
- corrupt: a manifest of the chain that does not check out (its key, generation or parts),
  or whose parts are missing, of another size or another SHA-256 (each part is hashed while
  streaming, never held). Repair: the manifest is moved aside; its parts are then named by
  no manifest and go as orphans after the grace period. Readers skip such a generation.
- unreadable: a manifest that cannot be read. Repair: moved aside.
- orphans: parts of the chain no manifest names (a decoder died before its commit), after
  the grace period. Repair: delete.
- stray: names that are not part of the layout (reported, never deleted).

An intact manifest of the chain is never touched, the newest included. Non-files under
``data/`` are ``storage.check``'s foreign entries.
"""

from __future__ import annotations

from .backend import TEMP_PREFIX, Entry, UnreadableEntry
from .check_records import Findings
from .datacache import (
    DATA, MAX_MANIFEST_BYTES, MAX_PROGRESS_BYTES, PARTS, chain_of, claim_problem, manifest_problem,
    parse_data_name, progress_problem, time_problem,
)
from .records import CorruptRecord, loads


class DataAudits(Findings):
    """The audit of ``data/`` (see the module docstring)."""

    def audit_data(self) -> None:
        """Every cache key's chain, claims, progress, manifests and parts."""
        entries = {e.name: e for e in self.backend.list_detail(DATA)}
        if not entries:
            return
        by_key: dict[str, dict[str, tuple[int, str]]] = {}
        for name in sorted(entries):
            if name.startswith(TEMP_PREFIX):
                continue
            parsed = parse_data_name(name)
            if parsed is None:
                self.stray(f"{DATA}/{name}", f"{DATA}/{name} is not part of the decoded dataset")
                continue
            by_key.setdefault(parsed[0], {})[name] = parsed[1:]
        for key, names in sorted(by_key.items()):
            self._audit_key(key, names, entries)

    def _audit_key(self, key: str, names: dict[str, tuple[int, str]], entries: dict[str, Entry]) -> None:
        valid = []
        for name, (g, what) in sorted(names.items(), key=lambda item: item[1][0]):
            if what != "claim":
                continue
            problem = self._record_problem(name, MAX_PROGRESS_BYTES, claim_problem)
            if problem is None:
                valid.append(g)
            elif problem != "gone":
                self._foreign_data(name, f"is not a claim of this store: {problem}")
        chain = chain_of(valid)
        newest = max(chain, default=-1)
        outside = f"is outside the verified chain of generations (newest {newest})"
        referenced: set[str] = set()
        for name, (g, what) in sorted(names.items()):
            if g not in chain:
                if what != "claim" or g in valid:
                    self._foreign_data(name, outside)
                continue
            if what == "progress":
                problem = self._record_problem(name, MAX_PROGRESS_BYTES, progress_problem)
                if problem not in (None, "gone"):
                    self._foreign_data(name, f"is not a progress record of this store: {problem}")
            elif what == "manifest":
                parts = self._audit_manifest(name, key, g, entries)
                referenced.update(parts)
        for name, (g, what) in sorted(names.items()):
            if what != "part" or g not in chain or f"{DATA}/{name}" in referenced:
                continue
            if self.now - entries[name].mtime < self.grace:
                self.pending += 1
                continue
            self.problem("orphans", f"{DATA}/{name} is named by no manifest")
            if self.repair:
                try:
                    self.backend.delete(f"{DATA}/{name}")
                    self.fixed("orphans")
                except OSError as exc:
                    self.could_not(f"delete {DATA}/{name}", exc)

    def _record_problem(self, name: str, bound: int, judge) -> str | None:
        """None if the record ``data/name`` checks out by ``judge``; "gone" if it vanished;
        else the problem, in words."""
        key = f"{DATA}/{name}"
        try:
            obj = loads(self.backend.read(key, bound), key)
        except FileNotFoundError:
            return "gone"
        except UnreadableEntry as exc:
            return exc.problem
        except CorruptRecord as exc:
            return str(exc).removeprefix(f"{key}: ")[:200]
        return judge(obj, self.now)

    def _audit_manifest(self, name: str, key: str, g: int, entries: dict[str, Entry]) -> list[str]:
        """The part keys an intact manifest names ([] when it is damaged, after reporting it)."""
        where = f"{DATA}/{name}"
        try:
            manifest = loads(self.backend.read(where, MAX_MANIFEST_BYTES), where)
        except FileNotFoundError:
            return []
        except UnreadableEntry as exc:
            self._unreadable(where, exc.problem)
            return []
        except CorruptRecord as exc:
            self._damaged(where, str(exc).removeprefix(f"{where}: ")[:200])
            return []
        problem = manifest_problem(manifest, key, g)
        if problem is None and "decoded_at" in manifest:
            when = time_problem(manifest["decoded_at"], self.now)
            problem = f"decoded_at {when}" if when else None
        if problem is None:
            problem = self._parts_problem(manifest, entries)
        if problem:
            self._damaged(where, problem)
            return []
        return [manifest["parts"][split]["key"] for split in PARTS]

    def _parts_problem(self, manifest: dict, entries: dict[str, Entry]) -> str | None:
        for split in PARTS:
            part = manifest["parts"][split]
            listed = entries.get(part["key"][len(DATA) + 1:])
            if listed is None:
                return f"part {split} ({part['key']}) is missing"
            if listed.size != part["size"]:
                return f"part {split} ({part['key']}) has {listed.size} bytes, the manifest says {part['size']}"
            try:
                self.backend.verify(part["key"], part["size"], part["sha256"])
            except FileNotFoundError:
                return f"part {split} ({part['key']}) is missing"
            except UnreadableEntry as exc:
                return f"part {split} ({part['key']}) {exc.problem}"
        return None

    def _damaged(self, where: str, problem: str) -> None:
        self.problem("corrupt", f"{where} {problem} (readers skip this generation)")
        if self.repair:
            self._move_aside(where, "corrupt")

    def _foreign_data(self, name: str, problem: str) -> None:
        self.problem("foreign", f"{DATA}/{name} {problem}")
        if self.repair:
            self._move_aside(f"{DATA}/{name}", "foreign")

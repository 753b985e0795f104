"""``evo check``: audit a population directory, and optionally repair it.

What it looks for (each a problem that makes ``ok`` false unless repaired):

- torn: a listed individual whose weights are missing or of the wrong size (the publish
  protocol makes this impossible; seeing one means a bug or hand damage). Repair: quarantine.
- corrupt: a listed individual whose commit or DNA does not check out. Repair: quarantine.
- zombies: listed although dead (history record or quarantine record exists: the worker
  that killed it crashed before unlisting it). Repair: unlist.
- orphans: weights no live, quarantined or kept individual references, and temp files,
  older than the grace period (a crashed publisher or killer left them). Repair: delete.
  Grace counts from the later of the file's time and its individual's death, so a killer
  still finishing its kill is never raced. Younger ones are reported as ``pending``.
- stray: files whose names are not part of the layout (reported, never deleted).

Repairs are safe while workers run, provided the grace period is longer than any publish
(weights written -> commit created) takes; the default hour is plenty.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import dna as dna_lib

from .backend import TEMP_PREFIX
from .records import (
    ALIVE, CONFIG_KEY, DIRECTORIES, HISTORY, HISTORY_EXTRA, KEPT, PAYLOAD, QUARANTINE, WORKERS,
    CorruptRecord, IndividualInfo, check_commit, history_key, loads, parse_alive_name,
    parse_kept_name, parse_payload_name, parse_record_name,
)

if TYPE_CHECKING:
    from .population import DnaValidator, PopulationStore

MAX_LISTED_PROBLEMS = 200


@dataclass(frozen=True)
class CheckReport:
    """What ``check`` found (counts) and, with repair, what it fixed.

    ``ok``: config present and every problem found was repaired (or none found).
    ``alive`` counts healthy listed individuals (not zombies, corrupt or torn).
    """

    url: str
    ok: bool
    config: bool
    alive: int
    torn: int
    corrupt: int
    zombies: int
    orphans: int
    stray: int
    pending: int
    quarantined: int
    history: int
    kept: int
    workers: int
    problems: tuple[str, ...] = ()
    repaired: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``--json``."""
        d = asdict(self)
        d["problems"] = list(self.problems)
        return d


def check_store(store: "PopulationStore", *, repair: bool, grace_seconds: float,
                bounds: dna_lib.Bounds | None, dna_validator: "DnaValidator | None",
                deep: bool = False) -> CheckReport:
    """Audit ``store`` as described in this module's docstring; repair if asked.

    Weights are checked by size from the listing; ``deep`` also reads them and verifies
    their sha256 and safetensors structure.
    """
    return _Audit(store, repair, grace_seconds, bounds, dna_validator, deep).run()


class _Audit:
    """One run of ``check``: the listings it took and what it found so far."""

    def __init__(self, store: "PopulationStore", repair: bool, grace_seconds: float,
                 bounds: dna_lib.Bounds | None, dna_validator: "DnaValidator | None", deep: bool):
        self.store, self.backend = store, store.backend
        self.repair, self.grace, self.deep = repair, grace_seconds, deep
        self.bounds, self.dna_validator = bounds, dna_validator
        self.now = store._clock()
        self.problems: list[str] = []
        self.found: Counter[str] = Counter()
        self.repaired: Counter[str] = Counter()
        self.pending = 0
        self.healthy = 0
        self.referenced: set[str] = set()     # payload names in use
        self.protected_ids: set[str] = set()  # ids whose payloads are not ours to judge now

    def problem(self, kind: str, text: str) -> None:
        self.found[kind] += 1
        self.problems.append(f"{kind}: {text}")

    def fixed(self, kind: str) -> None:
        self.repaired[kind] += 1

    def run(self) -> CheckReport:
        backend = self.backend
        has_config = backend.exists(CONFIG_KEY)
        if not has_config:
            self.problems.append("config: config.json is missing (not a population directory?)")
        # Payloads are listed BEFORE alive/: a commit that shows up in alive/ with its
        # payload missing from this listing is re-checked one by one (it may be newer).
        self.payloads = {e.name: e for e in backend.list_detail(PAYLOAD)}
        self.history_ids = {i for i in map(parse_record_name, backend.list(HISTORY)) if i}
        self.quarantine_ids = {i for i in map(parse_record_name, backend.list(QUARANTINE)) if i}
        self.audit_kept()
        self.audit_alive()
        self.audit_payloads()
        self.audit_temp_files()

        remaining = {k: n - self.repaired.get(k, 0) for k, n in self.found.items()}
        problems = self.problems
        if len(problems) > MAX_LISTED_PROBLEMS:
            more = len(problems) - MAX_LISTED_PROBLEMS
            problems = problems[:MAX_LISTED_PROBLEMS] + [f"... and {more} more"]
        found = self.found
        return CheckReport(
            url=self.store.url, ok=has_config and all(n <= 0 for n in remaining.values()),
            config=has_config, alive=self.healthy, torn=found["torn"], corrupt=found["corrupt"],
            zombies=found["zombies"], orphans=found["orphans"], stray=found["stray"],
            pending=self.pending,
            quarantined=sum(1 for n in backend.list(QUARANTINE) if parse_record_name(n)),
            history=len(self.history_ids),
            kept=sum(1 for n in backend.list(KEPT) if parse_kept_name(n)),
            workers=sum(1 for n in backend.list(WORKERS) if n.endswith(".json")),
            problems=tuple(problems), repaired=dict(self.repaired))

    def _listed(self, dirname: str, parse: Any, what: str) -> list[IndividualInfo]:
        infos = []
        for name in self.backend.list(dirname):
            info = parse(name)
            if info is not None:
                infos.append(info)
            elif not name.startswith(TEMP_PREFIX):
                self.problem("stray", f"{dirname}/{name} is not {what}")
        return infos

    def audit_kept(self) -> None:
        """Kept-weights markers must name existing weights of their own individual."""
        backend = self.backend
        markers = self._listed(KEPT, parse_kept_name, "a kept-weights marker")
        for info, raw in _read_all(backend, markers).items():
            if raw is None:
                continue  # pruned while we looked
            marker = _load(raw)
            payload = marker.get("payload") if isinstance(marker, dict) else None
            pname = payload[len(PAYLOAD) + 1:] if isinstance(payload, str) \
                and payload.startswith(PAYLOAD + "/") else ""
            if parse_payload_name(pname) != info.id:
                self.problem("corrupt", f"{info.key} is not a valid kept-weights marker")
                if self.repair and backend.delete(info.key):
                    self.fixed("corrupt")
                continue
            if pname not in self.payloads and backend.stat(payload) is None \
                    and backend.exists(info.key):  # (a prune deletes the marker first)
                self.problem("torn", f"{info.key}: its weights {payload} are missing")
                if self.repair and backend.delete(info.key):
                    self.fixed("torn")
                continue
            self.referenced.add(pname)

    def audit_alive(self) -> None:
        """Every listed individual: zombie, corrupt, torn, or healthy."""
        from .population import check_dna, verify_weights, weights_size_problem

        backend = self.backend
        listed = self._listed(ALIVE, parse_alive_name, "an individual")
        for info, raw in _read_all(backend, listed).items():
            if raw is None:
                self.protected_ids.add(info.id)  # left the listing while we looked
                continue
            if info.id in self.history_ids or info.id in self.quarantine_ids:
                why = "killed" if info.id in self.history_ids else "quarantined"
                self.problem("zombies", f"{info.key} is {why} but still listed")
                if self.repair:
                    backend.delete(info.key)
                    self.fixed("zombies")
                continue
            self.protected_ids.add(info.id)  # until it proves healthy: then by payload name
            try:
                commit = check_commit(loads(raw, "commit"), info)
                check_dna(commit["dna"], self.bounds, self.dna_validator)
            except CorruptRecord as exc:
                self._quarantine("corrupt", info, str(exc), raw)
                continue
            pkey = commit["payload"]
            pname = pkey[len(PAYLOAD) + 1:]
            size = commit["payload_size"]
            entry = self.payloads.get(pname)
            if entry is None or entry.size != size:
                entry = backend.stat(pkey)
            if entry is None or entry.size != size:
                if not backend.exists(info.key) or backend.exists(history_key(info.id)):
                    continue  # killed while we looked
                why = weights_size_problem(entry.size if entry else None, size)
                self._quarantine("torn", info, f"{why} ({pkey})", raw, reason=why)
                continue
            if self.deep:
                try:
                    verify_weights(commit, backend.read(pkey))
                except FileNotFoundError:
                    continue  # killed while we looked
                except CorruptRecord as exc:
                    self._quarantine("corrupt", info, str(exc), raw)
                    continue
            self.protected_ids.discard(info.id)
            self.referenced.add(pname)
            self.healthy += 1

    def _quarantine(self, kind: str, info: IndividualInfo, text: str, raw: bytes,
                    reason: str | None = None) -> None:
        self.problem(kind, f"{info.key}: {text}")
        if self.repair:
            self.store._quarantine(info, reason or text, raw=raw)
            self.fixed(kind)

    def audit_payloads(self) -> None:
        """Weights nothing references: orphans once the grace period has passed."""
        history_mtimes: dict[str, float] = {}
        for name, entry in sorted(self.payloads.items()):
            if name in self.referenced or name.startswith(TEMP_PREFIX):
                continue
            ident = parse_payload_name(name)
            if ident is None:
                self.problem("stray", f"{PAYLOAD}/{name} is not a weights file")
                continue
            if ident in self.protected_ids or ident in self.quarantine_ids:
                continue
            since = entry.mtime
            if ident in self.history_ids:  # grace counts from the death, too
                if ident not in history_mtimes:
                    h = self.backend.stat(history_key(ident))
                    history_mtimes[ident] = h.mtime if h else 0.0
                since = max(since, history_mtimes[ident])
            if self.now - since < self.grace:
                self.pending += 1
                continue
            if self.repair and ident in self.history_ids and self.store.keep_best > 0 \
                    and _keep_after_crash(self.store, ident, name):
                self.fixed("kept")
                continue
            self.problem("orphans", f"{PAYLOAD}/{name} is referenced by nothing")
            if self.repair:
                self.backend.delete(f"{PAYLOAD}/{name}")
                self.fixed("orphans")

    def audit_temp_files(self) -> None:
        """Temp files of crashed local writers (other backends have none)."""
        for dirname in ("", *DIRECTORIES):
            names = list(self.payloads) if dirname == PAYLOAD else self.backend.list(dirname)
            if not any(n.startswith(TEMP_PREFIX) for n in names):
                continue
            entries = self.payloads if dirname == PAYLOAD else \
                {e.name: e for e in self.backend.list_detail(dirname)}
            for name, entry in sorted(entries.items()):
                if not name.startswith(TEMP_PREFIX):
                    continue
                if self.now - entry.mtime < self.grace:
                    self.pending += 1
                    continue
                where = f"{dirname}/{name}" if dirname else name
                self.problem("orphans", f"{where} is a temp file of a crashed writer")
                if self.repair and self.backend.delete_temp(dirname, name):
                    self.fixed("orphans")


def _read_all(backend: Any, infos: list[IndividualInfo]) -> dict[IndividualInfo, bytes | None]:
    raws = backend.read_many([i.key for i in infos])
    return {i: raws.get(i.key) for i in infos}


def _load(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return loads(raw, "record")
    except CorruptRecord:
        return None


def _keep_after_crash(store: "PopulationStore", ident: str, name: str) -> bool:
    """For weights left by a killer that crashed before its keep-best step: keep if best."""
    try:
        record = _load(store.backend.read(history_key(ident)))
    except FileNotFoundError:
        return False
    if not isinstance(record, dict) or record.get("payload") != f"{PAYLOAD}/{name}":
        return False
    try:
        check_commit(record, extra=HISTORY_EXTRA)
    except CorruptRecord:
        return False
    return store._keep_if_best(record)

"""``evo check``: audit a population directory, and optionally repair it.

What it looks for (each a problem that makes ``ok`` false unless repaired):

- torn: a listed individual whose weights are missing or of the wrong size (the publish
  protocol makes this impossible; seeing one means a bug or hand damage). Repair: quarantine.
- corrupt: a listed individual whose commit or DNA does not check out, or a history record
  that does not (its DNA included, against the run's bounds). Repair: quarantine (a broken
  history record is moved aside and its id recorded in ``quarantine/``).
- unreadable: an entry that is a regular file but cannot be read (permissions) or is larger
  than any record may be. Repair: moved aside as it is (``quarantine/moved/``), with a
  quarantine record when it was an individual.
- foreign: a name in the store that is not a regular file (a symlink, a directory where an
  object belongs, a FIFO or device). Nothing is ever read through it. Repair: moved aside as
  it is (the link itself, never its target).
- zombies: listed although dead (history record or quarantine record exists: the worker
  that killed it crashed before unlisting it). Repair: unlist.
- orphans: weights no live, quarantined or kept individual references, and temp files,
  older than the grace period (a crashed publisher or killer left them). Repair: delete.
  Grace counts from the later of the file's time and its individual's death, so a killer
  still finishing its kill is never raced. Younger ones are reported as ``pending``.
- stray: files whose names are not part of the layout (reported, never deleted).

Every read is bounded (records by their size limit, before reading), and records are read
in small batches, so a hostile store cannot make ``check`` use unbounded memory. Repairs
that the store's permissions refuse are reported as such ("could not ...") and leave
``ok`` false. Repairs are safe while workers run, provided the grace period is longer than
any publish (weights written -> commit created) takes; the default hour is plenty.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import dna as dna_lib

from .backend import MOVED_DIR, TEMP_PREFIX, UnreadableEntry
from .reading import Broken, read_json
from .records import (
    ALIVE, CONFIG_KEY, DIRECTORIES, HISTORY, KEPT, MAX_HEARTBEAT_BYTES, PAYLOAD, QUARANTINE, 
    WORKERS, CorruptRecord, IndividualInfo, check_history, dumps, history_key, loads,
    parse_alive_name, parse_kept_name, parse_payload_name, parse_record_name, quarantine_key,
)

if TYPE_CHECKING:
    from .population import DnaValidator, PopulationStore

MAX_LISTED_PROBLEMS = 200
CHECK_BATCH = 64   # records read at once: bounds memory on a store full of maximal records
# Folders a population directory may hold besides the layout's own (launcher logs beside a
# local population; data caches and launch records of later layouts are added here).
KNOWN_FOLDERS = frozenset(DIRECTORIES) | {"logs"}


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
    unreadable: int = 0
    foreign: int = 0
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
        self.store = store.with_run(bounds=bounds, dna_validator=dna_validator)
        self.backend = store.backend
        self.repair, self.grace, self.deep = repair, grace_seconds, deep
        self.now = self.store.now()
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

    def could_not(self, what: str, exc: BaseException) -> None:
        """A repair the store refused: said once, and the problem stays unrepaired."""
        why = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200] or type(exc).__name__
        self.problems.append(f"could not {what}: {why}")

    def run(self) -> CheckReport:
        backend = self.backend
        has_config = backend.list("").count(CONFIG_KEY) == 1
        if not has_config:
            self.problems.append("config: config.json is missing, or is not a regular file")
        self.audit_foreign()
        # Payloads are listed BEFORE alive/: a commit that shows up in alive/ with its
        # payload missing from this listing is re-checked one by one (it may be newer).
        self.payloads = {e.name: e for e in backend.list_detail(PAYLOAD)}
        self.quarantine_ids = {i for i in map(parse_record_name, backend.list(QUARANTINE)) if i}
        self.history_ids = {i for i in map(parse_record_name, backend.list(HISTORY)) if i}
        self.audit_history()
        self.audit_records(QUARANTINE, "quarantine record", _check_quarantine_record)
        self.audit_records(WORKERS, "heartbeat", _check_heartbeat, max_bytes=MAX_HEARTBEAT_BYTES)
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
            unreadable=found["unreadable"], foreign=found["foreign"],
            problems=tuple(problems), repaired=dict(self.repaired))

    # ----- names that are not objects -----
    def audit_foreign(self) -> None:
        """Symlinks, special files and unexpected folders, anywhere in the layout."""
        for entry in self.backend.list_foreign(""):
            if entry.what == "a directory" and entry.name in KNOWN_FOLDERS:
                continue
            self._foreign("", entry.name, entry.what)
        for dirname in DIRECTORIES:
            for entry in self.backend.list_foreign(dirname):
                if dirname == QUARANTINE and entry.name == MOVED_DIR.split("/", 1)[1]:
                    continue  # where moved-aside entries live
                self._foreign(dirname, entry.name, entry.what)

    def _foreign(self, dirname: str, name: str, what: str) -> None:
        where = f"{dirname}/{name}" if dirname else name
        self.problem("foreign", f"{where!r} is {what}; nothing is read through it")
        if self.repair:
            try:
                moved = self.backend.move_aside(dirname, name)
            except FileNotFoundError:
                self.fixed("foreign")  # gone meanwhile
            except (OSError, UnreadableEntry) as exc:
                self.could_not(f"move {where!r} aside", exc)
            else:
                self.problems.append(f"moved {where!r} aside to {moved}")
                self.fixed("foreign")

    def _unreadable(self, key: str, problem: str) -> None:
        """A regular file that cannot be used as it is: report; repair moves it aside."""
        self.problem("unreadable", f"{key}: {problem}")
        if self.repair:
            self._move_aside(key, "unreadable")

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
                self.problem("stray", f"{dirname}/{name} is not {what}")
        return infos

    # ----- records -----
    def audit_history(self) -> None:
        """Every history record must check out (DNA against the run's bounds included)."""
        keys = sorted(f"{HISTORY}/{n}" for n in self.backend.list(HISTORY) if parse_record_name(n))
        for key, obj in read_json(self.backend, keys, "history record", batch=CHECK_BATCH):
            ident = parse_record_name(key.rsplit("/", 1)[1])
            if isinstance(obj, Broken):
                problem, kind = obj.problem, obj.kind
            else:
                try:
                    self.store.check_history_record(key, obj)
                    continue
                except CorruptRecord as exc:
                    problem, kind = str(exc), "corrupt"
            self.problem(kind, f"{key}: {problem}")
            if self.repair:
                self._quarantine_history(key, ident, problem, kind)

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
        record = {"schema": 1, "id": ident, "reason": f"history record: {problem}"[:500],
                  "time": entry.mtime if entry else self.now, "alive_key": None, "commit": None,
                  "moved_to": moved}
        try:
            if self.backend.create(quarantine_key(ident), dumps(record)):
                self.quarantine_ids.add(ident)
        except OSError as exc:
            self.could_not(f"record {ident} in quarantine/", exc)
        self.history_ids.discard(ident)

    def audit_records(self, dirname: str, what: str, check: Any, max_bytes: int | None = None) -> None:
        """Records that are not the layout's: unreadable ones are moved aside by repair."""
        names = [n for n in self.backend.list(dirname) if not n.startswith(TEMP_PREFIX)]
        keys = sorted(f"{dirname}/{n}" for n in names)
        kwargs = {"max_bytes": max_bytes} if max_bytes else {}
        for key, obj in read_json(self.backend, keys, what, batch=CHECK_BATCH, **kwargs):
            if isinstance(obj, Broken):
                self._unreadable(key, obj.problem)
            elif not check(key, obj):
                self.problem("stray", f"{key} is not a valid {what}")

    def audit_kept(self) -> None:
        """Kept-weights markers must name existing weights of their own individual."""
        backend = self.backend
        markers = self._listed(KEPT, parse_kept_name, "a kept-weights marker")
        for info, raw in _read_all(backend, markers):
            if raw is None:
                continue  # pruned while we looked
            marker = _load(raw) if not isinstance(raw, UnreadableEntry) else None
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
        from .population import verify_weights, weights_size_problem

        backend = self.backend
        listed = self._listed(ALIVE, parse_alive_name, "an individual")
        for info, raw in _read_all(backend, listed):
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
            if isinstance(raw, UnreadableEntry):
                self.problem("unreadable", f"{info.key}: {raw.problem}")
                if self.repair:
                    self._repair_quarantine("unreadable", info, f"commit {raw.problem}", None)
                continue
            try:
                commit = self.store.verify_commit(info, raw)
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

    def _quarantine(self, kind: str, info: IndividualInfo, text: str, raw: bytes,
                    reason: str | None = None) -> None:
        self.problem(kind, f"{info.key}: {text}")
        if self.repair:
            self._repair_quarantine(kind, info, reason or text, raw)

    def _repair_quarantine(self, kind: str, info: IndividualInfo, reason: str, raw: bytes | None) -> None:
        try:
            self.store.quarantine(info, reason, raw=raw, unusable=raw is None)
        except OSError as exc:
            self.could_not(f"quarantine {info.key}", exc)
            return
        if self.backend.exists(info.key):
            self.problems.append(f"could not take {info.key} off the live listing (permissions?)")
            return
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
                    try:
                        h = self.backend.stat(history_key(ident))
                    except UnreadableEntry:
                        h = None
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
                try:
                    self.backend.delete(f"{PAYLOAD}/{name}")
                    self.fixed("orphans")
                except OSError as exc:
                    self.could_not(f"delete {PAYLOAD}/{name}", exc)

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
                if self.repair:
                    try:
                        if self.backend.delete_temp(dirname, name):
                            self.fixed("orphans")
                    except OSError as exc:
                        self.could_not(f"delete {where}", exc)


def _check_quarantine_record(key: str, rec: Any) -> bool:
    return isinstance(rec, dict) and rec.get("id") == parse_record_name(key.rsplit("/", 1)[1])


def _check_heartbeat(key: str, beat: Any) -> bool:
    return isinstance(beat, dict) and isinstance(beat.get("worker"), str) \
        and isinstance(beat.get("time"), (int, float))


def _read_all(backend: Any, infos: list[IndividualInfo]):
    """(info, bytes / UnreadableEntry / None) for each info, CHECK_BATCH reads at a time."""
    for start in range(0, len(infos), CHECK_BATCH):
        batch = infos[start:start + CHECK_BATCH]
        raws = backend.read_many([i.key for i in batch])
        for i in batch:
            yield i, raws.get(i.key)


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
    except (FileNotFoundError, UnreadableEntry):
        return False
    if not isinstance(record, dict) or record.get("payload") != f"{PAYLOAD}/{name}":
        return False
    try:
        check_history(record, ident)
    except CorruptRecord:
        return False
    return store.keep_weights_if_best(record)

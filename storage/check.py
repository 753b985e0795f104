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
- zombies: listed although dead by its own evidence (its kill marker ``history/{id}.json``
  holds its very commit, or its quarantine record names its ``alive/`` key: the worker that
  killed or quarantined it crashed before unlisting it; or its commit does not check out and
  such a record exists). Repair: unlist. A record or segment that names a listed individual
  whose commit checks out, without being its own evidence, is corrupt, and repair moves it
  aside: the living win, and are never unlisted or quarantined because of another entry.
- names of the form ``{id}.json`` in ``history/`` and ``quarantine/`` whose id has a date
  that does not exist (month 13): corrupt; repair moves them aside.
- orphans: weights no live, quarantined or kept individual references, and temp files,
  older than the grace period (a crashed publisher or killer left them). Repair: delete.
  Grace counts from the later of the file's time and its individual's death, so a killer
  still finishing its kill is never raced. Younger ones are reported as ``pending``.
- history segments (``segments/``): each is read (bounded) and every record in it checked;
  one that does not check out is corrupt (or unreadable). Repair: moved aside, with a
  quarantine record for each id it held that no other record has (so it still counts as
  born once). A ``history/`` record that a valid segment also holds (a roll-up died
  before deleting it) is an orphan once the segment is older than the grace period.
  Repair: delete it. ``--repair`` then rolls sealed records older than the grace period up
  into segments (``repaired["rolled_up"]`` counts them).
- workers/ and launches/: a heartbeat or launch record that does not check out (unreadable,
  not JSON, dated in the future, absurd counts: ``storage.runinfo_format``) is corrupt.
  Repair: moved aside as it is. (``config.json`` against its seal: ``launch.commands.check``.)
- stray: files whose names are not part of the layout (reported; repair moves them aside
  into ``quarantine/moved/`` as they are, never deletes them), in
  ``state/`` too.
- data/: the decoded dataset's verified chain, claims, progress records, manifests and
  parts (each part hashed while streaming): :mod:`storage.check_data`.
- final trainings under ``retrain/``: :mod:`storage.check_retrain`.
- ``policy/``: foreign entries (and objects whose names are not versions' names: moved
  aside like them) and temp files here; the versions themselves (unusable, out
  of bounds, beyond the chain) are the strategy's to judge: ``evo check`` adds
  :func:`evo.strategies.policy_report.read_policy_report`'s problems, and ``--repair`` moves
  those versions aside (never the chain's head).

Every read is bounded (records by their size limit, before reading), and records are read
in small batches, so a hostile store cannot make ``check`` use unbounded memory. Repairs
that the store's permissions refuse are reported as such ("could not ...") and leave
``ok`` false. Repairs are safe while workers run, provided the grace period is longer than
any publish (weights written -> commit created) takes; the default hour is plenty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import dna as dna_lib

from .backend import MOVED_DIR, TEMP_PREFIX, UnreadableEntry
from .check_data import DataAudits
from .check_records import CHECK_BATCH, AuditedStore, RecordAudits, load_record
from .check_retrain import RetrainAudits
from .datacache import DATA
from .policy import POLICY, parse_intake_name, parse_policy_name
from .reading import Broken, read_json
from .records import (
    CONFIG_KEY, DIRECTORIES, HISTORY, KEPT, LAUNCHES, MAX_HEARTBEAT_BYTES, PAYLOAD, QUARANTINE, STATE, WORKERS,
    CorruptRecord, check_history, history_key, is_safe_name, parse_kept_name, parse_payload_name,
    parse_record_name,
)
from .retrain_format import RETRAIN
from .runinfo_format import check_heartbeat, check_launch, is_mark_name
from .segments import SEGMENTS
from .verify import DnaValidator

MAX_LISTED_PROBLEMS = 200
# Folders a population directory may hold besides the layout's own (launcher logs beside a
# local population; data caches and launch records of later layouts are added here).
KNOWN_FOLDERS = frozenset(DIRECTORIES) | {"logs", DATA, RETRAIN, POLICY, SEGMENTS}


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
    retrains: int = 0
    segments: int = 0
    problems: tuple[str, ...] = ()
    repaired: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``--json``."""
        d = asdict(self)
        d["problems"] = list(self.problems)
        return d


def check_store(store: AuditedStore, *, repair: bool, grace_seconds: float,
                bounds: dna_lib.Bounds | None, dna_validator: DnaValidator | None,
                deep: bool = False) -> CheckReport:
    """Audit ``store`` as described in this module's docstring; repair if asked.

    Weights are checked by size from the listing; ``deep`` also reads them and verifies
    their sha256 and safetensors structure.
    """
    return _Audit(store, repair, grace_seconds, bounds, dna_validator, deep).run()


class _Audit(RecordAudits, RetrainAudits, DataAudits):
    """One run of ``check``: the listing audits here, the record audits in the base class."""

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
        self.audit_segments()
        self.audit_history()
        self.audit_records(QUARANTINE, "quarantine record", self.check_quarantine_record)
        self.audit_runinfo()
        self.audit_kept()
        self.audit_alive()
        self.audit_payloads()
        self.audit_temp_files()
        self.audit_data()
        self.audit_retrain()
        if self.repair:
            self.roll_up()

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
            history=len(self.history_ids | self.segment_ids),
            kept=sum(1 for n in backend.list(KEPT) if parse_kept_name(n)),
            workers=sum(1 for n in backend.list(WORKERS) if n.endswith(".json")),
            unreadable=found["unreadable"], foreign=found["foreign"], retrains=self.retrains,
            segments=self.segments,
            problems=tuple(problems), repaired=dict(self.repaired))

    # ----- names that are not objects -----
    def audit_foreign(self) -> None:
        """Symlinks, special files and unexpected folders, anywhere in the layout."""
        for entry in self.backend.list_foreign(""):
            if entry.what == "a directory" and entry.name in KNOWN_FOLDERS:
                continue
            self._foreign("", entry.name, entry.what)
        for dirname in (*DIRECTORIES, DATA, SEGMENTS, POLICY):
            for entry in self.backend.list_foreign(dirname):
                if dirname == QUARANTINE and entry.name == MOVED_DIR.split("/", 1)[1]:
                    continue  # where moved-aside entries live
                self._foreign(dirname, entry.name, entry.what)
        for name in self.backend.list(POLICY):   # only versions and intake slots belong there (and temp files)
            if parse_policy_name(name) is None and parse_intake_name(name) is None and not name.startswith(TEMP_PREFIX):
                self._foreign(POLICY, name, "an object whose name is not a policy version's or intake slot's")

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


    def audit_runinfo(self) -> None:
        """``workers/`` and ``launches/``: a record that does not check out (unreadable, not
        JSON, out of bounds: dated in the future, absurd counts) is corrupt, and repair moves
        it aside; a name that is not ``{safe name}.json`` is stray. ``state/``: names evo
        does not write are stray (the markers' contents are never read; the config seal is
        checked with config.json)."""
        for dirname, what, check in ((WORKERS, "heartbeat", check_heartbeat),
                                     (LAUNCHES, "launch record", check_launch)):
            keys = []
            for name in sorted(self.backend.list(dirname)):
                if name.startswith(TEMP_PREFIX):
                    continue
                if name.endswith(".json") and is_safe_name(name[:-len(".json")]):
                    keys.append(f"{dirname}/{name}")
                else:
                    self.stray(f"{dirname}/{name}", f"{dirname}/{name} is not a {what}")
            for key, obj in read_json(self.backend, keys, what, batch=CHECK_BATCH, max_bytes=MAX_HEARTBEAT_BYTES):
                if isinstance(obj, Broken):
                    self._unreadable(key, obj.problem)
                    continue
                try:
                    check(key, obj, self.store.now())   # now, not when the audit began: it may be long
                except CorruptRecord as exc:
                    self.problem("corrupt", f"{key}: {exc}")
                    if self.repair:
                        self._move_aside(key, "corrupt")
        for name in sorted(self.backend.list(STATE)):
            if not name.startswith(TEMP_PREFIX) and not is_mark_name(name):
                self.stray(f"{STATE}/{name}", f"{STATE}/{name} is not a marker evo writes")

    def audit_payloads(self) -> None:
        """Weights nothing references: orphans once the grace period has passed."""
        history_mtimes: dict[str, float] = {}
        for name, entry in sorted(self.payloads.items()):
            if name in self.referenced or name.startswith(TEMP_PREFIX):
                continue
            ident = parse_payload_name(name)
            if ident is None:
                self.stray(f"{PAYLOAD}/{name}", f"{PAYLOAD}/{name} is not a weights file")
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
        for dirname in ("", *DIRECTORIES, DATA, SEGMENTS, POLICY):
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




def _keep_after_crash(store: AuditedStore, ident: str, name: str) -> bool:
    """For weights left by a killer that crashed before its keep-best step: keep if best."""
    try:
        record = load_record(store.backend.read(history_key(ident)))
    except (FileNotFoundError, UnreadableEntry):
        return False
    if not isinstance(record, dict) or record.get("payload") != f"{PAYLOAD}/{name}":
        return False
    try:
        check_history(record, ident)
    except CorruptRecord:
        return False
    return store.population.keep_weights_if_best(record)

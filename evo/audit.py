"""Audit a whole run from its population store (and, optionally, the workers' event log).

Invariants checked (a violation makes ``ok`` false):

- **exactly once**: every individual ever born is alive or dead, not both and not lost.
  From the store alone, "dead" means a history record exists and "alive" a listed commit; a
  listed individual that also has a history record is a *zombie* (its killer died between
  claiming the kill and unlisting it). A zombie is crash debris, not a violation: it died
  once, and the next kill attempt or ``evo check --repair`` unlists it.
- **parents existed**: every individual's parent is alive, dead or quarantined, and was
  born before its child.
- **population bounds**: after seeding (the first moment P individuals were alive), the
  population size stayed in ``[P - W, P + W]``. The size over time is reconstructed from
  the records: +1 at each birth (the time in the id), -1 at each death (the history
  record's ``death``) or quarantine. W is given, or estimated as the largest number of
  workers whose heartbeat intervals ``[started, last heartbeat]`` overlap.
- with the **event log** (``evo worker --event-log FILE``, one JSON line per publish, won kill and lost
  kill race, appended by the workers): no *lost* publish (a logged id is alive, dead or
  quarantined), no *double kill* (at most one logged winner per victim, and it is the killer
  the history record names), no *phantom kill* (a logged win without a history record), no
  *mismatch* (the stored fitness and parent are the logged ones).

Torch-free; it reads records in batches so a run of 10^5 individuals fits in memory.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_left
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from dna.numbers import is_finite_number
from dna.strict_json import UntrustedJSONError, parse_json
from storage import Broken, PopulationStore, birth_of, is_id

EVENT_KINDS = ("publish", "kill", "race_loss")
MAX_LISTED = 50


# ----- the event log (a test hook of the worker) -----

class EventLog:
    """Append-only JSON-lines file of a worker's publishes and kills (off unless asked for).

    Every line is written with one ``write`` on an ``O_APPEND`` descriptor, so lines of many
    processes never interleave on a local file system, and a SIGKILL never leaves half a line.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)

    def write(self, event: str, **fields: Any) -> None:
        """Append one event line: ``{"event": event, **fields}``."""
        line = json.dumps({"event": event, **fields}, sort_keys=True, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())

    def close(self) -> None:
        """Close the file (the log stays; other processes keep appending)."""
        os.close(self._fd)


def read_events(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    """The events of a log file and the number of lines that did not parse.

    An unreadable file raises ValueError naming it.
    """
    events: list[dict[str, Any]] = []
    bad = 0
    try:
        with open(path, "rb") as f:
            for raw in f:
                try:
                    ev = parse_json(raw, "event")
                except UntrustedJSONError:
                    bad += 1
                    continue
                if isinstance(ev, dict) and ev.get("event") in EVENT_KINDS and is_id(ev.get("id")) \
                        and isinstance(ev.get("worker"), str):
                    events.append(ev)
                else:
                    bad += 1
    except OSError as exc:
        raise ValueError(f"{os.fspath(path)}: cannot read the event log ({exc.strerror})") from None
    return events, bad


# ----- the report -----

@dataclass(frozen=True)
class EventFindings:
    """What the event log proves (counts; examples in the report's ``problems``)."""

    lines: int
    bad_lines: int
    publishes: int
    kills: int
    race_losses: int
    lost: int              # logged publish, but the store has no trace of it
    double_kills: int      # victims with more than one logged winner (or a winner the record does not name)
    phantom_kills: int     # logged winning kill without a history record
    mismatched: int        # stored fitness/parent differ from the logged ones
    unlogged_births: int   # born in the store, not in the log (the worker died before logging: expected)


@dataclass(frozen=True)
class AuditReport:
    """The audit of a run; ``ok`` iff no invariant is violated. Times are unix seconds."""

    url: str
    ok: bool
    population_size: int
    workers: int | None                 # W used for the bounds (None: unknown, bounds not checked)
    workers_source: str                 # "given", "heartbeats" or "unknown"
    workers_seen: int                   # heartbeat files (each worker process has its own)
    born: int
    alive: int                          # listed and not dead
    dead: int                           # history records
    quarantined: int
    zombies: int                        # listed although dead (debris of a crashed killer)
    unreadable_history: int
    missing_parents: int
    parent_born_after_child: int
    first_birth: float | None
    seeding_end: float | None           # first moment P individuals were alive
    last_event: float | None
    population_min: int | None          # after seeding
    population_max: int | None
    population_final: int
    bounds: tuple[int, int] | None      # [P - W, P + W]
    births_after_seeding: int
    births_per_second: float | None     # after seeding, up to the last birth
    max_birth_gap_s: float | None       # longest time without any birth after seeding
    events: EventFindings | None
    violations: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    births_timeline: tuple[tuple[float, int], ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``--json`` (the timeline as [[bin start, births], ...])."""
        d = asdict(self)
        d["bounds"] = list(self.bounds) if self.bounds else None
        d["violations"] = list(self.violations)
        d["problems"] = list(self.problems)
        d["births_timeline"] = [list(x) for x in self.births_timeline]
        return d


# ----- reading the store -----

@dataclass(frozen=True)
class _Life:
    id: str
    fate: str               # "alive", "dead" (history record) or "quarantined"
    parent: str | None
    birth: float
    end: float | None       # death or quarantine time; None while alive or when unknown
    killer: str | None = None
    fitness: float | None = None


def _collect(store: PopulationStore, problems: list[str]) -> tuple[dict[str, _Life], set[str], int, int]:
    """Every individual the store knows of; the ids listed alive; zombies; unreadable records.

    The live listing is taken (and its commits read) before the history is listed, so on a
    running population an individual killed meanwhile is still found, in the history.
    Every record is read bounded and checked by the store (all but the DNA, which the audit
    never uses: ``evo check`` validates it); a broken history record still proves that its id died, but not when or from which parent.
    """
    census = store.history.census(history_dna=False, alive_dna=False)   # the audit never looks at a DNA
    listed, commits = census.listed, census.commits

    lives: dict[str, _Life] = {}
    for rec in census.history:
        ident = rec["id"]
        lives[ident] = _Life(ident, "dead", rec["parent"], birth_of(ident), float(rec["death"]),
                             str(rec["killer"]), float(rec["fitness"]))
    unreadable = 0
    for b in census.broken_history:
        ident = b.id
        if ident is None or ident in lives:
            continue
        unreadable += 1
        problems.append(f"unreadable history record {b.key}: {b.problem}")
        lives[ident] = _Life(ident, "dead", None, birth_of(ident), None)

    for b in census.broken_quarantine:
        problems.append(f"unreadable quarantine record {b.key}: {b.problem}")
    for b in census.contradicted:
        problems.append(f"{b.key}: {b.problem}")
    for rec in census.quarantine:
        ident = rec["id"]
        if ident in lives:
            continue  # died and was then found corrupt: it left once, by death
        commit = rec.get("commit")
        parent = commit.get("parent") if isinstance(commit, dict) and is_id(commit.get("parent")) else None
        when = rec.get("time")
        lives[ident] = _Life(ident, "quarantined", parent, birth_of(ident),
                             float(when) if _finite(when) else None)

    # still listed now, although dead (re-checked: on a live store most were unlisted meanwhile)
    zombies = {i.id for i in listed if i.id in lives and store.population.still_listed(i)}
    listed_ids = set()
    for info in listed:
        if info.id in lives:
            continue
        commit = commits.get(info.id)
        if isinstance(commit, Broken):
            problems.append(f"unreadable live individual {commit.key}: {commit.problem}")
        parent = commit.get("parent") if isinstance(commit, dict) else None
        lives[info.id] = _Life(info.id, "alive", parent if is_id(parent) else None, info.birth, None,
                               fitness=info.fitness)
        listed_ids.add(info.id)
    return lives, listed_ids, len(zombies), unreadable


def _finite(x: Any) -> bool:
    return is_finite_number(x)


def estimate_workers(heartbeats: Iterable[dict[str, Any]]) -> int:
    """Most worker processes whose [started, last heartbeat] intervals overlap (0 if none)."""
    edges: list[tuple[float, int]] = []
    for beat in heartbeats:
        info = beat.get("info") if isinstance(beat.get("info"), dict) else {}
        end = beat.get("time")
        start = info.get("started", end)
        if isinstance(start, (int, float)) and isinstance(end, (int, float)) and start <= end:
            edges += [(float(start), 1), (float(end), -1)]
    best = now = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], -e[1])):
        now += delta
        best = max(best, now)
    return best


# ----- the audit -----

MAX_BINS = 2000   # the births timeline never has more bins than this

def audit_store(store: PopulationStore, *, population_size: int, workers: int | None = None,
                events: list[dict[str, Any]] | None = None, bad_event_lines: int = 0,
                bin_seconds: float = 10.0) -> AuditReport:
    """Audit ``store`` (see the module docstring); pure reading, nothing is changed.

    ``workers``: W for the bounds (None: estimated from heartbeats). ``events``: the parsed
    event log (:func:`read_events`), if the workers wrote one.
    """
    problems: list[str] = []
    violations: list[str] = []
    seen: Counter[str] = Counter()

    def violation(kind: str, text: str) -> None:
        seen[kind] += 1
        if kind not in violations:
            violations.append(kind)
        if seen[kind] <= MAX_LISTED:
            problems.append(f"{kind}: {text}")

    lives, listed_ids, zombies, unreadable = _collect(store, problems)
    if unreadable:
        violations.append("unreadable_history")

    # --- parents ---
    missing = after = 0
    for life in lives.values():
        if life.parent is None:
            continue
        parent = lives.get(life.parent)
        if parent is None:
            missing += 1
            violation("missing_parent", f"{life.id} names parent {life.parent}, which never existed")
        elif parent.birth >= life.birth:
            after += 1
            violation("parent_born_after_child", f"{life.id} was born before its parent {life.parent}")

    # --- population size over time ---
    P = population_size
    heartbeats = store.runinfo.list_workers()
    if workers is not None:
        W, source = workers, "given"
    else:
        W = estimate_workers(heartbeats) or None
        source = "heartbeats" if W else "unknown"
    # Lives whose end is unknown (unreadable records) are left out rather than guessed.
    timed = [lf for lf in lives.values() if lf.fate == "alive" or lf.end is not None]
    changes = sorted([(lf.birth, 1) for lf in timed] + [(lf.end, -1) for lf in timed if lf.end is not None])
    size, seeding_end = 0, None
    low = high = None
    for when, delta in changes:
        size += delta
        if seeding_end is None and size >= P:
            seeding_end = when
        if seeding_end is not None:
            low = size if low is None else min(low, size)
            high = size if high is None else max(high, size)
    bounds = (P - W, P + W) if W else None
    if bounds and low is not None and (low < bounds[0] or high > bounds[1]):
        violation("population_out_of_bounds",
                  f"after seeding the population ranged over [{low}, {high}], outside [{bounds[0]}, {bounds[1]}]")

    # --- throughput after seeding ---
    births = sorted(lf.birth for lf in lives.values())
    start_at = bisect_left(births, seeding_end) if seeding_end is not None else len(births)
    after_seed = births[start_at:]
    rate = gap = None
    timeline: list[tuple[float, int]] = []
    if seeding_end is not None and len(after_seed) >= 2:
        span = after_seed[-1] - seeding_end
        rate = (len(after_seed) - 1) / span if span > 0 else None
        gap = max(b - a for a, b in zip(after_seed, after_seed[1:]))
    if births:
        t0 = births[0]
        # An id's date is whatever its writer chose: one planted id years old must not make
        # the timeline years of 10-second bins, so the bins widen to at most MAX_BINS.
        width = max(bin_seconds, (births[-1] - t0) / MAX_BINS)
        bins = Counter(min(int((b - t0) // width), MAX_BINS - 1) for b in births)
        timeline = [(round(t0 + k * width, 3), bins.get(k, 0)) for k in range(max(bins) + 1)]

    found = _check_events(events, bad_event_lines, lives, violation) if events is not None else None
    return AuditReport(
        url=store.url, ok=not violations, population_size=P, workers=W, workers_source=source,
        workers_seen=len(heartbeats), born=len(lives), alive=len(listed_ids),
        dead=sum(1 for lf in lives.values() if lf.fate == "dead"),
        quarantined=sum(1 for lf in lives.values() if lf.fate == "quarantined"),
        zombies=zombies, unreadable_history=unreadable, missing_parents=missing,
        parent_born_after_child=after, first_birth=births[0] if births else None, seeding_end=seeding_end,
        last_event=changes[-1][0] if changes else None, population_min=low, population_max=high,
        population_final=size, bounds=bounds, births_after_seeding=len(after_seed), births_per_second=rate,
        max_birth_gap_s=gap, events=found, violations=tuple(violations), problems=tuple(problems),
        births_timeline=tuple(timeline))


def _check_events(events: list[dict[str, Any]], bad_lines: int, lives: dict[str, _Life], violation) -> EventFindings:
    """Compare the workers' own account with the store."""
    if bad_lines:
        violation("bad_event_lines", f"{bad_lines} line(s) of the event log do not parse (torn appends?)")
    published: dict[str, dict[str, Any]] = {}
    winners: dict[str, list[str]] = {}
    losses = lost = double = phantom = mismatched = 0
    for ev in events:
        kind, ident = ev["event"], ev["id"]
        if kind == "publish":
            if ident in published:
                violation("duplicate_publish", f"{ident} was logged as published twice")
            published[ident] = ev
        elif kind == "kill":
            winners.setdefault(ident, []).append(ev["worker"])
        else:
            losses += 1
    for ident, ev in published.items():
        life = lives.get(ident)
        if life is None:
            lost += 1
            violation("lost", f"{ident} was published by {ev['worker']} but is neither alive, dead nor quarantined")
            continue
        fitness = ev.get("fitness")
        if ev.get("parent") != life.parent or (
                life.fitness is not None and isinstance(fitness, (int, float))
                and f"{fitness:.6f}" != f"{life.fitness:.6f}"):
            mismatched += 1
            violation("mismatched", f"{ident}: the store's parent/fitness differ from what {ev['worker']} published")
    for ident, killers in winners.items():
        life = lives.get(ident)
        if life is None or life.fate != "dead":
            phantom += 1
            violation("phantom_kill", f"{killers[0]} logged killing {ident}, which has no history record")
            continue
        if len(killers) > 1 or (life.killer is not None and killers[0] != life.killer):
            double += 1
            violation("double_kill", f"{ident} was killed by {sorted(set(killers) | {life.killer})}")
    return EventFindings(
        lines=len(events) + bad_lines, bad_lines=bad_lines, publishes=len(published),
        kills=sum(len(k) for k in winners.values()), race_losses=losses, lost=lost, double_kills=double,
        phantom_kills=phantom, mismatched=mismatched,
        unlogged_births=sum(1 for ident in lives if ident not in published))

"""What `evo report` shows, as plain data computed from one :class:`~launch.views.snapshot.Snapshot`.

Nothing here draws or writes: :func:`report_data` turns the snapshot (read through the
store's public reading API by ``take_snapshot``) into JSON-ready sections that
``launch.views.report_html`` renders. Every individual is kept (the progress figure and the
click-to-lineage need them all), as compact columns: one entry per individual in each list,
parents and mutations as indices, times and fitness rounded.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from .lineage import lineage
from .snapshot import Record, Snapshot
from .status import status_report

# Rows of the top-individuals table: at least this many, or --top K when larger.
MIN_TABLE_ROWS = 20
# The strategy's moving mean covers this share of its children (within the bounds below).
MOVING_MEAN_SHARE = 0.05
MOVING_MEAN_MIN, MOVING_MEAN_MAX = 5, 200
# Births are counted in at most this many bins of the worker-health figure.
HEALTH_BINS = 120
# Mutations that make no child of a parent: improvement rates are not defined for them.
NO_PARENT_MUTATIONS = ("initial", "random")


def ranked(snap: Snapshot) -> list[Record]:
    """Every individual, alive or dead, fittest first (ties: the older first)."""
    return sorted(snap.records.values(), key=lambda r: (-r.fitness, r.birth, r.id))


def columns(snap: Snapshot) -> dict[str, Any]:
    """Every individual as compact columns, ordered by birth: ``id``, ``t`` (seconds since the
    first birth, 0.1 s), ``fitness`` (6 decimals), ``alive`` (0/1), ``parent`` (index into
    these lists, -1 for none or unknown), ``mutation`` and ``worker`` (indices into
    ``mutations`` and ``workers``); ``orphans``: the indices of those whose parent is named but
    has no record (quarantined); ``start`` is the first birth (unix seconds)."""
    records = sorted(snap.records.values(), key=lambda r: (r.birth, r.id))
    start = records[0].birth if records else snap.taken
    index = {r.id: i for i, r in enumerate(records)}
    mutations = sorted({r.mutation for r in records})
    workers = sorted({r.worker for r in records})
    mut_of = {m: i for i, m in enumerate(mutations)}
    worker_of = {w: i for i, w in enumerate(workers)}
    return {
        "start": start,
        "id": [r.id for r in records],
        "t": [round(r.birth - start, 1) for r in records],
        "fitness": [round(r.fitness, 6) for r in records],
        "alive": [1 if r.alive else 0 for r in records],
        "parent": [index.get(r.parent, -1) if r.parent else -1 for r in records],
        "orphans": [i for i, r in enumerate(records) if r.parent and r.parent not in index],
        "mutation": [mut_of[r.mutation] for r in records],
        "worker": [worker_of[r.worker] for r in records],
        "mutations": mutations,
        "workers": workers,
    }


def best_so_far(cols: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps of the best fitness so far over birth order: each new record, as
    ``{"t", "fitness", "index"}`` (``index`` into ``cols``)."""
    steps, best = [], None
    for i, (t, f) in enumerate(zip(cols["t"], cols["fitness"])):
        if best is None or f > best:
            best = f
            steps.append({"t": t, "fitness": f, "index": i})
    return steps


def lineage_steps(snap: Snapshot, ident: str) -> dict[str, Any]:
    """The chain from the initial individual (first) to ``ident`` (last): each step's id,
    mutation, fitness, its change from the parent (``delta``; None for the first), birth (``t``
    since the chain's start), whether it is alive; ``complete`` False (and ``missing`` the id)
    when an ancestor has no record."""
    result = lineage(snap, ident)
    prev = None
    for step in result["steps"]:
        step["delta"] = None if prev is None else step["fitness"] - prev
        prev = step["fitness"]
    return result


def age_seconds(r: Record, now: float) -> float:
    """How long ``r`` lived: until its death, or until ``now`` when it is alive."""
    end = r.death if (not r.alive and r.death is not None) else now
    return max(0.0, end - r.birth)


def top_rows(snap: Snapshot, k: int, order: list[Record] | None = None) -> list[dict[str, Any]]:
    """The ``k`` fittest individuals (alive or dead): id, fitness, parameters (the trained
    model's, where its evaluator recorded them), age (seconds lived), alive, mutation,
    parent, worker, and the DNA (None when unreadable). ``order``: :func:`ranked`, if known."""
    rows = []
    for rank, r in enumerate((ranked(snap) if order is None else order)[:k], 1):
        params = r.metrics.get("params")
        rows.append({"rank": rank, "id": r.id, "fitness": r.fitness,
                     "params": params if isinstance(params, int) and not isinstance(params, bool) else None,
                     "age": age_seconds(r, snap.taken), "alive": r.alive, "mutation": r.mutation,
                     "parent": r.parent, "worker": r.worker, "dna": r.dna})
    return rows


def improvements(snap: Snapshot) -> list[dict[str, Any]]:
    """Per mutation: ``children`` whose parent's record is known, how many were fitter than
    their parent (``improved``), the ``rate``, the mean and best fitness change; most
    improvements first. The seeds and random individuals have no parent and are left out;
    ``unknown_parent`` counts children whose parent's record is gone (e.g. quarantined)."""
    rows: dict[str, dict[str, Any]] = {}
    for r in snap.records.values():
        if r.mutation in NO_PARENT_MUTATIONS or r.parent is None:
            continue
        row = rows.setdefault(r.mutation, {"mutation": r.mutation, "children": 0, "improved": 0,
                                           "unknown_parent": 0, "sum_delta": 0.0, "best_delta": None})
        parent = snap.records.get(r.parent)
        if parent is None:
            row["unknown_parent"] += 1
            continue
        delta = r.fitness - parent.fitness
        row["children"] += 1
        row["improved"] += delta > 0
        row["sum_delta"] += delta
        row["best_delta"] = delta if row["best_delta"] is None else max(row["best_delta"], delta)
    out = []
    for row in rows.values():
        n = row.pop("children")
        total = row.pop("sum_delta")
        out.append({**row, "children": n, "rate": row["improved"] / n if n else None,
                    "mean_delta": total / n if n else None})
    return sorted(out, key=lambda r: (-r["improved"], -(r["rate"] or 0.0), r["mutation"]))


def worker_health(snap: Snapshot, status: dict[str, Any]) -> dict[str, Any]:
    """Workers over time. ``workers``: each heartbeat's row (``status_report``'s: status
    active/stopped/lost, started, last seen, individuals, failures, race losses) with its
    births in this snapshot; ``bins``: births per time bin (``edges`` in seconds since the first
    birth) and how many workers were heartbeating in each (from each worker's start to its
    last heartbeat); ``lost``: when each lost worker was last seen."""
    records = list(snap.records.values())
    start = min((r.birth for r in records), default=snap.taken)
    births_by_worker = Counter(r.worker for r in records)
    workers = []
    for w in status["workers"]:
        started = w["started"] if w["started"] is not None else w["last_seen"]
        workers.append({"worker": w["worker"], "host": w["host"], "status": w["status"],
                        "state": w["state"], "start": started - start, "last_seen": w["last_seen"] - start,
                        "individuals": w["individuals"] or 0, "births": births_by_worker.get(w["worker"], 0),
                        "failures": w["failures"] or 0, "race_losses": w["race_losses"] or 0,
                        "kills": w["kills"] or 0, "job": w["job"]})
    span = max([r.birth - start for r in records] + [w["last_seen"] for w in workers] + [1.0])
    n_bins = max(1, min(HEALTH_BINS, int(span // 10) + 1))
    width = span / n_bins
    births = [0] * n_bins
    for r in records:
        births[min(n_bins - 1, max(0, int((r.birth - start) / width)))] += 1
    active = []
    for b in range(n_bins):
        lo, hi = b * width, (b + 1) * width
        active.append(sum(1 for w in workers if w["start"] < hi and w["last_seen"] >= lo))
    return {"workers": workers, "bin_seconds": width,
            "bins": {"edges": [round(b * width, 1) for b in range(n_bins + 1)], "births": births, "workers": active},
            "lost": [{"worker": w["worker"], "t": w["last_seen"]} for w in workers if w["status"] == "lost"],
            "failures": sum(w["failures"] for w in workers),
            "counts": dict(Counter(w["status"] for w in workers))}


def strategy_state(snap: Snapshot) -> dict[str, Any] | None:
    """A learned strategy's reward curve: children whose metrics carry an integer
    ``policy_version`` (and a ``policy`` name), by birth order, with their reward (= fitness),
    a moving mean and each version's mean. None when no child has one."""
    children = [r for r in snap.records.values() if _int(r.metrics.get("policy_version")) is not None]
    if not children:
        return None
    children.sort(key=lambda r: (r.birth, r.id))
    rewards = [r.fitness for r in children]
    window = max(MOVING_MEAN_MIN, min(MOVING_MEAN_MAX, math.ceil(MOVING_MEAN_SHARE * len(rewards))))
    window = min(window, len(rewards))
    moving, total = [], 0.0
    for i, f in enumerate(rewards):
        total += f
        if i >= window:
            total -= rewards[i - window]
        moving.append(total / min(i + 1, window))
    versions: dict[int, list[float]] = {}
    for r in children:
        versions.setdefault(r.metrics["policy_version"], []).append(r.fitness)
    policies = Counter(str(r.metrics.get("policy", "?"))[:64] for r in children)
    return {"order": list(range(1, len(children) + 1)), "id": [r.id for r in children],
            "version": [r.metrics["policy_version"] for r in children],
            "reward": [round(f, 6) for f in rewards], "moving_mean": [round(m, 6) for m in moving],
            "window": window, "policies": dict(policies),
            "per_version": [{"version": v, "children": len(fs), "mean": sum(fs) / len(fs), "best": max(fs)}
                            for v, fs in sorted(versions.items())]}


def _int(x: Any) -> int | None:
    """``x`` if it is an integer that fits 32 bits (what the page's typed arrays hold), else None."""
    return x if isinstance(x, int) and not isinstance(x, bool) and -2**31 <= x < 2**31 else None


def report_data(snap: Snapshot, top: int) -> dict[str, Any]:
    """Every section of the report of ``snap``, as plain data: ``summary`` (``status_report``'s
    numbers), ``points`` (:func:`columns`), ``best_so_far``, ``best`` (the best individual ever,
    alive or dead) and its ``lineage`` (:func:`lineage_steps`), ``top`` (:func:`top_rows`, at
    least :data:`MIN_TABLE_ROWS` rows; the first ``top`` are drawn), ``improvements``,
    ``health`` (:func:`worker_health`), ``retrains`` (``status_report``'s rows; empty when none)
    and ``strategy`` (:func:`strategy_state`; None when no learned strategy ran)."""
    status = status_report(snap)
    cols = columns(snap)
    order = ranked(snap)
    best = order[0] if order else None
    return {
        "summary": {k: status[k] for k in ("url", "time", "config", "alive", "born", "killed", "quarantined",
                                           "best", "median", "individuals_per_hour", "broken", "failures",
                                           "race_losses", "workers_active", "workers_lost")},
        "points": cols,
        "best_so_far": best_so_far(cols),
        "best": {"id": best.id, "fitness": best.fitness, "alive": best.alive, "mutation": best.mutation}
        if best else None,
        "lineage": lineage_steps(snap, best.id) if best else None,
        "top": top_rows(snap, max(top, MIN_TABLE_ROWS), order),
        "drawn": top,
        "improvements": improvements(snap),
        "health": worker_health(snap, status),
        "retrains": status["retrains"],
        "strategy": strategy_state(snap),
    }

"""The status of a population as plain data: the numbers `evo status` prints (and ``--json``
writes) and `evo report` summarises, computed from one
:class:`~launch.views.snapshot.Snapshot`: size, births and deaths, rates, the live
population's validation accuracy, each worker's heartbeat (silent ones are ``lost``) and the
final trainings.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from .snapshot import Snapshot

HOUR = 3600.0
MAX_BROKEN_SHOWN = 10
# A worker is lost after this many heartbeat intervals of silence (its heartbeat says its
# interval: 10 s by default, so 50 s); heartbeats that do not say (older workers): 600 s.
LOST_AFTER_BEATS = 5
LEGACY_LOST_AFTER = 600.0


def lost_after_for(info: dict[str, Any], lost_after: float | None = None) -> float:
    """Seconds of silence after which the worker of heartbeat ``info`` counts as lost."""
    if lost_after is not None:
        return lost_after
    interval = info.get("interval")
    if isinstance(interval, (int, float)) and not isinstance(interval, bool) and 0 < interval <= 3600:
        return LOST_AFTER_BEATS * float(interval)
    return LEGACY_LOST_AFTER


def status_report(snap: Snapshot, lost_after: float | None = None,
                  slurm_jobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The status of ``snap`` as one JSON-ready object (the ``--json`` output).

    ``born`` counts every individual that ever lived (alive, dead, quarantined);
    ``individuals_per_hour`` is births per hour from the first birth to the last, and
    ``individuals_per_hour_last_hour`` births in the hour before the snapshot (over the run's
    age when it is younger). A worker is ``lost`` when it did not say it stopped and its
    last heartbeat is older than ``lost_after`` seconds (default: 5 of its heartbeat
    intervals). ``slurm_jobs``: what squeue said about the run's recorded arrays
    (``launch.clusters.squeue.summarize_jobs``; None when squeue was not asked).
    """
    now = snap.taken
    alive = snap.alive
    records = list(snap.records.values())
    fitness = sorted(r.fitness for r in alive)
    best = snap.best_alive()
    worst = min(alive, key=lambda r: (r.fitness, r.birth), default=None)
    births = sorted(r.birth for r in records)
    first, last = (births[0], births[-1]) if births else (None, None)
    born = snap.born
    span_h = (last - first) / HOUR if births else 0.0
    recent = sum(1 for b in births if b >= now - HOUR)
    window_h = min(1.0, max(now - first, 1.0) / HOUR) if births else 0.0
    workers = [_worker_row(w, now, lost_after) for w in snap.workers]
    workers.sort(key=lambda w: (w["status"] != "active", w["worker"]))
    cfg = snap.config
    return {
        "url": snap.url,
        "time": now,
        "config": {"dataset": cfg.dataset, "population_size": cfg.population_size,
                   "selection": cfg.selection, "search_space": cfg.search_space,
                   "steps": cfg.train.steps},
        "alive": len(alive),
        "born": born,
        "killed": sum(1 for r in records if not r.alive),
        "quarantined": snap.quarantined,
        "best": {"id": best.id, "fitness": best.fitness, "mutation": best.mutation} if best else None,
        "median": statistics.median(fitness) if fitness else None,
        "worst": {"id": worst.id, "fitness": worst.fitness} if worst else None,
        "first_birth": first,
        "last_birth": last,
        "individuals_last_hour": recent,
        "individuals_per_hour": born / span_h if span_h > 0 else None,
        "individuals_per_hour_last_hour": recent / window_h if window_h > 0 else None,
        "race_losses": sum(int(w["race_losses"] or 0) for w in workers),
        "failures": sum(int(w["failures"] or 0) for w in workers),
        "workers": workers,
        "workers_active": sum(1 for w in workers if w["status"] == "active"),
        "workers_lost": sum(1 for w in workers if w["status"] == "lost"),
        "workers_failed": sum(1 for w in workers if w["status"] == "failed"),
        "mutations": dict(sorted(Counter(r.mutation for r in records).items())),
        "broken": len(snap.broken),
        "broken_entries": [{"key": b.key, "problem": b.problem} for b in snap.broken[:MAX_BROKEN_SHOWN]],
        "slurm_jobs": slurm_jobs,
        "data": snap.data,
        "retrains": [retrain_row(r, now) for r in snap.retrains],
        "policy": snap.policy.summary() if snap.policy is not None else None,
    }


def retrain_row(state: Any, now: float) -> dict[str, Any]:
    """One final training (a ``storage.RetrainState``) as the status shows it: what it
    trains, its state, progress from its holder's last heartbeat, and its result."""
    req = state.request or {}
    src = req.get("source") if isinstance(req.get("source"), dict) else {}
    settings = req.get("settings") if isinstance(req.get("settings"), dict) else {}
    beat = state.beat or {}
    info = beat.get("info") if isinstance(beat.get("info"), dict) else {}
    res = state.result or {}

    def num(d: dict, key: str) -> Any:
        v = d.get(key)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return {
        "rid": state.rid, "state": state.state, "claims": state.claims,
        "source": str(src.get("id") or src.get("name") or src.get("file") or "?")[:200],
        "searched_fitness": num(src, "fitness"), "size": req.get("size"), "init": req.get("init"),
        "epochs": num(settings, "epochs"), "data": settings.get("data"), "seed": num(settings, "seed"),
        "epoch": num(info, "epoch"), "step": num(info, "step"), "total_steps": num(info, "total_steps"),
        "loss": num(info, "loss"), "train_accuracy": num(info, "train_accuracy"),
        "val_accuracy": num(info, "val_accuracy"), "eta_seconds": num(info, "eta_seconds"),
        "host": str(info.get("host", ""))[:64] or None, "pid": num(info, "pid"),
        "last_beat_ago": now - beat["time"] if num(beat, "time") is not None else None,
        "error": str(info["error"])[:300] if info.get("error") else None,
        "checkpoint_step": state.checkpoint_step,
        "test_accuracy": num(res, "test_accuracy"), "parameters": num(res, "parameters"),
        "train_seconds": num(res, "train_seconds"),
    }


def _worker_row(beat: dict[str, Any], now: float, lost_after: float | None) -> dict[str, Any]:
    info = beat.get("info") if isinstance(beat.get("info"), dict) else {}
    seen = float(beat["time"])
    state = str(info.get("state", "?"))
    limit = lost_after_for(info, lost_after)
    status = state if state in ("stopped", "failed") else ("lost" if now - seen > limit else "active")

    def num(key: str) -> Any:
        v = info.get(key)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    sched = info.get("scheduler") if isinstance(info.get("scheduler"), dict) else {}
    sched = {str(k)[:32]: str(v)[:128] for k, v in list(sched.items())[:8]}
    return {
        "worker": beat["worker"], "host": str(info.get("host", "?"))[:64], "pid": num("pid"),
        "state": state[:16], "status": status, "last_seen": seen, "silent_s": max(0.0, now - seen),
        "lost_after": limit, "heartbeat_interval": num("interval"),
        "started": num("started"), "individuals": num("individuals"), "kills": num("kills"),
        "race_losses": num("race_losses"), "failures": num("failures"),
        "best_fitness": num("best_fitness"), "device": str(info.get("device", ""))[:32],
        "scheduler": sched, "job": job_label(sched), "log": str(info["log"])[:1024] if info.get("log") else None,
        "stopped_by": str(info["stopped_by"])[:16] if info.get("stopped_by") else None,
        "reason": " ".join(str(info["reason"]).split())[:300] if info.get("reason") else None,
    }


def job_label(sched: dict[str, str]) -> str:
    """Short scheduler identity: ``slurm 123_4`` (array job 123, task 4), ``k8s POD``."""
    if sched.get("kind") == "slurm":
        if sched.get("array_job_id") and sched.get("array_task_id"):
            return f"slurm {sched['array_job_id']}_{sched['array_task_id']}"
        return f"slurm {sched.get('job_id', '?')}"
    if sched.get("kind") == "kubernetes":
        return f"k8s {sched.get('pod') or 'index ' + sched.get('index', '?')}"
    return ""

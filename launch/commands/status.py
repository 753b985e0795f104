"""`evo status URL [--json] [--watch]`: what a running (or finished) population is doing.

Everything is read from the store, so it works for any launcher and from any machine that
can reach the population: size, births and deaths, the live population's validation
accuracy, throughput, each worker's heartbeat (silent ones are shown as lost), race
losses, quarantine and how often each mutation was used. When ``squeue`` is on PATH it also
asks SLURM about the arrays that ``evo launch slurm`` recorded in the store, and names
pending ones whose reason never clears.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from typing import Any

from ..views.snapshot import Snapshot, ago, open_population, take_snapshot, utc
from ..errors import UserError
from ..options import add_command, non_negative_int, positive_seconds

HOUR = 3600.0
MAX_BROKEN_SHOWN = 10
# A worker is lost after this many heartbeat intervals of silence (its heartbeat says its
# interval: 10 s by default, so 50 s); heartbeats that do not say (older workers): 600 s.
LOST_AFTER_BEATS = 5
LEGACY_LOST_AFTER = 600.0
RECENT_LAUNCHES = 20   # squeue is asked about this many of the latest recorded launches


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
    status = "stopped" if state == "stopped" else ("lost" if now - seen > limit else "active")

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


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_status(r: dict[str, Any]) -> str:
    """The human-readable status screen."""
    c = r["config"]
    lines = [f"population {r['url']}  ({c['dataset']}, P={c['population_size']}, {c['selection']}, "
             f"{c['search_space']}, {c['steps']} steps/child)  at {utc(r['time'])} UTC",
             f"  alive {r['alive']} | born {r['born']} | killed {r['killed']} | quarantined {r['quarantined']}"
             f" | race losses {r['race_losses']} | failed children {r['failures']}"]
    data = r.get("data")
    if data:
        state = data["state"]
        if state == "ready":
            by = f" (decoded by {data['decoded_by']})" if data.get("decoded_by") else ""
            lines.append(f"  data: {data['summary']}{by}")
        elif state == "decoding":
            lines.append(f"  data: {data['line'].replace('waiting for the dataset: ', '')}")
        elif state == "not decoded":
            lines.append("  data: not decoded yet (the first worker decodes it, or `evo init`)")
        else:
            lines.append(f"  data: {state}: {data.get('problem', '')}")
    if r["best"]:
        lines.append(f"  validation accuracy (live): best {_f(r['best']['fitness'])} ({r['best']['id']}, "
                     f"{r['best']['mutation']}), median {_f(r['median'])}, worst {_f(r['worst']['fitness'])}")
    else:
        lines.append("  no live individuals yet")
    if r["first_birth"] is not None:
        lines.append(f"  individuals per hour: {_f(r['individuals_per_hour_last_hour'], 1)} over the last hour "
                     f"({r['individuals_last_hour']} born), {_f(r['individuals_per_hour'], 1)} overall; "
                     f"first birth {ago(r['time'] - r['first_birth'])} ago, last {ago(r['time'] - r['last_birth'])} ago")
    if r["broken"]:
        lines.append(f"  broken entries (skipped, never used): {r['broken']}; "
                     f"`evo check {r['url']}` lists them, `--repair` moves them aside")
        lines += [f"    {b['key']}: {b['problem']}" for b in r["broken_entries"][:3]]
    lines += format_policy(r.get("policy"))
    if r["mutations"]:
        lines.append("  mutations: " + ", ".join(f"{k} {n}" for k, n in
                                                  sorted(r["mutations"].items(), key=lambda kv: (-kv[1], kv[0]))))
    ws = r["workers"]
    lines.append(f"workers: {len(ws)} ({r['workers_active']} active, "
                 f"{sum(1 for w in ws if w['status'] == 'stopped')} stopped, {r['workers_lost']} lost)")
    if ws:
        header = ("worker", "host", "pid", "status", "state", "last seen", "done", "kills", "races", "best",
                  "job", "log")
        rows = [(w["worker"], w["host"], str(w["pid"] or "-"), _status_text(w), w["state"],
                 ago(w["silent_s"]) + " ago", str(w["individuals"] or 0), str(w["kills"] or 0),
                 str(w["race_losses"] or 0), _f(w["best_fitness"]), w["job"] or "-", w["log"] or "-")
                for w in ws]
        keep = [i for i in range(len(header)) if i < 10 or any(r[i] != "-" for r in rows)]
        header = tuple(header[i] for i in keep)
        rows = [tuple(r[i] for i in keep) for r in rows]
        widths = [max(len(x) for x in col) for col in zip(header, *rows)]
        for row in [header] + rows:
            lines.append("  " + "  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip())
    from ..clusters.squeue import describe
    for job in r.get("slurm_jobs") or []:
        lines.append(describe(job))
    lines += format_retrains(r.get("retrains") or [])
    return "\n".join(lines)


def format_policy(p: dict[str, Any] | None) -> list[str]:
    """The status lines of a learned strategy's policy (none for other strategies)."""
    if p is None:
        return []
    if p["version"] is None:
        return [f"  policy ({p['strategy']}): no version yet (the first controller child makes one)"]
    line = (f"  policy ({p['strategy']}): version {p['version']} ({p['versions_kept']} kept), "
            f"{p['updates']} updates, reward baseline {_f(p['baseline'])}")
    rewards = p["recent_rewards"]
    if rewards:
        line += (f"; last {len(rewards)} rewards mean {_f(p['recent_mean'])}, newest "
                 + " ".join(_f(x, 3) for x in rewards[-5:]))
    return [line] + [f"    {problem}" for problem in p["problems"][:3]]


def format_retrains(rows: list[dict[str, Any]]) -> list[str]:
    """The final-trainings section of the status screen (empty without retrains)."""
    if not rows:
        return []
    from evo.train.retrain import eta_text

    counts = Counter(row["state"] for row in rows)
    lines = [f"final trainings (evo retrain): {len(rows)} ("
             + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) + ")"]
    for row in rows:
        searched = f"searched val {_f(row['searched_fitness'])}" if row["searched_fitness"] is not None else ""
        size = f" N={row['size']['cells']} F={row['size']['filters']}" if isinstance(row["size"], dict) else ""
        head = f"  {row['rid']}  {row['state']:<8}"
        if row["state"] == "done":
            lines.append(f"{head}  TEST {_f(row['test_accuracy'])}  ({searched}{size}; {row['epochs']} epochs, seed {row['seed']}, "
                         f"{row['parameters']} parameters)")
        elif row["state"] in ("training", "stalled") and row["total_steps"]:
            frac = (row["step"] or 0) / row["total_steps"]
            acc = f" acc {_f(row['train_accuracy'])}" if row["train_accuracy"] is not None else ""
            val = f" val {_f(row['val_accuracy'])}" if row["val_accuracy"] is not None else ""
            who = f"{row['host']} pid {row['pid']}, " if row["host"] else ""
            seen = ago(row["last_beat_ago"]) + " ago" if row["last_beat_ago"] is not None else "-"
            lines.append(f"{head}  [{'#' * int(frac * 20):<20}] epoch {row['epoch']}/{row['epochs']} "
                         f"loss {_f(row['loss'])}{acc}{val} ETA {eta_text(row['eta_seconds'])}  ({who}{seen}"
                         + (", taken over by the next process" if row["state"] == "stalled" else "") + ")")
        elif row["state"] == "failed":
            lines.append(f"{head}  {row['error'] or '?'} (evo retrain URL --pending --retry-failed)")
        else:
            ck = f", checkpoint at step {row['checkpoint_step']}" if row["checkpoint_step"] is not None else ""
            lines.append(f"{head}  {row['source']} {searched}{size}{ck}")
    return lines


def _status_text(w: dict[str, Any]) -> str:
    if w["status"] == "lost":
        return "LOST"
    if w["status"] == "stopped" and w.get("stopped_by"):
        return f"stopped ({w['stopped_by']})"
    return w["status"]


def slurm_jobs(url: str) -> list[dict[str, Any]] | None:
    """What squeue says about the SLURM arrays recorded in the store by ``evo launch slurm``
    (the latest few; only those still queued or running). None without squeue or records."""
    import shutil

    from storage import StoreError, open_store

    from ..clusters import squeue as queue_reader

    if shutil.which("squeue") is None:
        return None
    try:
        launches = open_store(url).list_launches()
    except (StoreError, OSError):
        return None
    ids = [str(rec["info"].get("job_id")) for rec in sorted(launches, key=lambda r: r["time"])
           if rec["info"].get("kind") == "slurm"][-RECENT_LAUNCHES:]
    if not ids:
        return None
    tasks = queue_reader.squeue(ids)
    return None if tasks is None else queue_reader.summarize_jobs(tasks)


def run(args: argparse.Namespace) -> int:
    if (args.lost_after is not None and not args.lost_after > 0) or not args.interval > 0:
        raise UserError("--lost-after and --interval must be positive")
    if not args.watch:
        _emit(args, take_snapshot(args.url, history_dna=False, alive_dna=False))
        return 0
    return _watch(args)


def _emit(args: argparse.Namespace, snap: Snapshot, stream=None) -> str:
    report = status_report(snap, args.lost_after, slurm_jobs(args.url))
    text = json.dumps(report, sort_keys=True) if args.json else format_status(report)
    print(text, file=stream or sys.stdout, flush=True)
    return text


def _watch(args: argparse.Namespace) -> int:
    """Refresh every ``--interval`` seconds until Ctrl-C (or ``--count`` refreshes)."""
    tty = sys.stdout.isatty() and not args.json
    live = None
    if tty:
        try:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            live = Live(Text("reading the population..."), console=Console(), auto_refresh=False)
            live.start()
        except ImportError:
            live = None
    n = 0
    # one store for every refresh: it remembers the records it read (they never change), so
    # each refresh reads only the listings and what is new
    population = open_population(args.url)
    try:
        while True:
            snap = take_snapshot(args.url, spinner=False, history_dna=False, alive_dna=False,
                                 population=population)
            report = status_report(snap, args.lost_after, slurm_jobs(args.url))
            if args.json:
                print(json.dumps(report, sort_keys=True), flush=True)
            elif live is not None:
                from rich.text import Text
                live.update(Text(format_status(report), no_wrap=True, overflow="ellipsis"), refresh=True)
            elif tty:
                print("\x1b[2J\x1b[H" + format_status(report), flush=True)
            else:
                print(format_status(report) + "\n", flush=True)
            n += 1
            if args.count and n >= args.count:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if live is not None:
            live.stop()


def register(sub) -> None:
    p = add_command(sub, "status", help="population, workers, rates and mutations of a run",
                    description="Show a population's state from the store alone: births and deaths, "
                                "validation accuracy of the live population, throughput, workers "
                                   "(silent ones shown as lost), race losses, quarantine, mutation counts.")
    p.add_argument("--json", action="store_true", help="print one JSON object (one per refresh with --watch)")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=positive_seconds, default=5.0, help="seconds between refreshes")
    p.add_argument("--count", type=non_negative_int, default=0,
                   help="with --watch: stop after this many refreshes (0: never)")
    p.add_argument("--lost-after", type=positive_seconds, default=None, metavar="SECONDS",
                   help="a worker silent this long (and not stopped) is shown as lost (default: 5 of its "
                        "heartbeat intervals: 50 s with 10 s heartbeats)")
    p.set_defaults(func=run)

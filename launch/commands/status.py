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
import sys
import time
from collections import Counter
from typing import Any

from ..errors import UserError
from ..options import add_command, non_negative_int, positive_seconds
from ..views.snapshot import Snapshot, ago, open_population, take_snapshot, utc
from ..views.status import status_report

RECENT_LAUNCHES = 20   # squeue is asked about this many of the latest recorded launches


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
    failed = [w for w in ws if w["status"] == "failed"]
    lines.append(f"workers: {len(ws)} ({r['workers_active']} active, "
                 f"{sum(1 for w in ws if w['status'] == 'stopped')} stopped, "
                 + (f"{len(failed)} FAILED, " if failed else "") + f"{r['workers_lost']} lost)")
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
        lines += [f"  {w['worker']} failed: {w['reason'] or 'no reason given'}" for w in failed]
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
            f"{p['updates']} children learned from"
            + (f", {p['waiting']} waiting for the next update" if p.get("waiting") else "")
            + f", reward baseline {_f(p['baseline'])}")
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
    if w["status"] == "failed":
        return "FAILED"
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
        launches = open_store(url).runinfo.list_launches()
    except (StoreError, OSError):
        return None
    ids = [str(rec["info"].get("job_id")) for rec in sorted(launches, key=lambda r: r["time"])
           if rec["info"].get("kind") == "slurm"][-RECENT_LAUNCHES:]
    if not ids:
        return None
    tasks = queue_reader.squeue(ids)
    return None if tasks is None else queue_reader.summarize_jobs(tasks)


def status_of(snap: Snapshot, lost_after: float | None = None) -> dict[str, Any]:
    """The ``evo status --json`` object of ``snap`` (``Run.status()`` of the Python API):
    :func:`~launch.views.status.status_report` with what squeue says of the run's arrays."""
    return status_report(snap, lost_after, slurm_jobs(snap.url))


def run(args: argparse.Namespace) -> int:
    if (args.lost_after is not None and not args.lost_after > 0) or not args.interval > 0:
        raise UserError("--lost-after and --interval must be positive")
    if not args.watch:
        _emit(args, take_snapshot(args.url, history_dna=False, alive_dna=False))
        return 0
    return _watch(args)


def _emit(args: argparse.Namespace, snap: Snapshot, stream=None) -> str:
    report = status_of(snap, args.lost_after)
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
            report = status_of(snap, args.lost_after)
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

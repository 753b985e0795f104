"""Throughput of the coordination layer: individuals per second against the number of workers.

    python -m bench.storage_throughput --backend local --workers 1 8 32 128 250 --seconds 45
    python -m bench.storage_throughput --backend gcs --workers 1 8 32 --seconds 45
    python -m bench.storage_throughput --plot bench/results/storage-local.json bench/results/storage-gcs.json

Each point: a fresh synthetic-fitness population (zero simulated training time, so every
cycle is pure coordination: list, select, read the parent, mutate, publish, kill), pre-seeded
with P initial individuals through the store API (the workers' own seeding is exercised by
the chaos runs), W real ``evo worker`` processes started over a few seconds, then, once all
of them are running, births are counted for ``seconds`` (from the ids' timestamps, so nothing is
sampled from the workers). Also recorded: kills and kill races (from the workers' event log),
machine CPU use, peak RSS per worker, and an ``evo audit`` of the point's store.

``run(backend, workers, seconds, out_dir)`` is what the benchmark suite calls; it writes
``out_dir/storage-{backend}.json`` and ``.md`` and returns the report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from bisect import bisect_left
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._procs import (  # noqa: E402
    MemoryStats, WorkerPool, available_memory_mib, births_from_listing, evo, machine_info, preseed, remove_tree,
    stop_on_sigterm,
)
from storage import open_store  # noqa: E402

# Optuna 5.0.0 JournalFileBackend on a machine of this class (see /work/shared/PERF.md):
# trials/s with a free objective, TPE and Random samplers, W worker processes.
MIN_FREE_MIB = 4096   # never start another worker with less memory available than this
OPTUNA_JOURNAL = {"tpe": {1: 86, 8: 109, 32: 93, 128: 72, 250: 49}, "random": {1: 430, 8: 349, 128: 181}}


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by one process (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _count_events(path: Path, start: float, end: float) -> dict[str, int]:
    """Publishes, kills and lost kill races the workers logged in ``[start, end)``."""
    from evo.audit import EVENT_KINDS, read_events

    counts = dict.fromkeys(EVENT_KINDS, 0)
    if not Path(path).exists():
        return counts
    for ev in read_events(path)[0]:
        if isinstance(ev.get("time"), (int, float)) and start <= ev["time"] < end:
            counts[ev["event"]] += 1
    return counts


def wait_until(condition, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def measure_point(backend: str, w: int, seconds: float, work: Path, *, population: int = 1000,
                  weight_bytes: int = 4096, selection: str = "pairwise", warmup: float = 3.0,
                  audit: bool = True, progress=None) -> dict[str, Any]:
    """Births per second of ``w`` workers on a fresh population (see the module docstring)."""
    say = progress or (lambda msg: None)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    emulator = None
    if backend == "gcs":
        from bench._emulator import emulator_env, make_bucket, start_emulator
        emulator = start_emulator(work / "emulator.log")
        env.update(emulator_env(emulator.url))
        os.environ.update(emulator_env(emulator.url))
        bucket = f"evo-tput-{uuid.uuid4().hex[:10]}"
        make_bucket(emulator.url, bucket)
        url = f"gs://{bucket}/pop"
    elif backend == "local":
        url = str(work / "pop")
    else:
        raise ValueError(f"backend must be local or gcs, not {backend!r}")
    events_path = work / "events.jsonl"
    pool = WorkerPool(url, w, work / "logs", env, worker_args=("--event-log", str(events_path)))
    memory = MemoryStats()
    try:
        init = evo(["init", url, "--dataset", "synthetic", "-P", str(population), "--selection", selection,
                    "--synthetic-train-seconds", "0", "--synthetic-weight-bytes", str(weight_bytes)], env)
        if init.returncode != 0:
            raise RuntimeError(f"evo init failed: {init.stderr.strip()}")
        store = open_store(url)
        preseed_s = preseed(url)
        stagger = min(0.2 * w, 60.0)
        t0 = time.time()
        for i in range(w):
            while time.time() < t0 + stagger * i / w:
                time.sleep(0.01)
            if available_memory_mib() < MIN_FREE_MIB:
                raise MemoryError(f"W={w}: only {available_memory_mib():.0f} MiB left after starting {i} "
                                  f"workers; stopped to protect the machine's other users")
            pool.start(i)
        ready = wait_until(lambda: len(store.runinfo.list_workers()) >= w and store.runinfo.has_mark("selection_started")
                            and len(store.population.list_alive()) >= population, timeout=300 + 2 * w)
        if not ready:
            raise RuntimeError(f"W={w}: workers did not all start and seed within the time limit")
        time.sleep(warmup)
        running_before = len(pool.running())
        busy0, total0 = cpu_times()
        emu_cpu0 = proc_cpu_seconds(emulator.process.pid) if emulator else 0.0
        worker_pids = pool.pids()
        workers_cpu0 = sum(proc_cpu_seconds(pid) for pid in worker_pids)
        load_before = loadavg()
        start = time.time()
        next_mem = start + min(2.0, seconds / 2)
        while (now := time.time()) < start + seconds:
            if now >= next_mem:
                memory.sample(pool.pids())
                next_mem += 10.0
            time.sleep(0.1)
        end = time.time()
        busy1, total1 = cpu_times()
        emu_cpu1 = proc_cpu_seconds(emulator.process.pid) if emulator else 0.0
        workers_cpu1 = sum(proc_cpu_seconds(pid) for pid in worker_pids)
        running_after = len(pool.running())
    finally:
        pool.stop()
    try:
        births = births_from_listing(url)
        n = bisect_left(births, end) - bisect_left(births, start)
        events = _count_events(events_path, start, end)
        point = {
            "workers": w, "window_s": round(end - start, 2), "births": n, "preseed_s": round(preseed_s, 1),
            "births_per_s": round(n / (end - start), 2),
            "kills_per_s": round(events["kill"] / (end - start), 2),
            "race_losses_per_s": round(events["race_loss"] / (end - start), 2),
            "race_losses_per_kill": round(events["race_loss"] / events["kill"], 3) if events["kill"] else None,
            "seconds_per_child_per_worker": round(w * (end - start) / n, 4) if n else None,
            "machine_cpu_busy": round((busy1 - busy0) / max(1, total1 - total0), 3),
            "workers_cpu_s_per_s": round((workers_cpu1 - workers_cpu0) / (end - start), 3),
            "workers_cpu_ms_per_birth": round(1000 * (workers_cpu1 - workers_cpu0) / n, 2) if n else None,
            "loadavg_1min_before": load_before,
            "emulator_cpu_s_per_s": round((emu_cpu1 - emu_cpu0) / (end - start), 3) if emulator else None,
            "workers_running": [running_before, running_after],
            "unexpected_worker_exits": len(pool.unexpected_exits),
            "memory": memory.summary(),
        }
        if audit:
            a = evo(["audit", url, "--json", "--workers", str(w), "--events", str(events_path)], env)
            report = json.loads(a.stdout) if a.stdout.strip().startswith("{") else {}
            point["audit_ok"] = report.get("ok")
            point["audit_violations"] = report.get("violations")
        say(f"{backend} W={w}: {point['births_per_s']} births/s, CPU busy {point['machine_cpu_busy']:.0%}, "
            f"race losses/kill {point['race_losses_per_kill']}, peak RSS/worker "
            f"{point['memory']['peak_rss_per_worker_mib_median']} MiB")
        return point
    finally:
        if emulator is not None:
            emulator.stop()
        if backend == "local":
            remove_tree(work / "pop")


def run(backend: str, workers: list[int], seconds: float, out_dir: str | os.PathLike[str], *,
        population: int = 1000, weight_bytes: int = 4096, selection: str = "pairwise",
        progress=None) -> dict[str, Any]:
    """Measure births/s for each W in ``workers`` on ``backend`` ("local" or "gcs").

    Writes ``out_dir/storage-{backend}.json`` and ``.md``; returns the report:
    ``{"backend", "points": [{"workers", "births_per_s", ...}], "scaling": {...}, ...}``.
    """
    if backend not in ("local", "gcs"):
        raise ValueError(f"backend must be local or gcs, not {backend!r}")
    if not workers or any(w < 1 for w in workers) or seconds <= 0:
        raise ValueError("workers must be a non-empty list of counts >= 1 and seconds > 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    points = []
    with tempfile.TemporaryDirectory(prefix="evo-tput-") as tmp:
        for w in workers:
            try:
                points.append(measure_point(backend, w, seconds, Path(tmp) / f"w{w}", population=population,
                                            weight_bytes=weight_bytes, selection=selection, progress=progress))
            except MemoryError as exc:
                points.append({"workers": w, "skipped": str(exc)})
                if progress:
                    progress(f"skipped: {exc}")
    skipped = [p for p in points if "skipped" in p]
    points = [p for p in points if "skipped" not in p]
    if not points:
        raise RuntimeError(f"no point could be measured: {skipped[0]['skipped']}")
    best = max(points, key=lambda p: p["births_per_s"])
    report = {
        "kind": "storage_throughput", "backend": backend, "population_size": population,
        "weight_bytes": weight_bytes, "selection": selection, "synthetic_train_seconds": 0.0,
        "seconds_per_point": seconds, "machine": machine_info(tempfile.gettempdir() if backend == "local" else None),
        "points": points,
        "skipped": skipped,
        "scaling": {
            "peak_births_per_s": best["births_per_s"], "peak_at_workers": best["workers"],
            "speedup_vs_1": {str(p["workers"]): round(p["births_per_s"] / points[0]["births_per_s"], 2)
                             for p in points} if points[0]["births_per_s"] else None,
        },
        "optuna_journal_anchor_trials_per_s": OPTUNA_JOURNAL,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / f"storage-{backend}.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    (out / f"storage-{backend}.md").write_text(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    """The sweep as a Markdown table, with the Optuna journal anchor beside it."""
    m = report["machine"]
    lines = [
        f"# Coordination throughput: {report['backend']} store, P={report['population_size']}, "
        f"zero training time",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Python {m['python']}"
        + (f", store on {m['store_fs']}" if m.get("store_fs") else "") + f". {report['seconds_per_point']:g} s "
        f"per point after all workers started and seeding ended; {report['selection']} selection, "
        f"{report['weight_bytes']} B weights; measured {report['measured_at']}.",
        "",
        "| W | births/s | speedup vs W=1 | race losses per kill | machine CPU busy | workers' CPU ms per birth "
        "| peak RSS/worker MiB | audit | Optuna journal TPE / Random trials/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    speed = report["scaling"]["speedup_vs_1"] or {}
    for p in report["points"]:
        w = p["workers"]
        anchor = f"{OPTUNA_JOURNAL['tpe'].get(w, '—')} / {OPTUNA_JOURNAL['random'].get(w, '—')}"
        emu = f" (emulator {p['emulator_cpu_s_per_s']:.2f} CPU)" if p.get("emulator_cpu_s_per_s") is not None else ""
        lines.append(f"| {w} | {p['births_per_s']} | {speed.get(str(w), '—')} | {p['race_losses_per_kill']} | "
                     f"{p['machine_cpu_busy']:.0%}{emu} | {p['workers_cpu_ms_per_birth']} | "
                     f"{p['memory']['peak_rss_per_worker_mib_median']} | "
                     f"{'ok' if p.get('audit_ok') else p.get('audit_violations')} | {anchor} |")
    lines += ["", f"Peak: {report['scaling']['peak_births_per_s']} births/s at W={report['scaling']['peak_at_workers']}."]
    lines += [f"Not measured: W={p['workers']}: {p['skipped']}" for p in report.get("skipped", [])]
    lines.append("")
    return "\n".join(lines)


def plot(reports: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Births/s against W for each report, with the Optuna journal anchor (log-log)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in reports:
        ws = [p["workers"] for p in r["points"]]
        ax.plot(ws, [p["births_per_s"] for p in r["points"]], "o-", label=f"evo, {r['backend']} store")
    for name, series in OPTUNA_JOURNAL.items():
        ws = sorted(series)
        ax.plot(ws, [series[w] for w in ws], "x--", alpha=0.6, label=f"Optuna journal file ({name.upper()})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent worker processes W (2 CPU cores)")
    ax.set_ylabel("individuals (trials) per second")
    ax.set_title("Coordination throughput, zero training time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command line: a sweep on one backend, or ``--plot`` of saved reports."""
    p = argparse.ArgumentParser(prog="python -m bench.storage_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("local", "gcs"), default="local")
    p.add_argument("--workers", "-W", type=int, nargs="+", default=[1, 8, 32, 128, 250])
    p.add_argument("--seconds", type=float, default=45.0, help="measurement window per point")
    p.add_argument("--population", "-P", type=int, default=1000)
    p.add_argument("--weight-bytes", type=int, default=4096)
    p.add_argument("--selection", choices=("pairwise", "aging", "random"), default="pairwise")
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--plot", nargs="+", metavar="REPORT", help="plot saved reports to OUT_DIR/storage-throughput.png")
    a = p.parse_args(argv)
    stop_on_sigterm()
    if a.plot:
        reports = []
        for path in a.plot:
            try:
                reports.append(json.loads(Path(path).read_text()))
            except (OSError, ValueError) as exc:
                p.error(f"{path}: cannot read the report ({exc})")
        target = Path(a.out_dir) / "storage-throughput.png"
        plot(reports, target)
        print(f"wrote {target}")
        return 0
    try:
        report = run(a.backend, a.workers, a.seconds, a.out_dir, population=a.population,
                     weight_bytes=a.weight_bytes, selection=a.selection,
                     progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except ValueError as exc:
        p.error(str(exc))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""evo's coordination layer against Optuna's journal file storage, side by side in one run.

    python -m bench storage --compare optuna --mode full      # W = 1, 8, 32, 128, 250

For each worker count W, two points on the same machine within minutes of each other, in
alternating order (evo first at the 1st, 3rd, 5th W; Optuna first at the others), so that a
change of the machine's load does not favour one side:

- **evo**: W real ``evo worker`` processes on a local population directory, synthetic
  fitness with zero training time, P individuals pre-seeded
  (:func:`bench.storage_throughput.measure_point`): every cycle is pure coordination (list,
  select, read and verify the parent, mutate, publish, kill). Counted: births per second,
  from the ids' timestamps.
- **Optuna**: W real processes (``bench/_optuna_worker.py``), each running
  ``study.optimize`` against one ``JournalStorage(JournalFileBackend(FILE))`` (its default
  symlink lock) in a folder of the same file system, Random sampler, a zero-cost objective
  (one float). Counted: trials completed per second, from the journal's completion times.

Both: workers started over ``min(0.2 W, 60)`` seconds, counted over the same window
(``seconds``) after all of them completed work and a warm-up, with the machine's CPU use,
the workers' CPU per item and their peak RSS.

``run(workers, seconds, out_dir, name)`` writes ``out_dir/{name}.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._procs import MemoryStats, WorkerPool, available_memory_mib, machine_info, remove_tree
from bench.storage_throughput import (
    MIN_FREE_MIB, cpu_times, loadavg, proc_cpu_seconds, wait_until, measure_point,
)

STUDY = "bench"


def optuna_version() -> str:
    """The installed optuna's version; ImportError (naming the extra to install) without it."""
    try:
        import optuna
    except ImportError:
        raise ImportError("bench storage --compare optuna needs optuna: pip install -e '.[bench]'") from None
    return optuna.__version__


def completed_times(journal: Path) -> list[float]:
    """Unix times at which trials completed, sorted, from an Optuna journal file.

    A completion is a journal line that sets a trial's state to COMPLETE (it carries
    ``datetime_complete``); a torn last line (a worker stopped mid-append) is skipped.
    """
    from optuna.trial import TrialState

    done = TrialState.COMPLETE.value
    times = []
    with open(journal, "rb") as f:
        for line in f:
            if b"datetime_complete" not in line:
                continue
            try:
                op = json.loads(line)
            except ValueError:
                continue
            stamp = op.get("datetime_complete")
            if op.get("state") == done and isinstance(stamp, str):
                times.append(datetime.fromisoformat(stamp).timestamp())
    return sorted(times)


def measure_optuna_point(w: int, seconds: float, work: Path, *, warmup: float = 3.0,
                         progress=None) -> dict[str, Any]:
    """Trials per second of ``w`` Optuna worker processes sharing one journal file."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    say = progress or (lambda msg: None)
    work.mkdir(parents=True, exist_ok=True)
    journal = work / "journal.log"
    ready = work / "ready"
    ready.mkdir(exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name=STUDY, storage=JournalStorage(JournalFileBackend(str(journal))),
                        direction="minimize")
    pool = WorkerPool(str(journal), w, work / "logs", dict(os.environ),
                      command=lambda i: ["-m", "bench._optuna_worker", str(journal), STUDY, str(i),
                                         str(ready / f"{i}")])
    memory = MemoryStats()
    try:
        stagger = min(0.2 * w, 60.0)
        t0 = time.time()
        for i in range(w):
            while time.time() < t0 + stagger * i / w:
                time.sleep(0.01)
            if available_memory_mib() < MIN_FREE_MIB:
                raise MemoryError(f"W={w}: only {available_memory_mib():.0f} MiB left after starting {i} "
                                  f"Optuna workers; stopped to protect the machine's other users")
            pool.start(i)

        def all_ready() -> bool:
            if len(pool.running()) < w:
                exit_ = pool.unexpected_exits[0]
                raise RuntimeError(f"Optuna worker {exit_['slot']} exited with code {exit_['code']}: "
                                   f"{' | '.join(exit_['log_tail'])}")
            return sum(1 for _ in ready.iterdir()) >= w

        if not wait_until(all_ready, timeout=300 + 2 * w):
            raise RuntimeError(f"W={w}: Optuna workers did not all complete a trial within the time limit")
        time.sleep(warmup)
        busy0, total0 = cpu_times()
        pids = pool.pids()
        cpu0 = sum(proc_cpu_seconds(pid) for pid in pids)
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
        cpu1 = sum(proc_cpu_seconds(pid) for pid in pids)
        running_after = len(pool.running())
    finally:
        pool.stop()
    try:
        times = completed_times(journal)
        from bisect import bisect_left
        n = bisect_left(times, end) - bisect_left(times, start)
        point = {
            "workers": w, "window_s": round(end - start, 2), "trials": n,
            "trials_per_s": round(n / (end - start), 2),
            "trials_total": len(times),
            "machine_cpu_busy": round((busy1 - busy0) / max(1, total1 - total0), 3),
            "workers_cpu_s_per_s": round((cpu1 - cpu0) / (end - start), 3),
            "workers_cpu_ms_per_trial": round(1000 * (cpu1 - cpu0) / n, 2) if n else None,
            "loadavg_1min_before": load_before,
            "workers_running_after": running_after,
            "unexpected_worker_exits": len(pool.unexpected_exits),
            "memory": memory.summary(),
        }
        say(f"optuna W={w}: {point['trials_per_s']} trials/s, CPU busy {point['machine_cpu_busy']:.0%}, "
            f"peak RSS/worker {point['memory']['peak_rss_per_worker_mib_median']} MiB")
        return point
    finally:
        remove_tree(work)


def _measure(system: str, w: int, seconds: float, work: Path, population: int, warmup: float, audit: bool,
             progress) -> dict[str, Any]:
    try:
        if system == "evo":
            return measure_point("local", w, seconds, work / f"evo-w{w}", population=population, warmup=warmup,
                                 audit=audit, progress=progress)
        return measure_optuna_point(w, seconds, work / f"optuna-w{w}", warmup=warmup, progress=progress)
    except MemoryError as exc:
        if progress:
            progress(f"skipped: {exc}")
        return {"workers": w, "skipped": str(exc)}


def run(workers: list[int], seconds: float, out_dir: str | os.PathLike[str], *, name: str = "storage-compare-optuna",
        population: int = 1000, warmup: float = 3.0, audit: bool = True, progress=None) -> dict[str, Any]:
    """Measure evo and Optuna at each W in ``workers`` (see the module docstring), each
    counted for ``seconds`` after ``warmup`` seconds; ``audit``: run ``evo audit`` on each
    evo point's store afterwards (its result is in the point).

    Writes ``out_dir/{name}.json``, ``.md`` and ``.png``; returns the report:
    ``{"points": [{"workers", "order", "evo": {...}, "optuna": {...}, "ratio"}], "targets": {...}, ...}``.
    """
    if not workers or any(w < 1 for w in workers) or seconds <= 0:
        raise ValueError("workers must be a non-empty list of counts >= 1 and seconds > 0")
    version = optuna_version()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    started = time.time()
    points = []
    with tempfile.TemporaryDirectory(prefix="evo-compare-") as tmp:
        for k, w in enumerate(workers):
            order = ("evo", "optuna") if k % 2 == 0 else ("optuna", "evo")
            got = {system: _measure(system, w, seconds, Path(tmp), population, warmup, audit, progress)
                   for system in order}
            evo_rate, opt_rate = got["evo"].get("births_per_s"), got["optuna"].get("trials_per_s")
            points.append({"workers": w, "order": list(order), "evo": got["evo"], "optuna": got["optuna"],
                           "ratio": round(evo_rate / opt_rate, 2) if evo_rate and opt_rate else None})
    report = {
        "kind": "storage_compare", "against": "optuna", "optuna_version": version,
        "population_size": population, "seconds_per_point": seconds, "warmup_s": warmup,
        "evo_setup": "evo worker processes, local directory, synthetic fitness, zero training time, "
                     "pairwise selection, 4096 B weights, P pre-seeded",
        "optuna_setup": "study.optimize per process, JournalStorage(JournalFileBackend) with its default "
                        "symlink lock, RandomSampler, objective (x - 2)^2 over one float",
        "machine": machine_info(tempfile.gettempdir()),
        "loadavg_at_start": [round(x, 2) for x in load_start],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "duration_s": round(time.time() - started, 1),
        "points": points,
        "targets": targets(points),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }
    (out / f"{name}.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    (out / f"{name}.md").write_text(markdown(report, f"{name}.png"))
    plot(report, out / f"{name}.png")
    return report


def targets(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's two targets, from the measured points: evo >= Optuna at every W >= 8, and
    evo never below 0.8x its own W=8 figure up to the largest W (None where not measured)."""
    def rate(p: dict[str, Any], system: str, key: str) -> float | None:
        return p[system].get(key)

    big = [p for p in points if p["workers"] >= 8]
    pairs = [(rate(p, "evo", "births_per_s"), rate(p, "optuna", "trials_per_s")) for p in big]
    beats = all(e is not None and o is not None and e >= o for e, o in pairs) if big else None
    w8 = next((rate(p, "evo", "births_per_s") for p in points if p["workers"] == 8), None)
    evo_big = [rate(p, "evo", "births_per_s") for p in big]
    floor = round(min(e for e in evo_big if e is not None) / w8, 2) if w8 and any(evo_big) else None
    return {"evo_at_least_optuna_for_w_ge_8": beats, "evo_min_over_its_w8": floor,
            "evo_never_below_0.8x_w8": floor >= 0.8 if floor is not None else None}


def markdown(report: dict[str, Any], png: str) -> str:
    """The comparison as a Markdown table: both rates per W, their ratio, CPU and memory."""
    m, t = report["machine"], report["targets"]
    lines = [
        f"# evo's coordination layer against Optuna's journal file, side by side (P={report['population_size']}, "
        "zero-cost work)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Python {m['python']}, "
        f"files on {m.get('store_fs', '?')}; optuna {report['optuna_version']}. Measured {report['measured_at']} "
        f"in one run of {report['duration_s']:.0f} s; load average (1, 5, 15 min) "
        f"{', '.join(map(str, report['loadavg_at_start']))} at the start, "
        f"{', '.join(map(str, report['loadavg_at_end']))} at the end.",
        "",
        f"- evo: {report['evo_setup']}.",
        f"- Optuna: {report['optuna_setup']}.",
        f"- Each: {report['seconds_per_point']:g} s counted after all W workers had completed work and "
        f"{report['warmup_s']:g} s more, the two systems in alternating order per W.",
        "",
        "| W | evo births/s | Optuna trials/s | evo / Optuna | evo CPU ms per birth | Optuna CPU ms per trial "
        "| machine CPU busy (evo / Optuna) | peak RSS per worker MiB (evo / Optuna) | load before (evo / Optuna) "
        "| first |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["points"]:
        e, o = p["evo"], p["optuna"]
        def cell(d: dict[str, Any], key: str, fmt: str = "{}") -> str:
            if "skipped" in d:
                return "skipped"
            v = d.get(key)
            return "—" if v is None else fmt.format(v)
        def rss(d: dict[str, Any]) -> str:
            return "—" if "skipped" in d else str(d["memory"]["peak_rss_per_worker_mib_median"])
        lines.append(
            f"| {p['workers']} | **{cell(e, 'births_per_s')}** | {cell(o, 'trials_per_s')} | "
            f"{p['ratio'] if p['ratio'] is not None else '—'} | {cell(e, 'workers_cpu_ms_per_birth')} | "
            f"{cell(o, 'workers_cpu_ms_per_trial')} | {cell(e, 'machine_cpu_busy', '{:.0%}')} / "
            f"{cell(o, 'machine_cpu_busy', '{:.0%}')} | {rss(e)} / {rss(o)} | "
            f"{cell(e, 'loadavg_1min_before')} / {cell(o, 'loadavg_1min_before')} | {p['order'][0]} |")
    lines += [
        "",
        f"Targets: evo >= Optuna at every W >= 8: **{_yes(t['evo_at_least_optuna_for_w_ge_8'])}**; "
        f"evo's lowest W >= 8 figure is {t['evo_min_over_its_w8']}x its W=8 figure "
        f"(at least 0.8x: **{_yes(t['evo_never_below_0.8x_w8'])}**).",
        "",
        f"![evo and Optuna against W]({png})",
        "",
    ]
    for p in report["points"]:
        for system in ("evo", "optuna"):
            if "skipped" in p[system]:
                lines.append(f"Not measured: {system} at W={p['workers']}: {p[system]['skipped']}")
            elif system == "evo" and p["evo"].get("audit_ok") is False:
                lines.append(f"evo at W={p['workers']}: audit found {p['evo'].get('audit_violations')}")
    return "\n".join(lines) + "\n"


def _yes(value: bool | None) -> str:
    return "not measured" if value is None else ("yes" if value else "no")


def plot(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Both curves against W (log x): evo births/s and Optuna trials/s."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for system, key, style, label in (("evo", "births_per_s", "o-", "evo, local directory (births/s)"),
                                      ("optuna", "trials_per_s", "s--",
                                       f"Optuna {report['optuna_version']} journal file, Random (trials/s)")):
        got = [(p["workers"], p[system][key]) for p in report["points"] if p[system].get(key) is not None]
        if got:
            ax.plot([w for w, _ in got], [r for _, r in got], style, label=label)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"concurrent worker processes W ({report['machine']['cores']} CPU cores)")
    ax.set_ylabel("completed individuals (trials) per second")
    ax.set_title(f"Zero-cost work, side by side, {report['measured_at'][:10]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover - the suite's entry point is python -m bench storage --compare
    sys.exit("run it as: python -m bench storage --compare optuna [--mode full]")

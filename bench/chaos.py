"""Chaos harness: W real workers on one population, SIGKILLed at random moments and restarted.

    python -m bench.chaos --backend local --workers 250 -P 1000 --duration 300 \
        --train-seconds 2 --kill-interval 1 --stagger 60 --out bench/results/chaos-local-250w

What it does: ``evo init`` a synthetic-fitness population (the real worker, store, selection
and mutations; training replaced by a sleep), start W ``evo worker`` processes (staggered),
then for ``duration`` seconds SIGKILL a random worker at exponentially distributed moments
(mean ``kill_interval``) and restart its slot ``restart_delay`` seconds later. Workers append
their publishes and kills to an event log (``evo worker --event-log``). Afterwards: stop everything,
run ``evo check --json --grace 0`` and ``evo audit --json --events``, repair the crash debris
with ``evo check --repair`` and check again. The report (JSON, and a Markdown summary) has
the workers, duration, kills, individuals born and killed, race losses, torn individuals,
orphans, lost individuals, double kills, population size min/max over time, throughput
around the kills and peak memory per worker.

The backend is a local directory or a fake-gcs-server started here (``--backend gcs``).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from bisect import bisect_left, bisect_right
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._procs import (  # noqa: E402
    MemoryStats, WorkerPool, births_from_listing, evo, machine_info, preseed, remove_tree, stop_on_sigterm,
)
from storage import open_store  # noqa: E402


@dataclass(frozen=True)
class ChaosSettings:
    """One chaos experiment."""

    backend: str = "local"            # local | gcs
    workers: int = 16
    population: int = 100
    duration: float = 60.0            # seconds of chaos after the last worker was started
    min_births: int = 0               # ...and go on until this many were born past P (a loaded machine)
    max_duration: float = 600.0       # but never longer than this (seconds of chaos)
    train_seconds: float = 0.5        # simulated training time per child
    weight_bytes: int = 4096          # size of each individual's safetensors file
    selection: str = "pairwise"
    search_space: str = "large_scale"   # nasbench201 or nasnet for the learned strategies (rl, reinforce)
    kill_interval: float = 1.0        # mean seconds between SIGKILLs (exponential)
    restart_delay: float = 0.5        # a killed slot gets a new process this much later
    stagger: float = 5.0              # workers are started evenly over this many seconds
    sample_interval: float = 1.0      # seconds between population samples
    memory_interval: float = 10.0     # seconds between memory samples (PSS every 6th)
    worker_nice: int = 0              # niceness of the workers: > 0 keeps the harness on time under load
    preseed: bool = False             # publish the P initial individuals through the store API first
    rollup: str = "30,10,100"         # workers' history roll-ups: min age s, interval s, records per segment
    seed: int = 0

    def check(self) -> None:
        """ValueError naming the first bad setting."""
        if self.backend not in ("local", "gcs"):
            raise ValueError(f"backend must be local or gcs, not {self.backend!r}")
        if self.workers < 1 or self.population < 2:
            raise ValueError("need at least 1 worker and a population of at least 2")
        for name in ("duration", "max_duration", "train_seconds", "kill_interval", "restart_delay", "stagger",
                     "sample_interval", "memory_interval"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if self.kill_interval <= 0:
            raise ValueError("kill_interval must be > 0")


def throughput_around_kills(births: list[float], kills: list[float], start: float, end: float,
                            window: float = 5.0) -> dict[str, Any]:
    """Births per second in the ``window`` after each kill vs. the whole interval [start, end]."""
    overall = (bisect_left(births, end) - bisect_left(births, start)) / (end - start) if end > start else 0.0
    rates = [(bisect_left(births, k + window) - bisect_right(births, k)) / window
             for k in kills if start <= k and k + window <= end]
    inside = births[bisect_left(births, start):bisect_left(births, end)]
    gaps = [b - a for a, b in zip(inside, inside[1:])]
    return {
        "births_per_s": round(overall, 3),
        "window_s": window, "kills_measured": len(rates),
        "births_per_s_after_kill_min": round(min(rates), 3) if rates else None,
        "births_per_s_after_kill_median": round(statistics.median(rates), 3) if rates else None,
        "kill_windows_without_births": sum(1 for r in rates if r == 0),
        "max_gap_between_births_s": round(max(gaps), 3) if gaps else None,
    }


def run_chaos(settings: ChaosSettings, work_dir: str | os.PathLike[str] | None = None,
              keep_store: bool = False, progress=None) -> dict[str, Any]:
    """Run one chaos experiment and return its report (see the module docstring)."""
    settings.check()
    say = progress or (lambda msg: None)
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="evo-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    emulator = None
    if settings.backend == "gcs":
        from bench._emulator import emulator_env, make_bucket, start_emulator
        emulator = start_emulator(work / "emulator.log")
        env.update(emulator_env(emulator.url))
        os.environ.update(emulator_env(emulator.url))   # for the listings done here
        bucket = f"evo-chaos-{uuid.uuid4().hex[:10]}"
        make_bucket(emulator.url, bucket)
        url = f"gs://{bucket}/pop"
    else:
        url = str(work / "pop")
    events_path = work / "events.jsonl"
    try:
        return _run(settings, url, work, env, events_path, say)
    finally:
        if emulator is not None:
            emulator.stop()
        if not keep_store and settings.backend == "local":
            remove_tree(work / "pop")


def _run(s: ChaosSettings, url: str, work: Path, env: dict[str, str], events_path: Path, say) -> dict[str, Any]:
    init = evo(["init", url, "--dataset", "synthetic", "-P", str(s.population), "--selection", s.selection,
                "--search-space", s.search_space,
                "--synthetic-train-seconds", str(s.train_seconds),
                "--synthetic-weight-bytes", str(s.weight_bytes), "--seed", str(s.seed)], env)
    if init.returncode != 0:
        raise RuntimeError(f"evo init failed: {init.stderr.strip()}")
    store = open_store(url)
    preseed_s = preseed(url) if s.preseed else None
    pool = WorkerPool(url, s.workers, work / "logs", env,
                      worker_args=("--event-log", str(events_path), "--rollup", s.rollup),
                      nice=s.worker_nice)
    rng = np.random.default_rng(s.seed)
    memory = MemoryStats()
    kills: list[dict[str, Any]] = []
    restarts: list[tuple[float, int]] = []
    samples: list[tuple[float, int, int]] = []      # (time, listed alive, running workers)

    t_start = time.time()
    chaos_start = t_start + s.stagger
    t_end = chaos_start + s.duration
    starts = [t_start + s.stagger * i / s.workers for i in range(s.workers)]
    next_start = 0
    next_kill = chaos_start + rng.exponential(s.kill_interval)
    next_sample = t_start
    next_memory = t_start + min(5.0, s.memory_interval)
    next_say = t_start
    last_loop, max_lag = t_start, 0.0
    say(f"{s.workers} workers on {url}, chaos for {s.duration:g} s after a {s.stagger:g} s staggered start")
    births_past_p = 0

    def chaos_goes_on(now: float) -> bool:
        if now < t_end:
            return True
        return births_past_p < s.min_births and now < chaos_start + s.max_duration

    try:
        while chaos_goes_on(now := time.time()):
            max_lag = max(max_lag, now - last_loop)
            last_loop = now
            while next_start < s.workers and starts[next_start] <= now:
                pool.start(next_start)
                next_start += 1
            due = [r for r in restarts if r[0] <= now]
            for r in due:
                restarts.remove(r)
                pool.start(r[1])
            running = pool.running()
            for ex in pool.unexpected_exits:
                if not ex.get("restarted"):
                    ex["restarted"] = True
                    restarts.append((now + s.restart_delay, ex["slot"]))
            if now >= next_kill:
                # scheduled from now: a late loop makes no burst of catch-up kills
                next_kill = now + rng.exponential(s.kill_interval)
                if running:
                    victim = running[int(rng.integers(len(running)))]
                    kills.append(pool.sigkill(victim.index))
                    restarts.append((now + s.restart_delay, victim.index))
            if now >= next_sample:
                next_sample += s.sample_interval
                samples.append((now, len(store.population.list_alive()), len(running)))
                if s.min_births and now >= t_end:
                    births_past_p = samples[-1][1] + store.history.count_history() - s.population
            if now >= next_memory:
                next_memory += s.memory_interval
                memory.sample(pool.pids(), pss=memory.samples % 6 == 0)
            if now >= next_say:
                next_say += 30
                alive = samples[-1][1] if samples else 0
                say(f"[{now - t_start:6.0f} s] running {len(running)}, alive {alive}, SIGKILLs {len(kills)}")
            time.sleep(0.02)
        memory.sample(pool.pids())
    finally:
        forced = pool.stop()
    t_stopped = time.time()
    mem = memory.summary()
    say(f"stopped after {t_stopped - t_start:.0f} s; {len(kills)} SIGKILLs; checking the store")

    rollups = store.history.history_layout()   # what the workers' roll-ups made during the chaos
    check_before = _json_of(evo(["check", url, "--json", "--grace", "0"], env))
    audit_run = evo(["audit", url, "--json", "--workers", str(s.workers), "--events", str(events_path)], env)
    audit = _json_of(audit_run)
    repair = _json_of(evo(["check", url, "--json", "--grace", "0", "--repair"], env))
    check_after = _json_of(evo(["check", url, "--json", "--grace", "0"], env))

    births = births_from_listing(url)
    seeding_end = audit.get("seeding_end") or chaos_start
    kill_times = [k["time"] for k in kills]
    chaos_end = max(t_end, last_loop)   # later than planned when min_births extended it
    steady = throughput_around_kills(births, kill_times, max(seeding_end, chaos_start), chaos_end)
    heartbeats = {b["info"].get("pid"): b["info"].get("state") for b in store.runinfo.list_workers()
                  if isinstance(b.get("info"), dict)}
    killed_in_state: dict[str, int] = {}
    for k in kills:
        state = heartbeats.get(k["pid"], "unknown")
        killed_in_state[state] = killed_in_state.get(state, 0) + 1
    after_seed = [n for t, n, _ in samples if t >= seeding_end]
    events = audit.get("events") or {}
    P, W = s.population, s.workers
    violations = list(audit.get("violations", []))
    for kind in ("torn", "corrupt"):
        if check_before.get(kind):
            violations.append(kind)
    if not check_after.get("ok"):
        violations.append("not_clean_after_repair")
    policy = _policy_audit(url)
    if policy is not None and (policy["problems"] or policy["version"] is None):
        violations.append("policy")
    if rollups.get("broken_segments"):
        violations.append("broken_segments")
    if pool.unexpected_exits:
        violations.append("unexpected_worker_exits")
    return {
        "kind": "chaos",
        "ok": not violations,
        "violations": violations,
        "settings": asdict(s),
        "machine": machine_info(url if s.backend == "local" else None),
        "backend": s.backend,
        "workers": W,
        "population_size": P,
        "duration_s": round(t_end - chaos_start, 1),
        "wall_s": round(t_stopped - t_start, 1),
        "kills": len(kills),
        "kills_per_s": round(len(kills) / (last_loop - chaos_start), 3) if last_loop > chaos_start else None,
        "harness_max_loop_lag_s": round(max_lag, 3),
        "kills_by_last_heartbeat_state": killed_in_state,
        "worker_processes_started": sum(slot.generation for slot in pool.slots),
        "stopped_with_sigkill_at_end": forced,
        "unexpected_worker_exits": pool.unexpected_exits[:20],
        "born": audit.get("born"),
        "killed": audit.get("dead"),
        "alive_at_end": audit.get("alive"),
        "race_losses": events.get("race_losses"),
        "torn": check_before.get("torn"),
        "corrupt": check_before.get("corrupt"),
        "orphans": check_before.get("orphans"),
        "zombies": check_before.get("zombies"),
        "lost": events.get("lost"),
        "double_kills": events.get("double_kills"),
        "phantom_kills": events.get("phantom_kills"),
        "unlogged_births": events.get("unlogged_births"),
        "missing_parents": audit.get("missing_parents"),
        "rollups": rollups,
        "preseed_s": round(preseed_s, 1) if preseed_s is not None else None,
        "seeding_s": round(audit["seeding_end"] - audit["first_birth"], 1) if audit.get("seeding_end") else None,
        "population": {
            "bounds": [P - W, P + W],
            "reconstructed_min": audit.get("population_min"),
            "reconstructed_max": audit.get("population_max"),
            "sampled_min": min(after_seed) if after_seed else None,
            "sampled_max": max(after_seed) if after_seed else None,
            "final": audit.get("population_final"),
            "excess_at_end": (audit.get("population_final") or 0) - P,
        },
        "throughput": steady,
        "policy": policy,
        "memory": mem,
        "check_before_repair": check_before,
        "repaired": repair.get("repaired"),
        "check_after_repair_ok": check_after.get("ok"),
        "audit": {k: v for k, v in audit.items() if k != "births_timeline"},
        "births_per_10s": audit.get("births_timeline"),
        "population_samples": [[round(t - t_start, 1), n, r] for t, n, r in samples],
        "kill_log": [{**k, "time": round(k["time"] - t_start, 3)} for k in kills],
        "started_at": t_start,
    }


def _policy_audit(url: str) -> dict[str, Any] | None:
    """A learned strategy's policy checked against the population (see evo.strategies.policy_report)."""
    from evo.config import RunConfig
    from evo.strategies.policy_report import audit_policy

    store = open_store(url)
    return audit_policy(store, RunConfig.from_json(store.runinfo.read_config()))


def _json_of(proc) -> dict[str, Any]:
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(f"{' '.join(map(str, proc.args[1:4]))} gave no JSON (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-300:]}") from None
    return out


def markdown(report: dict[str, Any]) -> str:
    """A short human summary of a chaos report."""
    s, pop, thr, mem = report["settings"], report["population"], report["throughput"], report["memory"]
    m = report["machine"]
    lines = [
        f"# Chaos: {report['workers']} workers, {report['backend']} store, P={report['population_size']}",
        "",
        f"**{'PASS' if report['ok'] else 'FAIL: ' + ', '.join(report['violations'])}** — "
        f"{report['kills']} SIGKILLs in {report['duration_s']:g} s of chaos "
        f"(mean interval {s['kill_interval']:g} s, restart after {s['restart_delay']:g} s); "
        f"synthetic training {s['train_seconds']:g} s per child, {s['weight_bytes']} B weights, "
        f"{s['selection']} selection.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Python {m['python']}"
        + (f", store on {m['store_fs']}" if m.get("store_fs") else "") + ".",
        "",
        "| what | value |",
        "|---|---|",
        f"| individuals born / killed / alive at end | {report['born']} / {report['killed']} / {report['alive_at_end']} |",
        f"| torn / corrupt | {report['torn']} / {report['corrupt']} |",
        f"| lost (published, then gone without a trace) | {report['lost']} |",
        f"| double kills / phantom kills | {report['double_kills']} / {report['phantom_kills']} |",
        f"| parents that never existed | {report['missing_parents']} |",
        f"| history roll-ups by the workers: segments / records in them / records left in history/ "
        f"(of them also in a segment) | {_rollup_cell(report.get('rollups'))} |",
        f"| kill race losses (another worker killed the victim first) | {report['race_losses']} |",
        f"| crash debris before repair: orphans / zombies | {report['orphans']} / {report['zombies']} |",
        f"| clean after `evo check --repair` | {report['check_after_repair_ok']} |",
        f"| births without an event line (worker died before logging) | {report['unlogged_births']} |",
        f"| seeding (first birth to P alive) | {report['seeding_s']} s"
        + (" (pre-seeded through the store API)" if report.get("preseed_s") is not None else " (by the workers)")
        + " |",
        f"| population after seeding, reconstructed min / max (bounds {pop['bounds']}) | "
        f"{pop['reconstructed_min']} / {pop['reconstructed_max']} |",
        f"| population after seeding, sampled each {s['sample_interval']:g} s min / max | "
        f"{pop['sampled_min']} / {pop['sampled_max']} |",
        f"| population at the end (excess over P) | {pop['final']} ({pop['excess_at_end']:+d}) |",
        f"| births/s during chaos | {thr['births_per_s']} |",
        f"| births/s in the {thr['window_s']:g} s after a SIGKILL: min / median | "
        f"{thr['births_per_s_after_kill_min']} / {thr['births_per_s_after_kill_median']} |",
        f"| longest time without a birth during chaos | {thr['max_gap_between_births_s']} s |",
        f"| peak RSS per worker: median / max | {mem['peak_rss_per_worker_mib_median']} / "
        f"{mem['peak_rss_per_worker_mib_max']} MiB |",
        f"| all workers together: max RSS / max PSS | {mem['max_total_rss_mib']} / {mem['max_total_pss_mib']} MiB |",
        f"| worker processes started (incl. restarts) | {report['worker_processes_started']} |",
        f"| harness: longest loop iteration (kill timing error) | {report['harness_max_loop_lag_s']} s |",
        f"| SIGKILLed workers by last heartbeat state | {report['kills_by_last_heartbeat_state']} |",
        "",
    ]
    policy = report.get("policy")
    if policy:
        lines[-1:-1] = [
            f"| {s['search_space']} space, {policy['strategy']} policy: newest version / versions kept | "
            f"{policy['version']} / {policy['versions_kept']} |",
            f"| controller children / learned from in the chain / waiting in the head's intake / lost with "
            f"their worker | {policy['controller_children']} / {policy['updates']} / {policy.get('waiting', 0)} / "
            f"{policy['updates_missing']} |",
            f"| policy chain problems (a child learned from twice, a broken chain, unknown children) | "
            f"{len(policy['problems'])} |",
        ]
    for ex in report.get("unexpected_worker_exits") or []:
        lines.append(f"Worker slot {ex['slot']} (pid {ex['pid']}) exited on its own with code {ex['code']}; "
                     "its log ended:")
        lines += ["", "```", *ex.get("log_tail", []), "```", ""]
    return "\n".join(lines)


def _rollup_cell(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    broken = f", {r['broken_segments']} BROKEN" if r.get("broken_segments") else ""
    return f"{r['segments']} / {r['in_segments']} / {r['files']} ({r['files_also_in_segments']}){broken}"


def main(argv: list[str] | None = None) -> int:
    """Command line: run one chaos experiment, write OUT.json and OUT.md."""
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    d = ChaosSettings()
    p.add_argument("--backend", choices=("local", "gcs"), default=d.backend)
    p.add_argument("--workers", "-W", type=int, default=d.workers)
    p.add_argument("--population", "-P", type=int, default=d.population)
    p.add_argument("--duration", type=float, default=d.duration, help="seconds of chaos after all workers started")
    p.add_argument("--min-births", type=int, default=d.min_births,
                   help="go on after --duration until this many individuals were born past P (a loaded machine)")
    p.add_argument("--max-duration", type=float, default=d.max_duration,
                   help="seconds of chaos at the most, --min-births or not")
    p.add_argument("--train-seconds", type=float, default=d.train_seconds)
    p.add_argument("--weight-bytes", type=int, default=d.weight_bytes)
    p.add_argument("--selection", choices=("pairwise", "aging", "random", "rl", "reinforce"), default=d.selection)
    p.add_argument("--search-space", choices=("large_scale", "nasbench201", "nasnet"), default=d.search_space)
    p.add_argument("--kill-interval", type=float, default=d.kill_interval, help="mean seconds between SIGKILLs")
    p.add_argument("--restart-delay", type=float, default=d.restart_delay)
    p.add_argument("--stagger", type=float, default=d.stagger, help="start the workers over this many seconds")
    p.add_argument("--worker-nice", type=int, default=d.worker_nice,
                   help="run the workers at this niceness (e.g. 10 with hundreds of workers on few cores)")
    p.add_argument("--preseed", action="store_true",
                   help="publish the P initial individuals through the store API before starting the workers")
    p.add_argument("--rollup", default=d.rollup, metavar="AGE,INTERVAL,RECORDS",
                   help="the workers' history roll-ups: records older than AGE s, looked for every INTERVAL s, "
                        f"RECORDS per segment (default {d.rollup})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--work-dir", help="where the store (local), logs and event log go (default: a temp dir)")
    p.add_argument("--keep-store", action="store_true", help="do not delete the local store afterwards")
    p.add_argument("--out", required=True, metavar="PREFIX", help="write PREFIX.json and PREFIX.md")
    a = p.parse_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)   # `kill -USR1 PID` prints every thread's stack
    stop_on_sigterm()
    settings = ChaosSettings(backend=a.backend, workers=a.workers, population=a.population, duration=a.duration,
                             min_births=a.min_births, max_duration=a.max_duration,
                             train_seconds=a.train_seconds, weight_bytes=a.weight_bytes, selection=a.selection,
                             search_space=a.search_space, kill_interval=a.kill_interval,
                             restart_delay=a.restart_delay, stagger=a.stagger,
                             worker_nice=a.worker_nice, preseed=a.preseed, rollup=a.rollup, seed=a.seed)
    try:
        settings.check()
    except ValueError as exc:
        p.error(str(exc))
    report = run_chaos(settings, a.work_dir, keep_store=a.keep_store,
                       progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench report``: how long ``evo report`` takes on a large run, and how big its file is.

The run is made by a generator, not by workers: :func:`make_population` writes every
individual through the store's public API (``publish`` then ``kill``, as a worker does), with
real large-scale DNAs mutated by the registry's mutations, aging selection, several worker
ids with heartbeats (one of them lost) and a store clock that advances a few seconds per birth,
so a 20,000-individual run with the shape of a real one exists in a minute or two. Then the
real ``evo report`` command runs in a fresh process (cold: nothing imported or cached) a few
times; the median wall time, the peak RSS and the file's size are reported, and one more
cold run is timed by phase (reading the store, the sections, the page, writing), so the
store's reading API's share is seen apart from the report's own. ``--population URL`` times
an existing run instead of generating one.

The issue's target: 20,000 individuals in under 10 s, a file under 10 MB (``full`` mode).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._report import markdown_table, say, write_report

MODES = {"small": {"individuals": 600, "population": 50, "workers": 4, "reps": 1},
         "full": {"individuals": 20_000, "population": 1000, "workers": 8, "reps": 3}}
SECONDS_PER_BIRTH = 2.0        # the generator's store clock advances this much per birth
TARGET_SECONDS, TARGET_MB = 10.0, 10.0


def placeholder_weights() -> bytes:
    """A tiny safetensors file standing in for an individual's weights (what the report reads
    is the records; the weights only have to be there)."""
    from safetensors.numpy import save

    return save({"classifier.bias": np.zeros(10, dtype=np.float32)})


def make_population(url: str, individuals: int, population: int, workers: int, *, seed: int = 0,
                    policy: bool = False, start: float | None = None,
                    progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Write a finished aging-evolution run of ``individuals`` (the first ``population`` of them
    the initial seeds) to the empty store at ``url`` through the store's publish/kill API, from
    ``workers`` worker ids; every worker leaves a heartbeat (the last one's says it was
    training and is old: a lost worker). ``policy``: children also carry ``metrics.policy`` and
    ``metrics.policy_version`` (as a learned strategy's do). Fitness is a noisy function of the
    parent's, so the run improves over time. Returns counts and the clock's span."""
    import storage
    from evo.config import RunConfig
    from evo.spaces import for_config
    from evo.strategies.evolution import AgingSettings

    config = RunConfig(dataset="synthetic", population_size=population, selection="aging",
                       plugins={"aging": AgingSettings(tournament_size=min(5, population))}, seed=seed)
    start = time.time() - individuals * SECONDS_PER_BIRTH - 600 if start is None else start
    now = [start]
    store = storage.PopulationStore(storage.open_backend(url), clock=lambda: now[0])
    if not store.runinfo.init_config(config.to_json()):
        raise ValueError(f"{url} already holds a population")
    space = for_config(config)
    rng = np.random.default_rng(seed)
    weights = placeholder_weights()
    names = [f"gen-{w:03d}" for w in range(workers)]
    alive: list[tuple[Any, Any, float]] = []    # (info, DNA, fitness), oldest first
    made = {w: 0 for w in names}
    t0 = time.perf_counter()
    for i in range(individuals):
        now[0] = start + i * SECONDS_PER_BIRTH + float(rng.uniform(0, 1))
        worker = names[i % workers]
        metrics: dict[str, Any] = {"params": int(rng.integers(1_000, 2_000_000))}
        if i < population:
            child, parent_id, fitness = space.initial(rng), None, float(rng.uniform(0.05, 0.15))
        else:
            sample = [alive[j] for j in rng.choice(len(alive), size=config.settings_of("aging").tournament_size, replace=False)]
            parent = max(sample, key=lambda a: a[2])
            child = space.mutate(parent[1], rng)
            parent_id = parent[0].id
            gain = float(rng.normal(0.004, 0.02)) * (1.0 - parent[2])
            fitness = float(np.clip(parent[2] + gain, 0.0, 0.999))
            if policy:
                metrics.update(policy="reinforce", policy_version=(i - population) // 200)
        info = store.population.publish(child.to_dict(), weights, parent=parent_id, mutation=child.mutation,
                             fitness=fitness, worker=worker, metrics=metrics)
        made[worker] += 1
        alive.append((info, child, fitness))
        if len(alive) > population:
            store.population.kill(alive.pop(0)[0], worker=worker, reason="aging")
        if (i + 1) % 5000 == 0:
            progress(f"generated {i + 1}/{individuals} individuals ({time.perf_counter() - t0:.0f}s)")
    for k, worker in enumerate(names):
        lost = k == workers - 1 and workers > 1
        now[0] = start + (individuals * SECONDS_PER_BIRTH) * (0.6 if lost else 1.0)
        store.runinfo.heartbeat(worker, {"worker": worker, "host": "generator", "pid": 1000 + k,
                                 "state": "training" if lost else "stopped", "started": start,
                                 "interval": 10, "individuals": made[worker], "kills": 0, "race_losses": k % 3,
                                 "failures": k % 2})
    return {"individuals": individuals, "alive": len(alive), "dead": individuals - len(alive),
            "workers": workers, "span_s": now[0] - start, "generate_s": time.perf_counter() - t0}


def _evo() -> str:
    exe = Path(sys.executable).with_name("evo")
    return str(exe) if exe.exists() else shutil.which("evo") or "evo"


def time_report(url: str, out: str, top: int = 5) -> dict[str, Any]:
    """One cold ``evo report URL -o OUT --top TOP`` in a fresh process: wall seconds, its peak
    RSS (MB) and the file's size (MB). ValueError (with its message) if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t = time.perf_counter()
    proc = subprocess.Popen([_evo(), "report", url, "-o", out, "--top", str(top)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    if proc.returncode != 0:
        raise ValueError(f"evo report failed ({proc.returncode}): {stderr.strip()[-500:]}")
    return {"seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "file_mb": os.path.getsize(out) / 1e6,
            "line": stdout.strip()}


# Run in a fresh process: the report's phases, timed apart (reading the store through its
# reading API, the sections' data, the figures and page, writing the file).
PHASES = """
import json, sys, time
t0 = time.perf_counter()
from launch.views.report_html import architecture_figures, render
from launch.commands.report import read_report, write_atomically
t1 = time.perf_counter(); data = read_report(sys.argv[1], 5, spinner=False)
t2 = time.perf_counter(); page = render(data, architecture_figures(data["top"], 5))
t3 = time.perf_counter(); write_atomically(sys.argv[2], page)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "read_store_and_sections": t2 - t1, "page": t3 - t2, "write": t4 - t3}))
"""


def time_phases(url: str, out: str) -> dict[str, float]:
    """Seconds of each phase of one report, in a fresh process (see PHASES)."""
    proc = subprocess.run([sys.executable, "-c", PHASES, url, out], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    if proc.returncode != 0:
        raise ValueError(f"timing the report's phases failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def run(mode: str, out_dir: str, *, individuals: int | None = None, store_dir: str | None = None,
        reps: int | None = None, population: str | None = None) -> dict[str, Any]:
    """Generate the run (``MODES[mode]``, or ``individuals``; or time the existing
    ``population`` instead), time ``evo report`` on it ``reps`` times and its phases once,
    write ``report-MODE-cpu.{json,md}``; returns the JSON document."""
    m = dict(MODES[mode])
    reps = reps or m["reps"]
    with tempfile.TemporaryDirectory(prefix="evo-bench-report-", dir=store_dir) as tmp:
        if population:
            url = population
            import storage

            n = len(storage.open_store(url).history.births())
            made = {"individuals": n, "given": url}
            say(f"timing evo report on {url} ({n} individuals; {reps} cold runs)")
        else:
            n = individuals or m["individuals"]
            url = os.path.join(tmp, "pop")
            say(f"generating {n} individuals (P={m['population']}, {m['workers']} worker ids) through the store's API")
            made = make_population(url, n, m["population"], m["workers"], progress=say)
            # as the workers of a run this size would have: the dead in history segments
            import storage

            rolled = storage.open_store(url).history.roll_up(min_age=0)
            made["rolled_up"] = {"segments": rolled.segments, "records": rolled.records}
            say(f"history rolled up: {rolled.segments} segments, {rolled.records} records")
            say(f"generated in {made['generate_s']:.0f}s; timing evo report ({reps} cold runs)")
        runs = []
        for r in range(reps):
            runs.append(time_report(url, os.path.join(tmp, "report.html")))
            say(f"run {r + 1}: {runs[-1]['seconds']:.2f}s, {runs[-1]['file_mb']:.2f} MB, "
                f"peak RSS {runs[-1]['peak_rss_mb']:.0f} MB")
        phases = time_phases(url, os.path.join(tmp, "phases.html"))
        say("phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in phases.items()))
        load = os.getloadavg()
    med = statistics.median(x["seconds"] for x in runs)
    size = runs[-1]["file_mb"]
    rss = max(x["peak_rss_mb"] for x in runs)
    ok = med < TARGET_SECONDS and size < TARGET_MB
    summary = (f"evo report on {n} individuals: {med:.2f}s (median of {reps} cold runs), {size:.2f} MB, "
               f"peak RSS {rss:.0f} MB (target < {TARGET_SECONDS:g} s, < {TARGET_MB:g} MB: "
               f"{'met' if ok else 'NOT met'})")
    markdown = markdown_table(["run", "seconds", "file MB", "peak RSS MB"],
                              [[i + 1, f"{x['seconds']:.2f}", f"{x['file_mb']:.2f}", f"{x['peak_rss_mb']:.0f}"]
                               for i, x in enumerate(runs)])
    markdown += "\n\nOne more cold run, timed by phase (seconds):\n\n" + markdown_table(
        list(phases), [[f"{v:.2f}" for v in phases.values()]])
    markdown += ("\n\nThe population was written by `bench/report_speed.py`'s generator through the store's "
                 "publish/kill API (not by workers), on a local directory, and its history then rolled up into "
                 "segments (as the workers of a run this size roll up records older than 10 minutes); each run is a fresh `evo report` "
                 f"process. Load average right after the runs: {', '.join(f'{x:.1f}' for x in load)} "
                 f"(this machine has {os.cpu_count()} cores; anything above that is other work slowing these numbers).\n")
    return write_report("report", mode, "cpu", out_dir,
                        settings={"individuals": n, **m, "reps": reps, "population": population or "generated"},
                        results={"population": made, "runs": runs, "median_seconds": med, "file_mb": size,
                                 "peak_rss_mb": rss, "target_met": ok, "phases": phases, "load_average": load},
                        markdown=markdown, summary=summary)

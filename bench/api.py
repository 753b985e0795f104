"""``python -m bench api``: how fast the Python API reads a big rolled-up run.

Builds (or reuses) the synthetic run of ``bench inspect`` (``bench._synthrun``: the records
W synthetic workers write, through the store API, no training), rolls every dead record up
into segments, then measures in a fresh process each time (as a notebook's first cell
pays): ``import evo``, ``evo.open(url)`` and ``.individuals()`` (the DataFrame, one row per
individual), and one ``refresh()`` after it (reads only what is new). The row count is
compared with ``evo audit``'s alive + dead on the same run.

Full mode: P = 1000 and 19,000 dead (20,000 individuals); small mode (CI): P = 20, 280 dead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._report import REPO, markdown_table, write_report

# (P, dead, records per segment, repeats)
SIZES = {"small": (20, 280, 50, 1), "full": (1000, 19000, 1000, 3)}
TARGET_S = 2.0   # open + individuals() on 20,000 individuals (the bound)

_MEASURE = ("import json, os, resource, sys, time\n"
            "def cpu():\n"
            "    u = resource.getrusage(resource.RUSAGE_SELF)\n"
            "    return u.ru_utime + u.ru_stime\n"
            "t0, c0 = time.perf_counter(), cpu()\n"
            "import evo\n"
            "t1, c1 = time.perf_counter(), cpu()\n"
            "run = evo.open(sys.argv[1])\n"
            "df = run.individuals()\n"
            "t2, c2 = time.perf_counter(), cpu()\n"
            "run.refresh()\n"
            "t3 = time.perf_counter()\n"
            "print(json.dumps({'import_s': t1 - t0, 'individuals_s': t2 - t1, 'individuals_cpu_s': c2 - c1,\n"
            "                  'refresh_s': t3 - t2, 'rows': len(df), 'alive': int(df['alive'].sum()),\n"
            "                  'load_average': os.getloadavg()[0],\n"
            "                  'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n")


def measure(url: str, env: dict[str, str]) -> dict[str, Any]:
    """One fresh process: seconds to import evo, to open the run and build ``individuals()``
    (wall, and CPU: user + system, what a machine shared with other jobs slows down least),
    and of one ``refresh()``; rows; the 1-minute load average; peak RSS (MiB)."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, url], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        return {"exit": proc.returncode, "stderr": proc.stderr.strip()[-300:]}
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in got.items()} | {"exit": 0}


def audit_counts(url: str, env: dict[str, str]) -> dict[str, int]:
    """``evo audit URL --json``'s born, alive, dead and quarantined."""
    proc = subprocess.run([sys.executable, "-m", "launch", "audit", url, "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    doc = json.loads(proc.stdout)
    return {k: doc[k] for k in ("born", "alive", "dead", "quarantined")}


def run(mode: str, out_dir: str | Path, *, store_dir: str | None = None, progress=None) -> dict[str, Any]:
    """Build or reuse the run, roll it up, measure; write ``api-MODE-cpu.{json,md}``."""
    from .inspect import build, roll_up

    say = progress or (lambda msg: None)
    population, dead, records, repeats = SIZES[mode]
    work = Path(tempfile.mkdtemp(prefix="evo-api-bench-"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", EVO_CACHE_DIR=str(work / "cache"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", "dna", "mutations", "storage", "evo", "launch"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    try:
        path, _ = build(Path(store_dir) if store_dir else work, population, dead, say)
        url = str(path)
        rollup = roll_up(url, records, 0)
        say(f"rolled up: {rollup}")
        runs = [measure(url, env) for _ in range(repeats)]
        audit = audit_counts(url, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = [r for r in runs if r["exit"] == 0]
    if not ok:
        raise RuntimeError(f"the measured process failed: {runs[0].get('stderr')}")
    median = sorted(ok, key=lambda r: r["individuals_s"])[len(ok) // 2]
    results = {"median": median, "runs": runs, "audit": audit, "rollup": rollup, "repeats": repeats}
    rows = audit["alive"] + audit["dead"]
    table = markdown_table(
        ["individuals", "import evo (s)", "open + individuals() (s)", "of it CPU (s)", "refresh() (s)",
         "peak RSS (MiB)", "load average", "rows = audit alive + dead"],
        [[median["rows"], median["import_s"], median["individuals_s"], median["individuals_cpu_s"], median["refresh_s"],
          median["peak_rss_mib"], median["load_average"], "yes" if median["rows"] == rows else f"NO ({rows})"]])
    met = "met" if median["individuals_s"] < TARGET_S else "MISSED"
    summary = (f"evo.open(url).individuals() on {median['rows']} individuals (rolled up): "
               f"{median['individuals_s']:.2f} s ({met}: < {TARGET_S:g} s; CPU {median['individuals_cpu_s']:.2f} s, load "
               f"average {median['load_average']:.1f}), refresh {median['refresh_s']:.2f} s, "
               f"peak RSS {median['peak_rss_mib']:.0f} MiB; rows {'=' if median['rows'] == rows else '!='} "
               f"evo audit's alive + dead")
    settings = {"population": population, "dead": dead, "segment_records": records,
                "store": "local directory", "generator": "bench._synthrun (store API, one process, 8 threads)"}
    return write_report("api", mode, "cpu", out_dir, settings=settings, results=results, markdown=table,
                        summary=summary)

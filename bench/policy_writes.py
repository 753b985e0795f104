"""``python -m bench policy``: what a learned strategy writes to ``policy/`` per child, with the
controller updated after every child (``controller.batch_size=1``: one whole policy version
per child, as every batch size wrote before intake records) against minibatches of B
(``rl``'s default 20: one version per B children plus one small intake record per child).

Both runs in one process, same settings: NAS-Bench-201's space, the ``rl`` LSTM controller
(hidden size 100, about 1.3 MB per version), synthetic children with no training time, W
whole workers (``evo.search.assemble.run_worker``) as threads on a fresh local directory,
nothing pruned (``controller.keep_versions=1000``) so what was written is what is on disk.
Reported per controller child: objects and bytes created under ``policy/``, and the wall
time per individual (a ratio between the two runs in the same process; it includes the
gradient computation, which B = 1 does after every child and B after every B-th).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ._report import REPO, BenchError, markdown_table, write_report

MODES = {"small": {"children": 60, "workers": 2, "batch": 20}, "full": {"children": 400, "workers": 4, "batch": 20}}
POPULATION = 10


def one_run(root: Path, batch_size: int, children: int, workers: int) -> dict[str, Any]:
    """Initialise a run at ``root`` with ``batch_size``, let ``workers`` threads publish
    ``POPULATION + children`` individuals between them; what ``policy/`` holds afterwards."""
    from ._inprocess import run_worker_threads

    url = str(root)
    init = subprocess.run([sys.executable, "-m", "launch", "init", url, "--dataset", "synthetic", "--search-space",
                           "nasbench201", "-P", str(POPULATION), "--synthetic-train-seconds", "0", "--selection", "rl",
                           "--set", f"controller.batch_size={batch_size}", "--set", "controller.keep_versions=1000"],
                          cwd=REPO, capture_output=True, text=True)
    if init.returncode != 0:
        raise BenchError(f"evo init failed: {init.stderr.strip()[-300:]}")
    total = POPULATION + children
    shares = [total // workers + (i < total % workers) for i in range(workers)]
    start = time.perf_counter()
    errors = run_worker_threads(url, shares)
    seconds = time.perf_counter() - start
    if errors:
        raise BenchError(f"batch size {batch_size}: a worker failed: {errors[0]}"[:300])
    names = os.listdir(root / "policy")
    versions = [n for n in names if n.endswith(".json") and "-" not in n]
    intake = [n for n in names if n.endswith(".json") and "-" in n]
    size = sum((root / "policy" / n).stat().st_size for n in versions + intake)
    return {"batch_size": batch_size, "children": children, "workers": workers, "versions": len(versions),
            "intake_records": len(intake), "objects": len(versions) + len(intake), "bytes": size,
            "bytes_per_child": size / children, "objects_per_child": (len(versions) + len(intake)) / children,
            "seconds": seconds, "ms_per_child": 1e3 * seconds / total}


def run(mode: str, out_dir: str | Path, *, children: int | None = None, workers: int | None = None,
        batch: int | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Both runs, B = 1 first; write ``policy-MODE-cpu.{json,md}``; return the document."""
    say = progress or (lambda msg: None)
    settings = dict(MODES[mode])
    settings.update({k: v for k, v in (("children", children), ("workers", workers), ("batch", batch)) if v})
    if settings["children"] < 1 or settings["workers"] < 1 or not 2 <= settings["batch"] <= 256:
        raise BenchError("--children and --workers must be at least 1, --batch-size 2..256")
    work = Path(tempfile.mkdtemp(prefix="evo-policy-bench-"))
    rows = []
    try:
        for b in (1, settings["batch"]):
            say(f"batch size {b}: {settings['children']} controller children, {settings['workers']} workers")
            rows.append(one_run(work / f"b{b}", b, settings["children"], settings["workers"]))
            say(f"batch size {b}: {rows[-1]['versions']} versions, {rows[-1]['intake_records']} intake records, "
                f"{rows[-1]['bytes'] / 1e6:.1f} MB")
            shutil.rmtree(work / f"b{b}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_child, batched = rows
    ratio = per_child["bytes"] / max(batched["bytes"], 1)
    speed = per_child["ms_per_child"] / batched["ms_per_child"]
    table = markdown_table(
        ["batch size", "versions", "intake records", "policy/ MB", "kB per child", "objects per child",
         "ms per individual"],
        [[r["batch_size"], r["versions"], r["intake_records"], round(r["bytes"] / 1e6, 2),
          round(r["bytes_per_child"] / 1e3, 1), round(r["objects_per_child"], 2), round(r["ms_per_child"], 1)]
         for r in rows])
    summary = (f"B={batched['batch_size']} writes {ratio:.1f}x fewer bytes to policy/ than a version per child "
               f"({batched['bytes_per_child'] / 1e3:.0f} vs {per_child['bytes_per_child'] / 1e3:.0f} kB per child); "
               f"individuals (updates included) {speed:.2f}x as fast")
    return write_report("policy", mode, "cpu", out_dir, settings=settings,
                        results={"runs": rows, "bytes_ratio": ratio, "speed_ratio": speed},
                        markdown=table, summary=summary)

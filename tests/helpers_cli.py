"""Helpers shared by the tests that run the installed `evo` console script as real processes
(test_launchers, test_worker_signals, test_slurm)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

EVO = str(Path(sys.executable).with_name("evo")) if Path(sys.executable).with_name("evo").exists() \
    else shutil.which("evo") or "evo"  # the installed console script


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    for name in ("PYTHONPATH", "EVO_WORKER_INDEX", "JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID"):
        e.pop(name, None)  # a worker index from the caller's environment would defeat the index test
    e.update(extra)
    return e


def evo(*args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([EVO, *args], capture_output=True, text=True, timeout=timeout, env=env(**extra))


def wait_for(condition, seconds: float, what: str):
    """Poll ``condition`` until it returns something truthy (which is returned)."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.05)
    return value


def beats(pop: Path) -> dict[str, dict]:
    """worker id -> heartbeat info, read from the population directory."""
    d = pop / "workers"
    out = {}
    for p in sorted(d.glob("*.json")) if d.exists() else []:
        if not p.name.startswith("."):
            b = json.loads(p.read_text())
            out[b["worker"]] = b["info"]
    return out

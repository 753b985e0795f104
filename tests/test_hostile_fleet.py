"""Real worker processes keep running and publishing while someone plants every hostile
entry of issue 11 in their population (local, with root's permission bypass dropped; and on
the GCS emulator, the entries an object store can hold). Afterwards nothing from outside the
store is in it, every history record validates, and `evo check --repair` + `evo audit` are ok.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dna
import storage
from helpers_hostile import (
    CAN_DROP_BYPASS, NO_BYPASS_REASON, SECRET, WITHOUT_BYPASS, absurd_dna, alive_name, plant_commit,
    plant_everything, run_evo, store_bytes_contain, write_secret,
)
from helpers_store import POLL_SECONDS, REPO, subprocess_env

# Every test here runs fleets of real worker processes among hostile store entries.
pytestmark = pytest.mark.slow

WORKERS = 2
MORE_BIRTHS = 25   # births required after the planting, with every worker still running


def _init(url: str) -> None:
    done = run_evo("init", url, "--dataset", "synthetic", "-P", "8", "--synthetic-train-seconds", "0.02")
    assert done.returncode == 0, done.stderr


def _start(url: str, logs: Path) -> list[tuple[subprocess.Popen, Path]]:
    procs = []
    for i in range(WORKERS):
        log = logs / f"worker-{i}.log"
        with open(log, "wb") as f:
            procs.append((subprocess.Popen([*WITHOUT_BYPASS, sys.executable, "-m", "launch", "worker", url,
                                            "--index", str(i)], cwd=REPO, env=subprocess_env(),
                                           stdout=f, stderr=subprocess.STDOUT), log))
    return procs


def _born(store: storage.PopulationStore) -> int:
    return len(store.population.list_alive()) + store.history.count_history()


def _wait_for(predicate, procs, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for p, log in procs:
            assert p.poll() is None, f"a worker exited ({p.returncode}) while {what}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out while {what}"
        time.sleep(POLL_SECONDS * 10)


def _stop(procs) -> str:
    for p, _ in procs:
        assert p.poll() is None, "a worker died"
        p.send_signal(signal.SIGTERM)
    logs = []
    for p, log in procs:
        p.wait(timeout=60)
        assert p.returncode in (0, 128 + signal.SIGTERM), log.read_text()[-2000:]  # a clean stop on SIGTERM
        logs.append(log.read_text())
    return "\n".join(logs)


def _run_fleet(url: str, tmp_path: Path, plant) -> str:
    _init(url)
    store = storage.open_store(url).with_run(bounds=dna.DEFAULT_BOUNDS)
    procs = _start(url, tmp_path)
    try:
        _wait_for(lambda: _born(store) >= 10, procs, 120, "seeding")
        plant(store)
        target = _born(store) + MORE_BIRTHS
        _wait_for(lambda: _born(store) >= target, procs, 180, "publishing among hostile entries")
    finally:
        logs = _stop(procs)
    assert "Traceback" not in logs, logs[-3000:]
    return logs


def _after(url: str, store: storage.PopulationStore, planted: int) -> None:
    """Every history record validates; quarantine holds no foreign bytes; repair + audit ok.

    ``planted``: planted entries the audit counts as born (no worker made them): regular
    files with well-formed live names (alive until quarantined), and the planted history
    record (for the instant between its id's time and its own). The audit's bound on the
    population is then P + W + planted.
    """
    _, broken = store.history.scan_history()
    assert all(b.problem for b in broken)
    for record in store.history.list_quarantine():
        text = json.dumps(record)
        assert SECRET not in text and "root:x:0:0" not in text
    repaired = run_evo("check", url, "--repair", "--json")
    assert "Traceback" not in repaired.stderr and json.loads(repaired.stdout)["ok"], repaired.stdout[-3000:]
    audit = run_evo("audit", url, "--json", "--workers", str(WORKERS + planted))
    assert audit.returncode == 0, audit.stdout[-3000:]
    report = json.loads(audit.stdout)
    assert report["ok"] and report["born"] >= 10 + MORE_BIRTHS
    records, broken = store.history.scan_history()
    assert broken == [] and all(r["mutation"] != "planted" for r in records)


@pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
def test_local_workers_survive_every_hostile_entry(tmp_path):
    root = tmp_path / "pop"
    outside = tmp_path / "outside"
    write_secret(outside)
    logs = _run_fleet(str(root), tmp_path,
                      lambda store: plant_everything(store, root, outside, victims=store.population.list_alive()))
    assert logs.count("quarantined individual") >= 1
    store = storage.open_store(str(root)).with_run(bounds=dna.DEFAULT_BOUNDS)
    _after(str(root), store, planted=3)  # the sparse commit, the absurd DNA, the absurd history
    assert store_bytes_contain(root, SECRET.encode()) == []
    assert store_bytes_contain(root, b"root:x:0:0") == []


def test_gcs_workers_survive_hostile_objects(gcs_bucket_url, tmp_path):
    def plant(store):
        store.backend.write(f"alive/{alive_name(0.999999)}", b"x" * (5 * 2**20))   # over the record bound
        store.backend.write(f"alive/{alive_name(0.999998)}", b"\xff\xfe" + SECRET.encode())
        store.backend.write(f"alive/{alive_name(0.999997)}/nested", b"a prefix, not an object")
        plant_commit(store, absurd_dna(), 0.999996)
        plant_commit(store, absurd_dna(), 1.0, history=True)
        store.backend.write("workers/garbage.json", b"\x80 not a heartbeat")

    _run_fleet(gcs_bucket_url, tmp_path, plant)
    store = storage.open_store(gcs_bucket_url).with_run(bounds=dna.DEFAULT_BOUNDS)
    _after(gcs_bucket_url, store, planted=4)  # oversized, garbage, absurd DNA, absurd history

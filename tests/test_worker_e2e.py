"""End to end: real `evo worker` processes on one population (local directory and GCS emulator).

Each worker is an OS process running the installed CLI with real training on digits
(tiny budgets). The test samples the live population while they run and audits the store
afterwards: population size within [P, P + workers] once selection has started, every
parent existed, every killed individual left a history record, no torn individual.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from storage import open_store

# Every test here runs real `evo worker` processes (one kill -9).
pytestmark = pytest.mark.slow

P = 5
WORKERS = 3


def evo(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch", *args], capture_output=True, text=True, **kw)


def start_worker(url: str, index: int, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "launch", "worker", url, "--index", str(index),
                             "--device", "cpu", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def init_digits(url: str, steps: int = 12) -> None:
    out = evo("init", url, "--dataset", "digits", "-P", str(P), "--steps", str(steps), "--seed", "1")
    assert out.returncode == 0, out.stderr


def all_records(store) -> tuple[dict[str, dict], dict[str, dict]]:
    """(alive id -> commit-derived record, dead id -> history record)."""
    alive = {}
    for info in store.population.list_alive():
        ind = store.population.read_individual(info)
        assert ind is not None, f"live individual {info.id} unreadable (torn?)"
        alive[info.id] = {"id": ind.id, "parent": ind.parent, "mutation": ind.mutation, "fitness": ind.fitness}
    dead = {r["id"]: r for r in store.history.read_history()}
    return alive, dead


def audit(url: str) -> tuple[dict, dict]:
    store = open_store(url)
    alive, dead = all_records(store)
    assert not set(alive) & set(dead), "an individual is both alive and dead"
    everyone = set(alive) | set(dead)
    for rec in list(alive.values()) + list(dead.values()):
        if rec["parent"] is not None:
            assert rec["parent"] in everyone, f"{rec['id']}'s parent {rec['parent']} never existed"
    check = evo("check", url, "--json")
    assert check.stdout.strip().startswith("{"), (check.returncode, check.stdout[-1000:], check.stderr[-2000:])
    report = json.loads(check.stdout)
    assert report["torn"] == 0 and report["quarantined"] == 0, report
    return alive, dead


@pytest.fixture(params=["local", "gcs"])
def population_url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "pop")
    return request.getfixturevalue("gcs_bucket_url")


def test_three_workers_share_one_population(population_url):
    url = population_url
    init_digits(url)
    store = open_store(url)
    procs = [start_worker(url, i, "--max-individuals", "8") for i in range(WORKERS)]
    sizes = []
    deadline = time.time() + 240
    while any(p.poll() is None for p in procs):
        assert time.time() < deadline, "workers did not finish in time"
        n = len(store.population.list_alive())
        if sizes or n >= P:   # from the moment seeding has filled the population
            sizes.append(n)
        time.sleep(0.05)
    for p in procs:
        assert p.returncode == 0, p.stderr.read()[-2000:]
    assert sizes, "selection never started"
    # The documented bound (docs/performance.md, "Scale and chaos"): between a kill's claim and its
    # unlisting another worker may count the victim and drain one more, so the population
    # can dip below P briefly; it never leaves [P - W, P + W].
    assert min(sizes) >= P - WORKERS and max(sizes) <= P + WORKERS, (min(sizes), max(sizes))

    alive, dead = audit(url)
    assert len(alive) + len(dead) == WORKERS * 8          # every publish is accounted for
    assert P - WORKERS <= len(alive) <= P + WORKERS
    # every kill left exactly one history record with its killer and death time
    for rec in dead.values():
        assert rec["killer"] and rec["death"] >= rec["birth"]
    assert any(rec["mutation"] != "initial" for rec in alive.values()), "no child was ever made"


def test_resume_after_kill_minus_nine(tmp_path):
    url = str(tmp_path / "pop")
    init_digits(url, steps=25)
    store = open_store(url)
    procs = [start_worker(url, i) for i in range(2)]
    deadline = time.time() + 180
    while len(store.population.list_alive()) + store.history.count_history() < P + 6:
        assert time.time() < deadline, "run made no progress"
        assert all(p.poll() is None for p in procs), "a worker exited early"
        time.sleep(0.1)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    best_before = max(i.fitness for i in store.population.list_alive())
    born_before = len(store.population.list_alive()) + store.history.count_history()
    history_before = {r["id"] for r in store.history.read_history()}
    alive_before = {i.id for i in store.population.list_alive()}

    procs = [start_worker(url, 10 + i, "--max-individuals", "4") for i in range(2)]
    for p in procs:
        assert p.wait(timeout=240) == 0, p.stderr.read()[-2000:]
    alive, dead = audit(url)
    # best never goes backwards (both read from the listing, where fitness has 6 decimals)
    assert max(i.fitness for i in store.population.list_alive()) >= best_before
    assert len(alive) + len(dead) >= born_before + 8                  # births kept rising
    assert history_before <= set(dead)                                # nothing from before was lost
    # the resumed workers selected parents from the stored population: no new seeding
    new = [r for r in list(alive.values()) + list(dead.values()) if r["id"] not in history_before | alive_before]
    assert len(new) == 8
    assert all(r["mutation"] != "initial" and r["parent"] is not None for r in new)


def test_a_worker_whose_children_all_fail_stops_and_status_names_why(tmp_path):
    """The circuit breaker with real processes: a space whose every child fails to build
    (tests/broken_space.py); the worker exits non-zero after K failures with one line on
    stderr, and `evo status` shows the failed worker and the reason."""
    from pathlib import Path

    import broken_space
    from evo.config import RunConfig

    url = str(tmp_path / "pop")
    config = RunConfig(dataset="digits", search_space="broken_toy", population_size=8, seed=1)
    assert open_store(url).runinfo.init_config(config.to_json())
    script = str(Path(broken_space.__file__))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, script, "worker", url, "--device", "cpu", "--max-failed-children", "3",
                           "--heartbeat-seconds", "0.5"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 3, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last == ("evo worker: error: 3 children in a row failed (--max-failed-children 3); the last: "
                    f"RuntimeError: {broken_space.BUILD_FAILURE}")
    (beat,) = open_store(url).runinfo.list_workers()
    assert beat["info"]["state"] == "failed" and beat["info"]["failures"] == 3
    status = subprocess.run([sys.executable, script, "status", url], capture_output=True, text=True, env=env,
                            timeout=120)
    assert status.returncode == 0, status.stderr
    assert "1 FAILED" in status.stdout and "FAILED" in status.stdout.split("workers:")[1]
    assert f"failed: 3 children in a row failed (--max-failed-children 3); the last: RuntimeError: " \
           f"{broken_space.BUILD_FAILURE}" in status.stdout
    as_json = subprocess.run([sys.executable, script, "status", url, "--json"], capture_output=True, text=True,
                             env=env, timeout=120)
    report = json.loads(as_json.stdout)
    assert report["workers_failed"] == 1 and report["workers"][0]["status"] == "failed"
    assert broken_space.BUILD_FAILURE in report["workers"][0]["reason"]

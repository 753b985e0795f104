"""Regularized (aging) evolution in the NASNet space, with real worker processes.

The population stays at P (up to the workers in flight), deaths happen in birth order
(up to races between workers), and when workers race for the oldest individual exactly
one of them kills it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from evo.config import RunConfig
from evo.train.synthetic import SyntheticSettings
from storage import open_store

# Every test here starts real processes (evo workers, spawned killers).
pytestmark = pytest.mark.slow

P = 6
WORKERS = 3
PER_WORKER = 4   # 12 births, 6 of them after seeding: 6 deaths to order


def test_aging_run_in_nasnet_space_kills_in_birth_order(tmp_path):
    url = str(tmp_path / "pop")
    out = subprocess.run([sys.executable, "-m", "launch", "init", url, "--search-space", "nasnet", "-P", str(P),
                          "-S", "3", "--steps", "2", "--nasnet-cells", "1", "--nasnet-filters", "4"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    store = open_store(url)
    config = RunConfig.from_json(store.runinfo.read_config())
    assert config.selection == "aging" and not config.inherit_weights   # the 2019 paper's defaults

    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "launch", "worker", url, "--index", str(i), "--device", "cpu",
                               "--max-individuals", str(PER_WORKER)], stderr=subprocess.PIPE, text=True, env=env)
             for i in range(WORKERS)]
    sizes = []
    deadline = time.time() + 300
    while any(p.poll() is None for p in procs):
        assert time.time() < deadline
        n = len(store.population.list_alive())
        if sizes or n >= P:   # from the moment seeding has filled the population
            sizes.append(n)
        time.sleep(0.05)
    for p in procs:
        assert p.returncode == 0, p.stderr.read()[-2000:]
    assert sizes and P <= min(sizes) and max(sizes) <= P + WORKERS

    history = sorted(store.history.read_history(), key=lambda r: r["death"])
    alive = store.population.list_alive()
    assert len(history) + len(alive) == WORKERS * PER_WORKER
    assert all(r["dna"]["kind"] == "nasnet" for r in history)
    births = {r["id"]: r["birth"] for r in history} | {i.id: i.birth for i in alive}
    deaths = {r["id"]: r["death"] for r in history}
    for victim in history:
        # individuals older than the victim that were still alive when it died: only races
        # between workers (each publishing and killing at once) can make any
        older_alive = [i for i, b in births.items()
                       if b < victim["birth"] and deaths.get(i, float("inf")) > victim["death"]]
        assert len(older_alive) < WORKERS, (victim["id"], older_alive)


def _kill_oldest(url: str, barrier, results) -> None:
    store = open_store(url)
    oldest = min(store.population.list_alive(), key=lambda i: i.id)
    barrier.wait()
    results.put((oldest.id, store.population.kill(oldest, worker=f"racer-{os.getpid()}", reason="aging")))


def test_racing_workers_kill_the_oldest_exactly_once(tmp_path):
    url = str(tmp_path / "pop")
    store = open_store(url)
    store.runinfo.init_config(RunConfig(dataset="synthetic", selection="aging", population_size=4,
                                plugins={"synthetic": SyntheticSettings(weight_bytes=64)}).to_json())
    from evo.train.synthetic import safetensors_blob
    import dna
    for k in range(4):
        store.population.publish(dna.initial().to_dict(), safetensors_blob(b"x" * 64), parent=None, mutation="initial",
                      fitness=0.1 * k, worker="seed")
    oldest = min(store.population.list_alive(), key=lambda i: i.id).id
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_kill_oldest, args=(url, barrier, results)) for _ in range(8)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    assert {victim for victim, _ in outcomes} == {oldest}
    assert sum(won for _, won in outcomes) == 1
    assert [r["id"] for r in store.history.read_history()] == [oldest]

"""A synthetic run at the papers' scale, fast: the records a run of W synthetic workers writes,
written through the store API by one process (no worker loop, no training, no sleeps).

What it writes is what real workers write: ``evo init`` (dataset ``synthetic``), P initial
individuals (``bench._procs.preseed``), then pairwise tournaments: the fitter of two random
live individuals is the parent, its DNA is mutated by the run's search space, the child gets
its synthetic fitness and weights and is published (``store.population.publish``), and the other one is
killed (``store.population.kill``: the history record). Worker names rotate over ``workers`` names and
each writes a heartbeat, so ``evo status`` shows W workers. Used by ``bench inspect``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable

import numpy as np


def build_synthetic_run(url: str, *, population: int, dead: int, workers: int = 8, seed: int = 0,
                        weight_bytes: int = 256, env: dict[str, str] | None = None,
                        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Make the run at ``url`` (must be empty) hold ``population`` live and ``dead`` dead
    individuals; return what was made (counts, seconds)."""
    import os

    from bench._procs import evo, preseed
    from evo.config import RunConfig
    from evo.spaces import for_config
    from evo.train.synthetic import SyntheticEvaluator
    from storage import open_store

    say = progress or (lambda msg: None)
    t0 = time.time()
    init = evo(["init", url, "--dataset", "synthetic", "-P", str(population), "--seed", str(seed),
                "--synthetic-train-seconds", "0", "--synthetic-weight-bytes", str(weight_bytes)],
               dict(env or os.environ))
    if init.returncode != 0:
        raise RuntimeError(f"evo init failed: {init.stderr.strip()[-300:]}")
    preseed(url)
    store = open_store(url)
    config = RunConfig.from_json(store.runinfo.read_config())
    space = for_config(config)
    evaluator = SyntheticEvaluator(space, replace(config.settings_of("synthetic"), train_seconds=0.0))
    rng = np.random.default_rng(seed)
    alive = {i.id: i for i in store.population.list_alive()}
    dna_of: dict[str, Any] = {}
    for info, commit in store.population.scan_alive(list(alive.values())):
        dna_of[info.id] = space.parse(commit["dna"])
    names = [f"synth-{k}" for k in range(workers)]
    counts = {n: {"individuals": 0, "kills": 0} for n in names}
    started = time.time()
    ids = list(alive)
    busy: set[str] = set()      # victims being killed right now: nobody else picks them
    lock = threading.Lock()
    done = [0]

    def one(k: int) -> None:
        # the workers' cycle: W of these run at once (W threads), as W workers would
        worker = names[k % workers]
        with lock:
            while True:
                a, b = rng.choice(len(ids), 2, replace=False)
                if ids[a] not in busy and ids[b] not in busy:
                    break
            pa, pb = alive[ids[a]], alive[ids[b]]
            parent, victim = (pa, pb) if (pa.fitness, pa.id) >= (pb.fitness, pb.id) else (pb, pa)
            slot = b if victim is pb else a
            busy.add(victim.id)
            child = space.mutate(dna_of[parent.id], np.random.default_rng([seed, k]))
        out = evaluator.evaluate(child, seed=seed * 10**7 + k)
        info = store.population.publish(child.to_dict(), out.weights, parent=parent.id, mutation=child.mutation,
                             fitness=out.fitness, worker=worker, metrics=out.metrics)
        killed = store.population.kill(victim, worker=worker)
        with lock:
            counts[worker]["individuals"] += 1
            counts[worker]["kills"] += int(killed)
            alive.pop(victim.id)
            dna_of.pop(victim.id)
            busy.discard(victim.id)
            alive[info.id] = info
            dna_of[info.id] = child
            ids[ids.index(victim.id, slot)] = info.id   # the child takes the victim's slot
            done[0] += 1
            if done[0] % 2000 == 0:
                say(f"synthetic run: {done[0]}/{dead} dead ({done[0] / (time.time() - started):.0f}/s)")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(dead)))
    now = time.time()
    for n in names:
        store.runinfo.heartbeat(n, {"state": "stopped", "started": started, "interval": 10.0, "host": "synthetic",
                            "pid": 0, **counts[n]})
    return {"url": url, "population": population, "dead": dead, "workers": workers,
            "seconds": round(now - t0, 1)}

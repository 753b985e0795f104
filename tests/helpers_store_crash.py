"""Writer process for the crash and corruption tests (run by the tests as a subprocess).

    python helpers_store_crash.py [--crash-at POINT[#N]] COMMAND ARGS...
    python helpers_store_crash.py publish URL COUNT [PRIMITIVE]  # publish COUNT individuals
    python helpers_store_crash.py kill URL ID [KEEP_BEST] # kill one individual
    python helpers_store_crash.py churn URL SEED          # publish/kill forever (until SIGKILLed)
    python helpers_store_crash.py worker URL SEED STEPS   # a tournament-selection worker loop
    python helpers_store_crash.py rollup URL RECORDS      # roll the history up (min age 0)

Tests pass ``--crash-at`` to make it SIGKILL itself at a chosen step (its store is built with
that fault hook, ``storage.crash_hook``), or SIGKILL it at random times. ``worker`` prints a
JSON summary and must survive corrupt individuals.
"""

from __future__ import annotations

import json
import sys

import numpy as np

import storage
from helpers_store import dna_dict, open_test_store, publish_random, weights_blob


FAULT: storage.FaultHook | None = None  # from --crash-at


def publish(url: str, count: str, primitive: str = "correct") -> int:
    store = open_test_store(url, primitive, fault=FAULT)
    rng = np.random.default_rng()
    for _ in range(int(count)):
        info, _, _ = publish_random(store, rng, worker="crash-writer")
        print(info.id, flush=True)
    return 0


def kill(url: str, ident: str, keep_best: str = "0") -> int:
    store = storage.open_store(url, keep_best=int(keep_best), fault=FAULT)
    print(store.population.kill(ident, worker="crash-killer"), flush=True)
    return 0


def churn(url: str, seed: str) -> int:
    """Keep a population of about 8 alive: publish a child, kill the oldest, forever."""
    store = storage.open_store(url, keep_best=2, fault=FAULT)
    rng = np.random.default_rng(int(seed))
    step = 0
    while True:
        alive = store.population.list_alive()
        parent = alive[int(rng.integers(len(alive)))].id if alive else None
        publish_random(store, rng, worker=f"churn-{seed}", parent=parent)
        if len(alive) >= 8:
            store.population.kill(alive[0], worker=f"churn-{seed}", reason="aging")
        store.runinfo.heartbeat(f"churn-{seed}", {"step": step})
        if step == 0:
            print("ready", flush=True)
        step += 1


def worker(url: str, seed: str, steps: str) -> int:
    """Pairwise tournament (as in the paper): the worse of two dies, the better has a child."""
    store = storage.open_store(url, fault=FAULT)
    rng = np.random.default_rng(int(seed))
    counts = {"steps": 0, "unreadable": 0, "kills": 0, "children": 0}
    for _ in range(int(steps)):
        counts["steps"] += 1
        alive = store.population.list_alive()
        if len(alive) < 2:
            break
        a, b = (alive[i] for i in rng.choice(len(alive), size=2, replace=False))
        ia, ib = store.population.read_individual(a), store.population.read_individual(b)
        if ia is None or ib is None:
            counts["unreadable"] += 1
            continue
        worse, better = sorted((ia, ib), key=lambda i: i.fitness)
        if store.population.kill(worse.id, worker=f"worker-{seed}"):
            counts["kills"] += 1
            store.population.publish(dna_dict(rng, "identity"), weights_blob(rng), parent=better.id,
                          mutation="identity", fitness=float(rng.uniform(0, 1)),
                          worker=f"worker-{seed}", metrics={})
            counts["children"] += 1
    print(json.dumps(counts), flush=True)
    return 0


def rollup(url: str, records: str) -> int:
    """Roll every sealed history record up into segments of RECORDS."""
    done = storage.open_store(url, fault=FAULT).history.roll_up(min_age=0, segment_records=int(records))
    print(json.dumps({"segments": done.segments, "records": done.records, "joined": done.joined}), flush=True)
    return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--crash-at"]:
        FAULT = storage.crash_hook(argv[1])
        argv = argv[2:]
    command, *args = argv
    sys.exit({"publish": publish, "kill": kill, "churn": churn, "worker": worker,
              "rollup": rollup}[command](*args))

"""Race worker, run as a separate process by tests/test_store_races.py.

    python helpers_store_race.py SPEC.json WORKER_INDEX

SPEC: {"url", "primitive", "victims": [[id, fitness], ...], "sequence": [victim index, ...],
"go": path, "out_dir": path, "read_every": n}. The worker waits for the "go" file, then walks
the same victim sequence as every other worker: it tries to kill each victim, publishes a
child whenever it won, and every ``read_every`` steps reads a random listed individual (a
live reader among the writers). It writes what it saw to OUT_DIR/WORKER_INDEX.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from helpers_store import dna_dict, open_test_store, sha256, weights_blob
from storage import IndividualInfo
from storage.records import alive_key, birth_of

START_POLL_SECONDS = 0.001  # short, so that all racers start within a millisecond or so


def main(spec_path: str, index: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    worker = f"racer-{index}"
    store = open_test_store(spec["url"], spec["primitive"])
    victims = [IndividualInfo(i, f, birth_of(i), alive_key(i, f)) for i, f in spec["victims"]]
    rng = np.random.default_rng(1000 + int(index))
    store.population.list_alive()  # warm the connection before the start
    Path(spec["out_dir"], f"{index}.ready").touch()
    go = Path(spec["go"])
    while not go.exists():
        time.sleep(START_POLL_SECONDS)

    wins, children, vanished, reads = [], [], [], 0
    for step, vi in enumerate(spec["sequence"]):
        victim = victims[vi]
        if store.population.kill(victim, worker=worker):
            wins.append(victim.id)
            weights = weights_blob(rng)
            child = store.population.publish(dna_dict(rng, "race"), weights, parent=victim.id, mutation="race",
                                  fitness=float(rng.uniform(0, 1)), worker=worker,
                                  metrics={"step": step})
            children.append({"id": child.id, "key": child.key, "sha256": sha256(weights),
                             "parent": victim.id})
        if step % spec["read_every"] == 0:
            listed = store.population.list_alive()
            if listed:
                pick = listed[int(rng.integers(len(listed)))]
                if store.population.read_individual(pick) is None:
                    vanished.append(pick.id)
                reads += 1
    Path(spec["out_dir"], f"{index}.json").write_text(json.dumps(
        {"worker": worker, "wins": wins, "children": children, "vanished": vanished, "reads": reads}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

"""The worker's selection schemes, seeding, reproducibility and mutation coverage.

Runs the real worker loop in-process on a real local store. Most tests use the synthetic
fitness (everything real but the training) so that hundreds of children take seconds.
"""

from __future__ import annotations

from collections import Counter

import pytest

import mutations
from evo.config import RunConfig, TrainSettings
from evo.train.synthetic import SyntheticSettings
from evo.strategies.evolution import AgingSettings
from evo.search.assemble import open_worker
from evo.search.worker import Worker, WorkerOptions
from storage import open_store


def init(url: str, **overrides) -> RunConfig:
    settings = dict(dataset="synthetic", population_size=8, seed=3,
                    plugins={"synthetic": SyntheticSettings(train_seconds=0.0, weight_bytes=256)})
    config = RunConfig(**{**settings, **overrides})
    assert open_store(url).runinfo.init_config(config.to_json())
    return config


def run(url: str, n: int, index: int = 0, records: list | None = None, **kw) -> Worker:
    records = records if records is not None else []
    worker = open_worker(url, WorkerOptions(max_individuals=n), index=index, on_publish=records.append, **kw)
    worker.run()
    return worker


def test_seeding_fills_population_with_initial_individuals_then_selects(tmp_path):
    url = str(tmp_path / "pop")
    init(url)
    records: list = []
    run(url, 20, records=records)
    assert [r["mutation"] for r in records[:8]] == ["initial"] * 8
    assert all(r["parent"] is None and r["killed"] is None for r in records[:8])
    assert all(r["parent"] is not None and r["killed"] is not None for r in records[8:])
    assert len(open_store(url).population.list_alive()) == 8


def test_pairwise_kills_the_loser_of_the_pair(tmp_path):
    url = str(tmp_path / "pop")
    init(url, selection="pairwise")
    store = open_store(url)
    fitness: dict[str, float] = {}
    checked = 0

    def on_publish(rec):
        nonlocal checked
        fitness[rec["id"]] = rec["fitness"]
        if rec["killed"]:
            assert rec["killed"] == rec["selected_victim"]
            assert rec["killed"] != rec["parent"]
            assert fitness[rec["killed"]] <= fitness[rec["parent"]]
            checked += 1

    open_worker(url, WorkerOptions(max_individuals=80), index=0, on_publish=on_publish).run()
    assert checked == 80 - 8
    assert len(store.population.list_alive()) == 8


def test_aging_kills_the_oldest(tmp_path):
    url = str(tmp_path / "pop")
    init(url, selection="aging", plugins={"aging": AgingSettings(tournament_size=3)})
    store = open_store(url)
    checked = 0

    def on_publish(rec):
        nonlocal checked
        if rec["killed"]:
            alive = [p.id for p in store.population.list_alive()]
            assert rec["killed"] not in alive
            assert rec["killed"] < min(alive)   # ids sort by birth: the victim was the oldest
            checked += 1

    open_worker(url, WorkerOptions(max_individuals=60), index=0, on_publish=on_publish).run()
    assert checked == 60 - 8
    # the survivors are exactly the newest P individuals
    history = store.history.read_history()
    assert max(r["id"] for r in history) < min(p.id for p in store.population.list_alive())


def test_random_search_never_copies_a_parent(tmp_path):
    url = str(tmp_path / "pop")
    init(url, selection="random")
    records: list = []
    run(url, 50, records=records)
    after_seeding = records[8:]
    assert after_seeding and all(r["parent"] is None for r in after_seeding)
    assert all(r["mutation"] == "random" for r in after_seeding)
    assert len({r["dna_hash"] for r in after_seeding}) > len(after_seeding) // 2   # really random architectures
    stored = open_store(url).history.read_history()
    assert all(r["parent"] is None for r in stored)


@pytest.mark.slow  # a long in-process run (~13 s on a loaded 2-core machine)
def test_every_mutation_is_exercised_in_a_run(tmp_path):
    url = str(tmp_path / "pop")
    init(url, population_size=10)
    run(url, 400)
    store = open_store(url)
    counts = Counter(r["mutation"] for r in store.history.read_history())
    for info in store.population.list_alive():
        counts[store.population.read_individual(info).mutation] += 1
    missing = set(mutations.MUTATION_NAMES) - set(counts)
    assert not missing, f"mutations never used in 400 children: {missing}; counts {dict(counts)}"


def test_single_worker_run_is_reproducible_with_a_seed(tmp_path):
    """Same config seed and worker index: same mutations, architectures and fitnesses (real training)."""
    pytest.importorskip("torch")
    sequences = []
    for name in ("a", "b"):
        url = str(tmp_path / name)
        config = RunConfig(dataset="digits", population_size=3, seed=11, train=TrainSettings(steps=15, augment=False))
        open_store(url).runinfo.init_config(config.to_json())
        records: list = []
        open_worker(url, WorkerOptions(max_individuals=8), index=0, device="cpu", on_publish=records.append).run()
        sequences.append([(r["mutation"], r["dna_hash"], round(r["fitness"], 6)) for r in records])
    assert sequences[0] == sequences[1]
    assert len({s[1] for s in sequences[0]}) > 1


def test_different_worker_indices_draw_different_streams(tmp_path):
    sequences = []
    for index in (0, 1):
        url = str(tmp_path / f"w{index}")
        init(url)
        records: list = []
        run(url, 30, index=index, records=records)
        sequences.append([r["dna_hash"] for r in records])
    assert sequences[0] != sequences[1]


def test_a_zero_cost_child_costs_one_listing_and_never_picks_the_dead(tmp_path):
    """The next selection reuses the listing the last kill took, less its victim (listed
    back to back, a new one would show the same): one listing of alive/ per child, not two,
    and no parent or victim is ever one that this worker already killed."""
    url = str(tmp_path / "pop")
    init(url)
    run(url, 8)                                   # seeded
    records: list = []
    worker = open_worker(url, WorkerOptions(max_individuals=60), index=1, on_publish=records.append)
    listings = []
    real = worker.population.list_alive
    worker.population.list_alive = lambda: listings.append(1) or real()
    worker.run()
    assert len(records) == 60 and len(listings) <= 60 + 2, len(listings)
    killed: set = set()
    for rec in records:
        assert rec["parent"] not in killed and rec["selected_victim"] not in killed
        killed.add(rec["killed"])
    assert len(open_store(url).population.list_alive()) == 8

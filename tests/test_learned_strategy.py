"""The learned strategies (rl: NASNet's PPO LSTM controller; reinforce: independent
softmaxes) as units over a memory:// store: they learn, their versions form one chain,
racing workers rebase, and hostile versions cost only themselves."""

from __future__ import annotations

import json
import threading
import uuid

import numpy as np
import pytest

import storage
from evo.config import ConfigError, RunConfig
from evo.strategies.controller_settings import ControllerSettings
from evo.spaces import make_space
from evo.strategies import make_strategy
from evo.strategies.learned import Ppo
from evo.strategies.policy_state import PolicyError, parse_policy
from evo.search.worker import Worker, WorkerOptions
from helpers_worker import FakeClock, FakeEvaluator

CONV3 = "nor_conv_3x3"


def conv_fraction(dna) -> float:
    """A landscape with one best cell (all 3x3 convolutions)."""
    return sum(op == CONV3 for op in dna.ops) / len(dna.ops)


def setup_run(selection: str, P: int = 4, space: str = "nasbench201", **controller):
    config = RunConfig(dataset="synthetic", search_space=space, population_size=P, selection=selection,
                       plugins={"controller": ControllerSettings(**controller)})
    store = storage.open_store(f"memory://learned-{uuid.uuid4().hex}")
    store.runinfo.init_config(config.to_json())
    sp = make_space(config)
    return config, store.with_run(bounds=config.bounds, dna_validator=sp.parse), sp


def worker_on(config, store, space, seed: int, fitness=conv_fraction, n: int = 10_000):
    return Worker(store.population, store.runinfo, space, make_strategy(config, store.policy, space), FakeEvaluator(fitness),
                  np.random.default_rng(seed), population_size=config.population_size, inherit_weights=False,
                  clock=FakeClock(), options=WorkerOptions(max_individuals=n, heartbeat_interval=3600,
                                                           worker_id=f"w{seed}"))


def race(workers, steps: int) -> None:
    """Each worker takes ``steps`` steps, all in threads at once; any exception fails the test."""
    errors = []

    def run(w):
        try:
            for _ in range(steps):
                w.step()
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def read_versions(store, strategy):
    out = {}
    for v in store.policy.policy_versions():
        out[v] = parse_policy(store.policy.read_policy(v), strategy=strategy.name, decisions=strategy.space.decisions,
                              shapes=strategy.shapes, version=v)
    return out


@pytest.mark.parametrize("selection,settings", [("reinforce", {"learning_rate": 0.05}),
                                                ("rl", {"learning_rate": 0.005, "hidden_size": 32, "batch_size": 1}),
                                                ("rl", {"learning_rate": 0.01, "hidden_size": 32, "batch_size": 5})])
def test_the_controller_learns_the_landscape(selection, settings, steps=150):
    config, store, space = setup_run(selection, **settings)
    worker = worker_on(config, store, space, 0)
    records = [r for r in (worker.step() for _ in range(steps)) if r]
    learned = [r for r in records if r["mutation"] == "controller"]
    assert len(learned) >= steps - config.population_size - 2
    first, last = learned[:30], learned[-30:]
    assert np.mean([r["fitness"] for r in last]) > np.mean([r["fitness"] for r in first]) + 0.15
    # every child records the version that proposed it, its choices and their log-probability
    r = learned[-1]["metrics"]
    assert r["policy"] == selection and r["policy_version"] >= 1 and len(r["policy_choices"]) == 6
    assert r["policy_logp"] < 0


def test_versions_form_one_chain_and_old_ones_are_pruned():
    config, store, space = setup_run("rl", keep_versions=3, batch_size=4)
    worker = worker_on(config, store, space, 1)
    for _ in range(22):
        worker.step()
    versions = read_versions(store, worker.strategy)
    # 18 controller children after 4 seeds: one version per 4 (3 in the intake, the 4th makes
    # the version), the newest 3 kept, and 2 children waiting in the newest one's intake
    assert sorted(versions) == [2, 3, 4]
    for v, policy in versions.items():
        assert policy.parent == v - 1 and policy.updates == 4 * v and not policy.pending
    assert store.policy.intake() == {2: [0, 1, 2], 3: [0, 1, 2], 4: [0, 1]}   # pruned ones went with theirs
    children = [u.child for u in versions[4].recent]
    assert len(children) == len(set(children)) == 16
    census = store.history.census(read_alive=False)
    known = {i.id for i in census.listed} | census.dead_ids
    assert set(children) <= known


def test_racing_workers_rebase_and_apply_every_update_once():
    config, store, space = setup_run("reinforce", P=4)
    workers = [worker_on(config, store, space, seed) for seed in range(6)]
    for w in workers[:1]:
        for _ in range(4):
            w.step()
    race(workers, 15)
    strategy = workers[0].strategy
    top = max(store.policy.policy_versions())
    latest = read_versions(store, strategy)[top]
    applied = [u.child for u in latest.recent]
    assert len(applied) == len(set(applied))
    controller_children = sum(1 for w in workers for _ in range(w.stats.published)) - 4
    assert latest.updates == controller_children == top


def test_a_corrupt_newest_version_is_skipped_and_the_chain_goes_on():
    config, store, space = setup_run("reinforce")
    worker = worker_on(config, store, space, 2)
    for _ in range(6):
        worker.step()
    top = max(store.policy.policy_versions())
    store.backend.write(f"policy/v{top + 1:010d}.json", b'{"kind": "evo-policy", "schema": 1}')
    store.backend.write(f"policy/v{top + 2:010d}.json", b"\x00" * 100)
    other = worker_on(config, store, space, 3)    # a fresh worker: nothing cached
    other.step()
    versions = store.policy.policy_versions()
    assert versions[-1] == top + 3
    data = store.policy.read_policy(top + 3)
    policy = parse_policy(data, strategy="reinforce", decisions=space.decisions,
                          shapes=other.strategy.shapes, version=top + 3)
    assert policy.parent == top


@pytest.mark.parametrize("mangle", [
    lambda d: {**d, "strategy": "reinforce"},
    lambda d: {**d, "decisions": [5] * 5},
    lambda d: {**d, "version": 99},
    lambda d: {**d, "parent": 7},
    lambda d: {**d, "params": {**d["params"], "head_b": {"shape": [30], "f32": "AAAA"}}},
    lambda d: {**d, "params": {k: v for k, v in d["params"].items() if k != "lstm_w"}},
    lambda d: {**d, "recent": [{"child": "x"}]},
    lambda d: {**d, "baseline_den": float("nan")},
    lambda d: {**d, "extra": 1},
])
def test_parse_refuses_what_is_not_this_runs_policy(mangle):
    config, store, space = setup_run("rl")
    strategy = Ppo(config, store.policy, space)
    policy, _ = strategy.latest()
    d = mangle(json.loads(policy.to_bytes()))
    with pytest.raises(PolicyError):
        parse_policy(json.dumps(d).encode(), strategy="rl", decisions=space.decisions, shapes=strategy.shapes,
                     version=0)


def test_non_finite_parameters_are_refused():
    config, store, space = setup_run("reinforce")
    strategy = make_strategy(config, store.policy, space)
    policy, _ = strategy.latest()
    bad = {**policy.params, "logits": np.full_like(policy.params["logits"], np.inf)}
    from dataclasses import replace
    with pytest.raises(PolicyError, match="non-finite"):
        parse_policy(replace(policy, params=bad).to_bytes(), strategy="reinforce", decisions=space.decisions,
                     shapes=strategy.shapes, version=0)


def test_nasnet_space_works_with_the_lstm_controller():
    config, store, space = setup_run("rl", space="nasnet", batch_size=2)
    worker = worker_on(config, store, space, 4, fitness=space.synthetic_fitness)
    records = [worker.step() for _ in range(9)]
    assert records[-1]["mutation"] == "controller" and len(records[-1]["metrics"]["policy_choices"]) == 40
    assert max(store.policy.policy_versions()) == 2 and store.policy.intake()[2] == [0]


def test_config_refuses_learned_strategies_where_they_cannot_work():
    with pytest.raises(ConfigError, match="has none"):
        RunConfig(dataset="synthetic", selection="rl")     # large_scale: no decision encoding
    with pytest.raises(ConfigError, match="apply to the learned"):
        RunConfig(dataset="synthetic", search_space="nasbench201", selection="aging",
                  plugins={"controller": ControllerSettings(learning_rate=0.1)})
    for bad in ({"learning_rate": 0}, {"baseline_decay": 1}, {"hidden_size": 0}, {"keep_versions": 1},
                {"ppo_clip": -1}, {"entropy_weight": float("nan")}):
        with pytest.raises(ConfigError):
            ControllerSettings(**bad)


def test_a_slow_writer_that_recreates_a_pruned_version_withdraws_it_and_rebases():
    """The ABA case: a worker read version k, stalled; meanwhile others made k+1 .. k+5 and
    pruned up to k+2. Its create of k+1 succeeds (the name is free again) but that version
    is not in the chain: it must notice, withdraw it and redo its update on the newest."""
    from evo.strategies import Proposal, Published

    config, store, space = setup_run("reinforce", keep_versions=3)
    slow, fast = make_strategy(config, store.policy, space), make_strategy(config, store.policy, space)
    rng = np.random.default_rng(7)

    def child(strategy, name):
        policy, _ = strategy.latest()
        choices, logp = strategy.model.sample(policy.params, rng)
        note = {"policy": strategy.name, "policy_version": policy.version, "policy_choices": list(choices),
                "policy_logp": logp}
        return Published(name, 0.5, space.from_decisions(choices), Proposal(note=note), {}, "w")

    slow.observe(child(slow, "c-slow-0"))                 # version 1, cached by the slow worker
    k = max(store.policy.policy_versions())
    stale = child(slow, "c-slow-1")
    for i in range(5):
        fast.observe(child(fast, f"c-fast-{i}"))
    assert store.policy.policy_versions() == [k + 3, k + 4, k + 5]
    listings = iter([[k]])
    real = store.policy.policy_versions
    slow.policy.policy_versions = lambda: next(listings, None) or real()   # one stale listing
    slow.observe(stale)
    versions = read_versions(store, fast)
    newest = versions[max(versions)]
    assert max(versions) == k + 6 and newest.parent == k + 5 and newest.parent_id == versions[k + 5].id
    assert k + 1 not in versions                               # the orphan was withdrawn
    assert [u.child for u in newest.recent][-2:] == ["c-fast-4", "c-slow-1"]

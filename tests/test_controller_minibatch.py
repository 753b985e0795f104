"""The controller as the NASNet paper trains it (issue 24): the advantage against the moving
average of *previous* rewards (the first one is not zero), updates from minibatches of B
children made from exactly those children's recorded choices and log-probabilities, each
child learned from once, under racing threads and under real worker processes, one of them
SIGKILLed; REINFORCE's truncated importance weights."""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from evo.config import RunConfig
from evo.spaces import make_space
from evo.strategies import Proposal, Published, make_strategy
from evo.strategies.controllers import adam_ascent
from evo.strategies.controller_settings import ControllerSettings
from evo.strategies.policy_state import PolicyError, parse_intake, parse_policy
from helpers_store import REPO
from storage import open_store
from test_learned_strategy import race, setup_run, worker_on


def chain(store, strategy) -> list:
    """Every version present, parsed, ascending; they must form one chain (each the next
    number's parent, holding one to B updates more) for the checks below to mean anything."""
    versions = [parse_policy(store.policy.read_policy(v), strategy=strategy.name, decisions=strategy.space.decisions,
                             shapes=strategy.shapes, version=v) for v in store.policy.policy_versions()]
    for parent, child in zip(versions, versions[1:]):
        assert child.parent_id == parent.id and 1 <= child.updates - parent.updates <= strategy.batch_size
    return versions


def children_records(store) -> dict[str, dict]:
    """The controller children the store knows, alive or dead: id -> metrics."""
    census = store.history.census(read_alive=True)
    out = {r["id"]: r for r in census.history}
    out.update({i: c for i, c in census.commits.items() if isinstance(c, dict)})
    return {i: r for i, r in out.items() if r.get("metrics", {}).get("policy")}


def intake_of(store, strategy, version) -> list:
    """The intake records in ``version``'s slots, in slot order."""
    slots = store.policy.intake().get(version.version, [])
    return [parse_intake(store.policy.read_intake(version.version, k), strategy=strategy.name,
                         decisions=tuple(strategy.space.decisions), version=version.version, slot=k,
                         base_id=version.id) for k in slots]


def batches(store, strategy, versions) -> list[tuple]:
    """The minibatches learned from, in chain order: at each version, the updates it added
    (the children waiting in its parent's intake, in slot order, then the child of the worker
    that made it), each checked against its parent's intake records; the optimizer stepped
    and the parameters moved."""
    learned = []
    for parent, v in zip(versions, versions[1:]):
        batch = v.recent[-(v.updates - parent.updates):]
        intake = intake_of(store, strategy, parent)
        assert [u.child for u in batch[:-1]] == [r.child for r in intake]
        assert [u.reward for u in batch[:-1]] == [r.reward for r in intake]
        assert v.steps == parent.steps + strategy.steps_per_update
        assert not all(np.array_equal(v.params[k], parent.params[k]) for k in v.params)
        learned.append(batch)
    return learned


def check_learned_once(store, strategy, B: int, lost: set[str] = frozenset()) -> list:
    """Every controller child in the store is taken in exactly once (but those in ``lost``):
    learned from in one minibatch of B children, or waiting in the head's intake; every
    intake record's choices, log-probability and sampling version are what the child's own
    record says. The minibatches learned from."""
    versions = chain(store, strategy)
    assert versions[0].updates == 0, "the first version must be kept for this check (keep_versions)"
    records = children_records(store)
    learned = batches(store, strategy, versions)
    waiting = intake_of(store, strategy, versions[-1])
    taken = [u.child for batch in learned for u in batch] + [r.child for r in waiting]
    assert len(taken) == len(set(taken))
    assert set(taken) == set(records) - set(lost) and not set(taken) & set(lost)
    assert len(waiting) < B and all(len(batch) == B for batch in learned)
    for v in versions:
        for r in intake_of(store, strategy, v):
            m = records[r.child]
            assert list(r.choices) == m["metrics"]["policy_choices"] and r.logp == m["metrics"]["policy_logp"]
            assert r.sampled == m["metrics"]["policy_version"] and r.reward == m["fitness"]
    return learned


def test_the_first_advantage_is_the_first_reward_and_later_ones_use_only_previous_rewards():
    config, store, space = setup_run("rl", P=4, batch_size=3, keep_versions=1000, hidden_size=16)
    worker = worker_on(config, store, space, 0)
    for _ in range(12):
        worker.step()
    versions = chain(store, worker.strategy)
    updates = list(versions[-1].recent)   # 8 children: two minibatches of 3 learned from, 2 waiting
    assert len(updates) == 6 and len(versions) == 3
    assert updates[0].advantage == updates[0].reward != 0
    decay, num, den = 0.95, 0.0, 0.0
    for u in updates:   # the baseline before each child: the unbiased average of the rewards before it
        expected = u.reward - (num / den if den else 0.0)
        assert u.advantage == pytest.approx(expected, abs=1e-12)
        num, den = decay * num + (1 - decay) * u.reward, decay * den + (1 - decay)


def test_reinforce_minibatch_update_is_made_from_the_recorded_choices_with_truncated_weights():
    """Reinforce with B=4: each update is one Adam step along the mean, over exactly the
    four children's records, of min(1, p_now/p_sampled) * advantage * d log p(choices),
    computed here by hand for independent softmaxes."""
    B = 4
    config, store, space = setup_run("reinforce", P=4, batch_size=B, keep_versions=1000)
    workers = [worker_on(config, store, space, seed) for seed in (0, 1)]
    for _ in range(13):   # two workers taking turns: children are sampled from older versions
        for w in workers:
            w.step()
    strategy = workers[0].strategy
    learned = check_learned_once(store, strategy, B)
    assert len(learned) >= 4
    versions = {v.version: v for v in chain(store, strategy)}
    records = children_records(store)
    offsets = np.concatenate([[0], np.cumsum(space.decisions)])
    for v in versions.values():
        if v.parent is None:
            continue
        parent = versions[v.parent]
        z = parent.params["logits"].astype(np.float64)
        grad = np.zeros_like(z)
        for child in [u.child for u in v.recent[-(v.updates - parent.updates):]]:
            m = records[child]["metrics"]
            advantage = next(u.advantage for u in v.recent if u.child == child)
            logp_now, onehots = 0.0, []
            for k, c in enumerate(m["policy_choices"]):
                logits = z[offsets[k]:offsets[k + 1]]
                p = np.exp(logits - logits.max())
                p /= p.sum()
                logp_now += math.log(p[c])
                onehots.append(np.eye(len(p))[c] - p)
            weight = min(1.0, math.exp(logp_now - m["policy_logp"]))
            grad += weight * advantage * np.concatenate(onehots)
        expected, _ = adam_ascent(parent.params, parent.moments, {"logits": grad / B}, parent.steps + 1, 0.01)
        np.testing.assert_allclose(v.params["logits"], expected["logits"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_reinforce_weighs_a_stale_child_by_its_truncated_importance_weight(direction):
    """A child sampled by version n and learned from after later updates: its step is
    min(1, p_now / p_sampled) times the on-policy one (never more)."""
    config, store, space = setup_run("reinforce", P=4, keep_versions=1000, learning_rate=0.2)
    worker = worker_on(config, store, space, 0)
    for _ in range(5):
        worker.step()
    strategy = worker.strategy
    old, _ = strategy.latest()
    choices, logp = strategy.model.sample(old.params, np.random.default_rng(7))
    for _ in range(12):   # later updates move the policy on
        worker.step()
    base, _ = strategy.latest()
    logp_now = strategy.model.forward(base.params, choices).logp
    assert abs(logp_now - logp) > 1e-3
    reward = base.baseline + direction * 0.3
    note = {"policy": "reinforce", "policy_version": old.version, "policy_choices": list(choices),
            "policy_logp": logp}
    strategy.observe(Published("stale-child", reward, None, Proposal(note=note), {}, "w9"))
    new, _ = strategy.latest()
    assert new.parent_id == base.id and new.recent[-1].child == "stale-child"
    weight = min(1.0, math.exp(logp_now - logp))
    grad = strategy.model.forward(base.params, choices).grad(weight * (reward - base.baseline), 0.0)
    expected, _ = adam_ascent(base.params, base.moments, grad, base.steps + 1, 0.2)
    np.testing.assert_allclose(new.params["logits"], expected["logits"], rtol=0, atol=1e-6)
    unweighted, _ = adam_ascent(base.params, base.moments,
                                strategy.model.forward(base.params, choices).grad(reward - base.baseline, 0.0),
                                base.steps + 1, 0.2)
    assert (weight < 1) == (not np.allclose(new.params["logits"], unweighted["logits"], rtol=0, atol=1e-7))


def test_racing_threads_learn_from_each_child_exactly_once_in_minibatches(caplog):
    B = 5
    config, store, space = setup_run("rl", P=4, batch_size=B, keep_versions=1000, hidden_size=16)
    workers = [worker_on(config, store, space, seed) for seed in range(5)]
    for _ in range(4):
        workers[0].step()
    with caplog.at_level(logging.WARNING, logger="evo.strategies"):
        race(workers, 14)
    lost = set(re.findall(r"policy update for (\S+) given up", caplog.text))
    learned = check_learned_once(store, workers[0].strategy, B, lost)
    assert len(learned) >= 10


def test_racing_threads_with_pruning_take_each_child_in_once(caplog):
    """Versions pruned while threads race: a slot made on a version pruned meanwhile is
    withdrawn and the child taken in again, never learned from twice nor silently dropped."""
    B = 3
    config, store, space = setup_run("reinforce", P=4, batch_size=B, keep_versions=2)
    workers = [worker_on(config, store, space, seed) for seed in range(6)]
    for _ in range(4):
        workers[0].step()
    with caplog.at_level(logging.WARNING, logger="evo.strategies"):
        race(workers, 12)
    lost = set(re.findall(r"policy update for (\S+) given up", caplog.text))
    strategy = workers[0].strategy
    head = chain(store, strategy)[-1]
    learned = [u.child for u in head.recent]
    assert len(learned) == len(set(learned)) == head.updates   # all of them: fewer than MAX_RECENT
    waiting = [r.child for r in intake_of(store, strategy, head)]
    assert set(learned) | set(waiting) == set(children_records(store)) - lost
    assert not set(learned) & set(waiting) and len(learned) >= 30 and head.updates % B == 0
    assert set(store.policy.intake()) <= set(store.policy.policy_versions())   # pruned with their versions


def test_a_version_with_pending_children_from_before_intake_records_learns_from_them_first():
    B = 4
    config, store, space = setup_run("rl", P=4, batch_size=B, keep_versions=1000, hidden_size=16)
    worker = worker_on(config, store, space, 0)
    for _ in range(8):
        worker.step()
    strategy = worker.strategy
    head, _ = strategy.latest()
    assert head.version == 1 and not store.policy.intake().get(1)
    legacy = json.loads(head.to_bytes())
    legacy.update(version=2, parent=1, parent_id=head.id, id="0" * 32, updates=head.updates + 2,
                  pending=[{"child": f"old-{i}", "choices": [i] * 6, "logp": -2.0, "sampled": 1, "advantage": 0.1}
                           for i in range(2)])
    assert store.policy.create_policy(2, json.dumps(legacy).encode())
    for _ in range(2):   # B - 2 children: one waits in the intake, the second makes the update
        worker.step()
    assert store.policy.intake()[2] == [0]
    new = parse_policy(store.policy.read_policy(3), strategy=strategy.name, decisions=strategy.space.decisions,
                       shapes=strategy.shapes, version=3)
    assert new.parent_id == "0" * 32 and new.pending == () and new.updates == head.updates + 4
    assert new.steps == head.steps + 1


@pytest.mark.parametrize("mangle,message", [
    (lambda r: r.update(choices=[5] * 6), "choices"),
    (lambda r: r.update(choices=[True] * 6), "choices"),
    (lambda r: r.update(choices=[0] * 5), "choices"),
    (lambda r: r.update(logp=0.5), "logp"),
    (lambda r: r.update(reward=1e300), "reward"),
    (lambda r: r.update(sampled=99), "sampled"),
    (lambda r: r.update(time=1e12), "time"),
    (lambda r: r.update(base_id="another"), "taken in on another version"),
    (lambda r: r.update(slot=1), "stored as version"),
    (lambda r: r.update(strategy="reinforce"), "strategy"),
    (lambda r: r.update(child="x" * 300), "child"),
    (lambda r: r.update(extra=1), "unknown schema or keys"),
    (lambda r: r.update(kind="evo-policy"), "not a policy intake record"),
])
def test_a_hostile_intake_record_is_refused(mangle, message):
    config, store, space = setup_run("rl", P=4, batch_size=5, keep_versions=1000, hidden_size=16)
    worker = worker_on(config, store, space, 0)
    for _ in range(6):
        worker.step()
    strategy = worker.strategy
    head, _ = strategy.latest()
    assert store.policy.intake()[head.version] == [0, 1]
    data = store.policy.read_intake(head.version, 0)
    kwargs = dict(strategy="rl", decisions=tuple(space.decisions), version=head.version, slot=0, base_id=head.id,
                  now=store.policy.now())
    assert parse_intake(data, **kwargs).child
    raw = json.loads(data)
    mangle(raw)
    with pytest.raises(PolicyError, match=message):
        parse_intake(json.dumps(raw).encode(), **kwargs)


def test_config_keeps_batch_size_out_of_config_json_at_its_default_and_refuses_bad_values():
    plain = RunConfig(dataset="synthetic", search_space="nasbench201", selection="rl")
    assert "batch_size" not in json.loads(plain.to_json())["controller"]
    set20 = RunConfig(dataset="synthetic", search_space="nasbench201", selection="rl",
                      plugins={"controller": ControllerSettings(batch_size=20)})
    assert RunConfig.from_json(set20.to_json()).plugins["controller"].batch_size == 20
    for bad in (0, 257, 2.5, True):
        with pytest.raises(Exception, match="controller.batch_size"):
            ControllerSettings(batch_size=bad)
    assert make_strategy(plain, None, make_space(plain)).batch_size == 20
    reinforce = RunConfig(dataset="synthetic", search_space="nasbench201", selection="reinforce")
    assert make_strategy(reinforce, None, make_space(reinforce)).batch_size == 1


def evo(*args: str, timeout: float = 180) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "launch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


@pytest.mark.slow  # real worker processes, one SIGKILLed
def test_racing_processes_one_killed_learn_from_each_child_once(tmp_path):
    B = 3
    url = str(tmp_path / "pop")
    init = evo("init", url, "--dataset", "synthetic", "--search-space", "nasbench201", "-P", "4",
               "--synthetic-train-seconds", "0", "--selection", "rl", "--set", f"controller.batch_size={B}",
               "--set", "controller.keep_versions=1000", "--set", "controller.hidden_size=16")
    assert init.wait(60) == 0, init.stderr.read()
    procs = [evo("worker", url, "--quiet", "--max-individuals", "12", "--index", str(i)) for i in range(3)]
    # 40 individuals: when the others have finished it makes every B-th version itself, so
    # its 4th version is certain however the races went
    procs.append(evo("worker", url, "--quiet", "--max-individuals", "40", "--index", "3",
                     "--crash-at", "policy:before_create#4"))
    codes = [p.wait(180) for p in procs]
    assert codes[:3] == [0, 0, 0] and codes[3] == -9, [p.stderr.read()[-500:] for p in procs]
    store = open_store(url)
    config = RunConfig.from_json(store.runinfo.read_config())
    space = make_space(config)
    store = store.with_run(bounds=config.bounds, dna_validator=space.parse)
    strategy = make_strategy(config, store.policy, space)
    records = children_records(store)
    versions = chain(store, strategy)
    taken = {u.child for v in versions for u in v.recent} | {r.child for r in intake_of(store, strategy, versions[-1])}
    lost = set(records) - taken
    assert len(lost) == 1   # the killed worker's last child: published, the version it would make never created
    assert len(check_learned_once(store, strategy, B, lost)) >= 5


@pytest.mark.parametrize("mangle,message", [
    (lambda p: p["pending"][0].update(choices=[99] * 6), "choices"),
    (lambda p: p["pending"][0].update(choices=[0] * 5), "choices"),
    (lambda p: p["pending"][0].update(logp=1.5), "logp"),
    (lambda p: p["pending"][0].update(logp="-1"), "logp"),
    (lambda p: p["pending"][0].update(sampled=10**6), "sampled"),
    (lambda p: p["pending"][0].update(advantage=1e30), "advantage"),
    (lambda p: p["pending"][0].update(extra=1), "pending children must be objects"),
    (lambda p: p.update(pending=p["pending"] * 300), "pending must be a list"),
    (lambda p: p.update(pending={}), "pending must be a list"),
])
def test_a_version_with_a_hostile_pending_list_is_unusable(mangle, message):
    config, store, space = setup_run("rl", P=4, batch_size=5, keep_versions=1000, hidden_size=16)
    worker = worker_on(config, store, space, 0)
    for _ in range(9):
        worker.step()
    strategy = worker.strategy
    head, _ = strategy.latest()
    raw = json.loads(head.to_bytes())   # as a version written before intake records held pending children
    raw["pending"] = [{"child": "c-1", "choices": [0] * 6, "logp": -1.0, "sampled": head.version, "advantage": 0.1}]
    parse_policy(json.dumps(raw).encode(), strategy=strategy.name, decisions=strategy.space.decisions,
                 shapes=strategy.shapes, version=head.version)
    mangle(raw)
    with pytest.raises(PolicyError, match=message):
        parse_policy(json.dumps(raw).encode(), strategy=strategy.name, decisions=strategy.space.decisions,
                     shapes=strategy.shapes, version=head.version)


def test_a_version_written_before_minibatches_still_reads():
    config, store, space = setup_run("rl", P=4, keep_versions=1000, hidden_size=16)
    worker = worker_on(config, store, space, 0)
    for _ in range(6):
        worker.step()
    strategy = worker.strategy
    head, _ = strategy.latest()
    raw = json.loads(head.to_bytes())
    del raw["pending"]
    old = parse_policy(json.dumps(raw).encode(), strategy=strategy.name, decisions=strategy.space.decisions,
                       shapes=strategy.shapes, version=head.version)
    assert old.pending == () and old.updates == head.updates

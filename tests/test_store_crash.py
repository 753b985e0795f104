"""Writers killed with SIGKILL never leave a torn individual visible; ``check`` finds what
they left behind and ``check(repair=True)`` removes it.

Two kinds of crash: at every step boundary of publish and kill (the crash points of
``storage.crash``: the subprocess builds its store with ``crash_hook(point)``), and at random
times in a publish/kill loop. On a local directory and on the GCS emulator.
"""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest

import storage
from helpers_store import publish_random, referenced_payloads, start_helper, temp_files

POINTS = storage.CRASH_POINTS

LOCAL_ONLY = {"write:after_temp", "create:after_temp", "create:after_link"}  # temp-file steps
PUBLISH_POINTS = [p for p in POINTS if p.split(":")[0] in ("write", "create", "publish")]
VISIBLE_AFTER = {"create:after_link", "publish:after_commit"}


def _url(kind: str, request: pytest.FixtureRequest, tmp_path) -> str:
    return str(tmp_path / "pop") if kind == "local" else request.getfixturevalue("gcs_bucket_url")


def _fresh_store(url: str, **kwargs) -> tuple[storage.PopulationStore, list[storage.IndividualInfo]]:
    store = storage.open_store(url, **kwargs)
    store.runinfo.init_config("{}")
    rng = np.random.default_rng(0)
    return store, [publish_random(store, rng, fitness=f)[0] for f in (0.2, 0.5, 0.8)]


def _run_crashing(point: str, *args: str) -> None:
    proc = start_helper("helpers_store_crash.py", "--crash-at", point, *args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, \
        f"expected a SIGKILL at {point}, got {proc.returncode}: {err[-2000:]}"


def _assert_all_listed_are_whole(store: storage.PopulationStore, quarantined: int = 0) -> None:
    for info in store.population.list_alive():
        assert store.population.read_individual(info) is not None, f"{info.id} is listed but not whole"
    assert len(store.history.list_quarantine()) == quarantined


def _assert_repair_cleans(store: storage.PopulationStore, quarantined: int = 0) -> None:
    repaired = store.check(repair=True, grace_seconds=0)
    assert repaired.ok, repaired.problems
    after = store.check(grace_seconds=0)
    assert after.ok and after.problems == () and after.orphans == after.zombies == 0
    assert set(store.backend.list("payload")) == referenced_payloads(store)
    assert temp_files(store) == []
    _assert_all_listed_are_whole(store, quarantined)


def test_the_fault_hook_sees_every_point_in_protocol_order(tmp_path):
    """The store and the local backend call the injected hook at each step boundary: every
    point in CRASH_POINTS, in the order the protocols take them (no environment involved)."""
    seen: list[str] = []
    reached: set[str] = set()

    def hook(point: str) -> None:
        seen.append(point)
        reached.add(point)

    store = storage.open_store(str(tmp_path / "pop"), keep_best=1, fault=hook)
    store.runinfo.init_config("{}")
    rng = np.random.default_rng(0)
    seen.clear()
    victim, _, _ = publish_random(store, rng)
    assert seen == ["write:after_temp", "publish:after_payload", "publish:before_commit",
                    "create:after_temp", "create:after_link", "publish:after_commit"]
    seen.clear()
    assert store.with_run(keep_best=1).population.kill(victim, worker="w")  # with_run keeps the hook
    assert [p for p in seen if not p.startswith("create:")] == \
        ["kill:after_claim", "kill:after_keep", "kill:after_unlist"]
    corrupt, _, _ = publish_random(store, rng)
    store.backend.write(corrupt.key, b"{not json")
    seen.clear()
    assert store.population.read_individual(corrupt) is None
    assert "quarantine:after_record" in seen
    seen.clear()   # the decoded dataset's cache (storage.datacache)
    key = "0123456789abcdef"
    assert store.datacache.claim_data(key, 0, {"worker": "w"})
    store.datacache.write_data_part(key, 0, "train", b"arrays")
    assert store.datacache.commit_data(key, 0, {"parts": {}})
    assert [p for p in seen if p.startswith("data:")] == ["data:after_claim", "data:after_part", "data:before_commit"]
    seen.clear()   # a history roll-up (storage.rollup)
    for info in store.population.list_alive():
        store.population.kill(info, worker="w")
    assert store.history.roll_up(min_age=0, segment_records=1, max_segments=1).segments == 1
    assert [p for p in seen if p.startswith("rollup:")] == ["rollup:after_segment", "rollup:after_first_delete"]
    seen.clear()   # a learned strategy's next policy version (storage.policy)
    assert store.policy.create_policy(0, b"{}") and not store.policy.create_policy(0, b"{}")
    assert [p for p in seen if p.startswith("policy:")] == ["policy:before_create", "policy:after_create",
                                                           "policy:before_create"]
    seen.clear()   # a child taken into a version's intake
    assert store.policy.create_intake(0, 0, b"{}") and not store.policy.create_intake(0, 0, b"{}")
    assert [p for p in seen if p.startswith("policy:")] == ["policy:before_intake", "policy:after_intake",
                                                           "policy:before_intake"]
    assert reached == set(POINTS) and len(set(POINTS)) == len(POINTS)


def test_crash_hook_takes_a_point_and_a_hit_count():
    hook = storage.crash_hook("kill:after_claim#3")
    assert (hook.point, hook.nth) == ("kill:after_claim", 3)
    hook("publish:after_commit")
    hook("kill:after_claim")
    hook("kill:after_claim")  # the 2nd hit of 3: still alive
    assert hook.hits == 2
    assert storage.crash_hook("publish:after_payload").nth == 1
    for bad, words in [("nope", "unknown crash point 'nope' (one of: write:after_temp, "),
                       ("kill:after_claim#0", "whole number >= 1"), ("kill:after_claim#", "POINT#N"),
                       ("#2", "unknown crash point ''")]:
        with pytest.raises(ValueError, match=words.replace("(", r"\(")) as info:
            storage.crash_hook(bad)
        assert "\n" not in str(info.value)


@pytest.mark.slow  # processes killed mid-step
def test_a_crash_at_the_nth_hit_lets_the_first_ones_finish(tmp_path):
    url = str(tmp_path / "pop")
    store, before = _fresh_store(url)
    proc = start_helper("helpers_store_crash.py", "--crash-at", "publish:after_commit#2", "publish", url, "3")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert len(out.split()) == 1  # the first publish returned; the second died once visible
    assert len(store.population.list_alive()) == len(before) + 2
    _assert_all_listed_are_whole(store)
    assert store.check(grace_seconds=0).ok


@pytest.mark.slow  # processes killed mid-step
@pytest.mark.parametrize("kind, point", [("local", p) for p in PUBLISH_POINTS] +
                         [("gcs", p) for p in PUBLISH_POINTS if p not in LOCAL_ONLY])
def test_publisher_killed_at_each_step(kind, point, request, tmp_path):
    url = _url(kind, request, tmp_path)
    store, before = _fresh_store(url)
    _run_crashing(point, "publish", url, "1")

    listed = store.population.list_alive()
    assert len(listed) == len(before) + (1 if point in VISIBLE_AFTER else 0)
    _assert_all_listed_are_whole(store)
    # Young leftovers may belong to a publish in progress: only reported as pending.
    young = store.check(grace_seconds=3600)
    assert young.ok and young.orphans == 0
    two_hours_later = storage.PopulationStore(store.backend, clock=lambda: time.time() + 7200)
    assert two_hours_later.check(grace_seconds=3600).orphans == young.pending
    report = store.check(grace_seconds=0)
    leaves_garbage = point != "publish:after_commit"
    assert report.ok == (not leaves_garbage), report.problems
    assert (report.orphans > 0) == leaves_garbage
    assert young.pending == report.orphans
    assert report.torn == report.corrupt == report.zombies == 0
    _assert_repair_cleans(store)
    assert len(store.population.list_alive()) == len(listed)


@pytest.mark.slow  # processes killed mid-step
@pytest.mark.parametrize("kind", ["local", "gcs"])
def test_negative_control_commit_before_weights_is_caught(kind, request, tmp_path):
    """Proof the crash test has teeth: a publish that commits before its weights are
    written, killed in between, leaves a torn individual, and the checks above see it."""
    url = _url(kind, request, tmp_path)
    store, before = _fresh_store(url)
    _run_crashing("publish:after_commit", "publish", url, "1", "weights_after_commit")

    assert len(store.population.list_alive()) == len(before) + 1
    report = store.check(grace_seconds=0)
    assert not report.ok and report.torn == 1
    with pytest.raises(AssertionError, match="listed but not whole"):
        _assert_all_listed_are_whole(store)
    (q,) = store.history.list_quarantine()  # the reader quarantined it
    assert q["reason"] == "weights are missing"


@pytest.mark.slow  # processes killed mid-step
@pytest.mark.parametrize("kind", ["local", "gcs"])
def test_killer_killed_after_claiming_leaves_a_zombie(kind, request, tmp_path):
    url = _url(kind, request, tmp_path)
    store, (victim, *others) = _fresh_store(url)
    _run_crashing("kill:after_claim", "kill", url, victim.id)

    assert victim in store.population.list_alive()  # dead (history exists) but still listed
    assert store.population.read_individual(victim) is not None  # and still whole
    report = store.check(grace_seconds=0)
    assert not report.ok and report.zombies == 1 and report.alive == len(others)
    # A worker that picks it learns it is already dead, and unlists it.
    assert store.population.kill(victim, worker="other") is False
    assert victim not in store.population.list_alive()
    (rec,) = store.history.read_history()
    assert rec["id"] == victim.id and rec["killer"] == "crash-killer"
    report = store.check(grace_seconds=0)
    assert report.zombies == 0 and report.orphans == 1  # its weights
    _assert_repair_cleans(store)


@pytest.mark.slow  # processes killed mid-step
@pytest.mark.parametrize("kind", ["local", "gcs"])
def test_zombie_is_unlisted_by_repair(kind, request, tmp_path):
    url = _url(kind, request, tmp_path)
    store, (victim, *others) = _fresh_store(url)
    _run_crashing("kill:after_claim", "kill", url, victim.id)
    _assert_repair_cleans(store)
    assert store.population.list_alive() == others


@pytest.mark.slow  # processes killed mid-step
@pytest.mark.parametrize("kind", ["local", "gcs"])
def test_killer_killed_after_unlisting_leaves_orphan_weights(kind, request, tmp_path):
    url = _url(kind, request, tmp_path)
    store, (victim, *others) = _fresh_store(url)
    _run_crashing("kill:after_unlist", "kill", url, victim.id)

    assert store.population.list_alive() == others
    young = store.check(grace_seconds=3600)  # grace counts from the death
    assert young.ok and young.pending == 1
    report = store.check(grace_seconds=0)
    assert not report.ok and report.orphans == 1
    _assert_repair_cleans(store)
    assert len(store.history.read_history()) == 1


@pytest.mark.slow  # processes killed mid-step
@pytest.mark.parametrize("kind", ["local", "gcs"])
def test_killer_killed_after_keeping_weights(kind, request, tmp_path):
    url = _url(kind, request, tmp_path)
    store, (low, mid, high) = _fresh_store(url, keep_best=1)
    _run_crashing("kill:after_keep", "kill", url, high.id, "1")

    assert [k.id for k in store.history.list_kept()] == [high.id]
    assert store.check(grace_seconds=0).zombies == 1
    _assert_repair_cleans(store)
    assert store.population.list_alive() == [low, mid]
    kept = store.history.read_kept(high)
    assert kept is not None and kept.fitness == high.fitness


@pytest.mark.slow  # processes killed mid-step
@pytest.mark.parametrize("kind", ["local", "gcs"])
def test_reader_killed_while_quarantining(kind, request, tmp_path):
    url = _url(kind, request, tmp_path)
    store, (victim, *others) = _fresh_store(url)
    store.backend.write(victim.key, b"{not json")
    _run_crashing("quarantine:after_record", "kill", url, victim.id)

    assert store.check(grace_seconds=0).zombies == 1  # quarantined but still listed
    _assert_repair_cleans(store, quarantined=1)
    assert store.population.list_alive() == others
    assert [q["id"] for q in store.history.list_quarantine()] == [victim.id]


@pytest.mark.slow  # processes killed mid-step
@pytest.mark.parametrize("kind, rounds", [("local", 12), ("gcs", 6)])
def test_random_sigkills_never_leave_a_torn_individual(kind, rounds, request, tmp_path):
    url = _url(kind, request, tmp_path)
    store, _ = _fresh_store(url, keep_best=2)
    rng = np.random.default_rng(7)
    for r in range(rounds):
        proc = start_helper("helpers_store_crash.py", "churn", url, str(r))
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            raise AssertionError(f"churn did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(float(rng.uniform(0.0, 0.4)))  # a random moment in the publish/kill loop
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        _assert_all_listed_are_whole(store)
        for info in store.history.list_kept():
            assert store.history.read_kept(info) is not None
    report = store.check(grace_seconds=0)
    assert report.torn == report.corrupt == 0
    _assert_repair_cleans(store)
    history = store.history.read_history()
    assert len(history) == store.history.count_history() and all(h["reason"] == "aging" for h in history)
    assert len(store.history.list_kept()) >= min(2, len(history))
    assert json.loads(store.runinfo.read_config()) == {}

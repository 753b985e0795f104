"""The worker as a unit: every collaborator passed in (a memory:// store, a fake evaluator,
a fake clock, a recording observer), no directory, no torch, no subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest

import toy_space  # noqa: F401  (registers the toy space)
from evo.config import ConfigError, RunConfig
from evo.worker import WorkerOptions
from helpers_store import REPO
from helpers_worker import FakeClock, FakeEvaluator, make_worker


def test_seeds_exactly_p_then_keeps_the_population_at_p():
    worker, store, recorder = make_worker(P=4, evaluator=FakeEvaluator(lambda d: 0.1 * len(d.edges)))
    records = [worker.step() for _ in range(12)]
    assert [r["mutation"] for r in records[:4]] == ["initial"] * 4
    assert all(r["parent"] for r in records[4:])
    assert len(store.list_alive()) == 4 and store.count_history() == 8
    kills = [e for e in recorder.events if e[0] == "kill"]
    assert len(kills) == 8 and [e[0] for e in recorder.events].count("publish") == 12
    for r in records[4:]:   # pairwise: the parent was the fitter of the pair, the other died
        assert r["killed"] == r["selected_victim"]


def test_fake_clock_times_everything_and_ends_the_run():
    clock = FakeClock(tick=1.0)
    worker, store, recorder = make_worker(P=3, clock=clock)
    worker.options = WorkerOptions(max_seconds=30, heartbeat_interval=3600)
    stats = worker.run()
    assert 0 < stats.published < 30      # each step reads the clock: the fake minutes ran out
    assert all(t > 1.8e9 for _, _, t in recorder.events)
    (beat,) = store.list_workers()
    assert beat["info"]["state"] == "stopped" and beat["info"]["individuals"] == stats.published


def test_aging_kills_the_oldest_and_the_toy_space_plugs_in():
    worker, store, _ = make_worker(P=3, search_space="toy", selection="aging", tournament_size=2)
    for _ in range(3):
        worker.step()
    oldest = store.list_alive()[0].id
    record = worker.step()
    assert record["killed"] == oldest and record["mutation"] in ("resize", "depth")
    assert store.read_individual(store.find(record["id"])).dna["kind"] == "toy"


def test_a_child_that_fails_costs_that_child_only():
    evaluator = FakeEvaluator(fail_on="initial")
    worker, store, _ = make_worker(P=2, evaluator=evaluator)
    assert worker.step() is None and worker.stats.failures == 1
    assert store.list_alive() == []


def test_random_search_makes_fresh_children_and_inherits_nothing():
    evaluator = FakeEvaluator()
    worker, _, _ = make_worker(P=2, evaluator=evaluator, selection="random")
    records = [worker.step() for _ in range(5)]
    assert [r["mutation"] for r in records[2:]] == ["random"] * 3
    assert not any(c["inherited"] for c in evaluator.calls)


def test_a_space_without_an_inheritance_rule_refuses_inheritance():
    with pytest.raises(ConfigError, match="no weight-inheritance rule"):
        RunConfig(search_space="nasnet", inherit_weights=True)
    assert RunConfig(search_space="nasnet").inherit_weights is False
    assert RunConfig(search_space="nasnet").selection == "aging"
    assert RunConfig().inherit_weights is True and RunConfig().selection == "pairwise"


def test_a_unit_worker_needs_no_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import helpers_worker as t\n"
            "w, s, _ = t.make_worker(P=3)\n"
            "[w.step() for _ in range(6)]\n"
            "assert len(s.list_alive()) == 3, s.list_alive()\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO / "tests", capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]

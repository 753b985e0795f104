"""The worker as a unit: every collaborator passed in (a memory:// store, a fake evaluator,
a fake clock, a recording observer), no directory, no torch, no subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest

import storage
import toy_space  # noqa: F401  (registers the toy space)
from evo.config import ConfigError, RunConfig
from evo.strategies.evolution import AgingSettings
from evo.search.worker import WorkerOptions
from helpers_store import REPO
from helpers_worker import FakeClock, FakeEvaluator, make_worker


def test_seeds_exactly_p_then_keeps_the_population_at_p():
    worker, store, recorder = make_worker(P=4, evaluator=FakeEvaluator(lambda d: 0.1 * len(d.edges)))
    records = [worker.step() for _ in range(12)]
    assert [r["mutation"] for r in records[:4]] == ["initial"] * 4
    assert all(r["parent"] for r in records[4:])
    assert len(store.population.list_alive()) == 4 and store.history.count_history() == 8
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
    (beat,) = store.runinfo.list_workers()
    assert beat["info"]["state"] == "stopped" and beat["info"]["individuals"] == stats.published


def test_aging_kills_the_oldest_and_the_toy_space_plugs_in():
    worker, store, _ = make_worker(P=3, search_space="toy", selection="aging", plugins={"aging": AgingSettings(tournament_size=2)})
    for _ in range(3):
        worker.step()
    oldest = store.population.list_alive()[0].id
    record = worker.step()
    assert record["killed"] == oldest and record["mutation"] in ("resize", "depth")
    assert store.population.read_individual(store.population.find(record["id"])).dna["kind"] == "toy"


def test_a_child_that_fails_costs_that_child_only():
    evaluator = FakeEvaluator(fail_on="initial")
    worker, store, _ = make_worker(P=2, evaluator=evaluator)
    assert worker.step() is None and worker.stats.failures == 1
    assert store.population.list_alive() == []


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
            "assert len(s.population.list_alive()) == 3, s.population.list_alive()\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO / "tests", capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]


# ----- the circuit breaker, and what does not trip it -----

class FailingEvaluator(FakeEvaluator):
    """Every child fails to train."""

    def evaluate(self, child, **kwargs):
        self.calls.append({"mutation": child.mutation})
        raise RuntimeError("no child can be trained\nsecond line")


def run_quickly(worker, monkeypatch) -> list[float]:
    """Run the worker with its back-off pauses recorded, not slept."""
    import evo.search.worker as worker_module

    pauses: list[float] = []
    monkeypatch.setattr(worker_module.time, "sleep", lambda s: pauses.append(s))
    worker.run()
    return pauses


def test_the_breaker_stops_a_worker_whose_children_all_fail(monkeypatch):
    worker, store, _ = make_worker(P=8, evaluator=FailingEvaluator())
    worker.options = WorkerOptions(max_failed_children=3, heartbeat_interval=3600)
    run_quickly(worker, monkeypatch)
    assert worker.stats.failures == 3 and worker.stats.published == 0
    assert worker.stats.failed == ("3 children in a row failed (--max-failed-children 3); "
                                   "the last: RuntimeError: no child can be trained second line")
    (beat,) = store.runinfo.list_workers()
    assert beat["info"]["state"] == "failed" and beat["info"]["reason"] == worker.stats.failed


def test_the_breaker_trips_when_every_seed_failed_and_the_population_stays_empty(monkeypatch):
    # P=3 < K=10: the seeding slots run out after 3 failed seeds; the population stays empty
    # and nobody else will refill it, so the worker keeps making initial individuals until
    # the breaker trips (it used to wait for the population forever)
    import evo.search.worker as worker_module

    worker, store, _ = make_worker(P=3, evaluator=FailingEvaluator())
    worker.options = WorkerOptions(max_failed_children=10, heartbeat_interval=3600)
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        assert len(waits) < 100, "the worker waits for a population nobody will make"

    monkeypatch.setattr(worker_module.time, "sleep", sleep)
    worker.run()
    assert worker.stats.failures == 10 and worker.stats.published == 0
    assert worker.stats.failed.startswith("10 children in a row failed")
    assert {call["mutation"] for call in worker.evaluator.calls} == {"initial"}


def test_a_published_child_resets_the_breaker(monkeypatch):
    evaluator = FakeEvaluator()
    worker, _, _ = make_worker(P=4, evaluator=evaluator)   # two seeds fail: two are left to select from
    worker.options = WorkerOptions(max_failed_children=2, max_individuals=6, heartbeat_interval=3600)
    outcomes = iter([True, False, True, False, True, False, True, True, True, True])
    real = evaluator.evaluate

    def every_other(child, **kwargs):
        if not next(outcomes):
            raise RuntimeError("bad luck")
        return real(child, **kwargs)

    evaluator.evaluate = every_other
    run_quickly(worker, monkeypatch)
    assert worker.stats.failed is None and worker.stats.published == 6 and worker.stats.failures == 3


def test_a_strategy_bug_counts_toward_the_breaker_and_backs_off(monkeypatch):
    worker, store, _ = make_worker(P=2)
    worker.options = WorkerOptions(max_failed_children=4, heartbeat_interval=3600)

    def propose(population, rng):
        raise KeyError("no such parent")

    monkeypatch.setattr(worker.strategy, "propose", propose)
    pauses = run_quickly(worker, monkeypatch)
    assert worker.stats.published == 2            # the seeds; then every step fails in the strategy
    assert worker.stats.step_errors == 4 - 1 and pauses == [0.5, 1.0, 2.0]
    assert worker.stats.failed.startswith("4 children in a row failed") and "KeyError: 'no such parent'" in \
        worker.stats.failed
    assert store.runinfo.list_workers()[0]["info"]["state"] == "failed"


class FlakyPopulation:
    """A population facet whose listings fail with ``error`` ``outage`` times, then recover."""

    def __init__(self, population, outage: int, error: Exception):
        self._population, self.left, self.error = population, outage, error

    def list_alive(self):
        if self.left > 0:
            self.left -= 1
            raise self.error
        return self._population.list_alive()

    def __getattr__(self, name):
        return getattr(self._population, name)


@pytest.mark.parametrize("error", [OSError("connection reset"), storage.StoreError("bucket unreachable")])
def test_a_store_outage_backs_off_and_recovers_and_never_trips_the_breaker(monkeypatch, error):
    worker, store, _ = make_worker(P=2)
    worker.population = FlakyPopulation(store.population, outage=12, error=error)
    worker.options = WorkerOptions(max_failed_children=2, max_individuals=4, heartbeat_interval=3600)
    pauses = run_quickly(worker, monkeypatch)
    assert worker.stats.failed is None and worker.stats.published == 4
    assert worker.stats.step_errors == 12 and pauses[:3] == [0.5, 1.0, 2.0] and max(pauses) == 30.0
    assert store.runinfo.list_workers()[0]["info"]["state"] == "stopped"


def test_worker_options_refuse_a_breaker_that_never_counts():
    with pytest.raises(ValueError, match="max_failed_children"):
        WorkerOptions(max_failed_children=0)

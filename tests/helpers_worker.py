"""The worker's collaborators as fakes (a clock that moves only when told, an evaluator that
scores DNA with a function) and a unit worker over a memory:// store: no directory, no torch,
no subprocess. Shared by test_worker_unit and test_learned_strategy."""

from __future__ import annotations

import uuid

import numpy as np

import storage
from evo.config import RunConfig
from evo.search.observers import WorkerObserver
from evo.search.worker import Worker, WorkerOptions
from evo.spaces import make_space
from evo.strategies import make_strategy
from evo.train.outcome import Outcome
from evo.train.synthetic import safetensors_blob


class FakeClock:
    """Time that moves only when told (or by ``tick`` per call)."""

    def __init__(self, start: float = 1.8e9, tick: float = 0.0):
        self.now, self.tick = start, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


class FakeEvaluator:
    """Fitness from a function of the DNA; records what it was asked."""

    device_name = "fake"

    def __init__(self, fitness=lambda dna: 0.5, fail_on: str | None = None):
        self.fitness, self.fail_on = fitness, fail_on
        self.calls: list[dict] = []

    def prepare(self):
        pass

    def evaluate(self, child, *, parent_dna=None, parent_weights=None, seed=0, progress=None):
        self.calls.append({"mutation": child.mutation, "inherited": parent_weights is not None})
        if child.mutation == self.fail_on:
            raise RuntimeError("this child cannot be trained")
        return Outcome(fitness=float(self.fitness(child)), weights=safetensors_blob(b"w"), metrics={"train_s": 0.0})


class Recorder(WorkerObserver):
    def __init__(self):
        self.events: list[tuple] = []

    def born(self, ident, parent, fitness, worker, time):
        self.events.append(("publish", ident, time))

    def killed(self, victim, worker, time):
        self.events.append(("kill", victim, time))

    def lost_race(self, victim, worker, time):
        self.events.append(("race_loss", victim, time))


def make_worker(P: int = 4, evaluator=None, clock=None, **config):
    config = RunConfig(dataset="synthetic", population_size=P, **config)
    store = storage.open_store(f"memory://unit-{uuid.uuid4().hex}")
    store.runinfo.init_config(config.to_json())
    space = make_space(config)
    store = store.with_run(bounds=config.bounds, dna_validator=space.parse)
    recorder = Recorder()
    worker = Worker(store.population, store.runinfo, space, make_strategy(config, store.policy), evaluator or FakeEvaluator(),
                    np.random.default_rng(0), population_size=P, inherit_weights=config.inherit_weights,
                    clock=clock or FakeClock(), observers=[recorder],
                    options=WorkerOptions(max_individuals=12, heartbeat_interval=5))
    return worker, store, recorder

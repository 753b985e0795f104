"""Assembling a worker from a population URL: the one place that builds its collaborators.

The CLI (``evo worker``, ``evo launch``'s workers, SLURM array tasks) and benchmarks call
:func:`open_worker`; tests may build a :class:`~evo.search.worker.Worker` from fakes instead.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

import numpy as np

from evo.config import RunConfig
from evo.search.observers import OnPublish, WorkerObserver
from evo.spaces import make_space
from evo.train.modes import mode_for_dataset
from evo.stopping import StopRequested, StopSignals
from evo.strategies import make_strategy
from evo.search.worker import Worker, WorkerOptions, WorkerStats
from storage import DataCacheFacet, FaultHook, StoreError, open_store

log = logging.getLogger("evo.search.worker")


def make_evaluator(config: RunConfig, space: Any, device: str = "auto",
                   datacache: DataCacheFacet | None = None) -> Any:
    """The object that turns a child DNA into (fitness, weights, metrics) for this run.

    The synthetic and tabular (NAS-Bench-201 table) modes never import torch; every other
    dataset trains for real (the data is loaded by the evaluator's ``prepare``, which the
    worker calls once it is running; a user dataset through its decoded cache in
    ``datacache``, the store's facet).
    """
    mode = mode_for_dataset(config.dataset_name)
    if mode is not None:
        return mode.for_run(config, space)
    from evo.train.evaluator import TorchEvaluator
    return TorchEvaluator(space, config.dataset_spec, config.train, device, data_settings=config.data, datacache=datacache)


def open_worker(url: str, options: WorkerOptions = WorkerOptions(), *, device: str = "auto",
                index: int | None = None, observers: Iterable[WorkerObserver] = (),
                on_publish: Callable[[dict], Any] | None = None, evaluator: Any = None,
                stop: StopSignals | None = None, clock: Callable[[], float] = time.time,
                fault: FaultHook | None = None) -> Worker:
    """A worker on the population at ``url``: its store (with the run's bounds), search
    space, strategy, evaluator (``evaluator`` overrides it), random stream and observers.

    ``index`` seeds the random stream with the run's seed (array jobs give each worker one);
    None takes fresh entropy. ``on_publish`` is a shorthand observer. ``fault``: the
    store's crash points (tests; ``evo worker --crash-at``). Raises StoreError or
    ConfigError (one line) when the population or its config cannot be used, StoreError
    too when ``config.json`` is not the one ``evo init`` wrote (its seal does not match).
    """
    store = open_store(url, fault=fault)
    text = store.runinfo.read_config()
    config = RunConfig.from_json(text)
    seal = store.runinfo.config_seal(text)
    if not seal.trusted:
        raise StoreError(f"{seal.problem}; workers refuse to run against it")
    if seal.state == "legacy":
        log.warning("%s", seal.problem)
    space = make_space(config)
    store = store.with_run(keep_best=config.keep_best, bounds=config.bounds, dna_validator=space.parse)
    strategy = make_strategy(config, store.policy, space)
    if evaluator is None:
        evaluator = make_evaluator(config, space, device, store.datacache)
    entropy = [config.seed, index] if index is not None else None
    watchers = list(observers) + ([OnPublish(on_publish)] if on_publish else [])
    return Worker(store.population, store.runinfo, space, strategy, evaluator, np.random.default_rng(entropy),
                  population_size=config.population_size, inherit_weights=config.inherit_weights,
                  clock=clock, observers=watchers, options=options, stop=stop, history=store.history)


def run_worker(url: str, options: WorkerOptions = WorkerOptions(), *, stop: StopSignals | None = None,
               **kwargs: Any) -> WorkerStats:
    """Open a worker on ``url`` (see :func:`open_worker`), run it, return its stats.

    A stop signal that arrives while the worker is being assembled returns stats with
    ``stopped_by`` set and nothing written.
    """
    stop = stop if stop is not None else StopSignals()
    try:
        worker = open_worker(url, options, stop=stop, **kwargs)
    except StopRequested as s:
        stats = WorkerStats(options.worker_id or "-")
        stats.stopped_by = s.signal_name
        return stats
    return worker.run()

"""The stateless worker loop: select, make a child, evaluate, publish, kill. No coordinator.

A worker is assembled from collaborators that are passed in (``evo.search.assemble`` does it from
a URL for the CLI; tests pass fakes): the store's ``population`` and ``runinfo`` facets
(and its ``history``, for roll-ups), the search ``space`` (what a
DNA is and how it mutates), the search ``strategy`` (who is the parent, who dies), the
``evaluator`` (train and validate a child, or a synthetic stand-in), the ``rng`` and the
``clock``, plus ``observers`` (an event log, a benchmark) and the ``stop`` signals in force.

One step (:meth:`Worker.step`), as in the papers:

1. List the live population (one listing, or the last kill's; fitness and birth are in the names).
2. While the run is still being seeded (fewer than P and selection never started), claim
   one of P seeding slots (create-if-absent) and make the space's initial individual.
3. Otherwise ask the strategy for a proposal: a parent to read, copy and mutate (2017:
   the fitter of a random pair; 2019: the best of S sampled), a fresh random architecture
   (random search), or a DNA the strategy made, and the victim.
4. Evaluate the child (inheriting the parent's weights where the space and run allow).
5. Publish it (atomically), then kill the victim exactly once, or another one the strategy
   picks if the victim is gone, while the population would otherwise exceed P.

Publishing before killing is deliberate: a worker killed while training leaves the population
whole, a shortfall below P is refilled by children published without a kill, and a worker
killed at any moment loses at most the child it was making.

Liveness: a background thread (``evo.search.heartbeat``) writes the heartbeat every
``heartbeat_interval`` s whatever the main thread does. A stop signal (``evo.stopping``)
abandons the child being made, lets a publish + kill finish, writes a final ``stopped``
heartbeat and returns.

What fails, and what it costs (:mod:`evo.errors`):

* The store (``storage.StoreError``, a damaged entry, ``OSError`` from the backend, GCS's
  ``HttpError``): that step, logged and retried after a back-off (0.5 s doubling to 30 s),
  however long the outage lasts. Never counted by the breaker.
* A child that cannot be trained (any exception from ``evaluator.evaluate``: the space's
  ``build`` included): that child, counted in ``failures``.
* A step the strategy or the space failed (any other exception, from ``propose``,
  ``mutate``, ``parse``, ``initial``, ...): that step, logged with its traceback and retried
  after the same back-off; it counts as a failed child too.
* The circuit breaker: after ``options.max_failed_children`` failed children in a row (no
  child published between them) the worker stops: its final heartbeat says ``state:
  failed`` and the ``reason`` (one line naming the last cause), ``stats.failed`` holds the
  reason, and ``evo worker`` exits non-zero. One failure is bad luck; K in a row is a broken
  space, strategy, evaluator, dataset or device, and retrying forever would burn the
  allocation while the heartbeat looked healthy.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from evo.errors import PluginError, StoreFailure, caught, one_line
from evo.search.seams import Evaluator, SearchSpace, Strategy
from evo.search.heartbeat import HeartbeatThread, make_worker_id, scheduler_identity
from evo.search.observers import WorkerObserver
from evo.stopping import StopRequested, StopSignals
from evo.strategies import Population, Proposal, Published
from evo.search.worker_options import WorkerOptions, WorkerStats

if TYPE_CHECKING:
    from storage import HistoryFacet, PopulationFacet, RunInfoFacet

log = logging.getLogger("evo.search.worker")

MAX_STEP_BACKOFF_S = 30.0
MAX_KILL_TRIES = 20
SEEDED = "selection_started"          # the store's marker: every seeding slot was taken
FORCED_BEAT_MIN_EVAL_S = 1.0          # children that evaluate faster get no forced heartbeats (Worker.beat)


class ChildrenFailing(PluginError):
    """The circuit breaker: ``max_failed_children`` children in a row failed. One line, naming
    the last cause."""


def store_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the store failed (an outage, a damaged entry): retried, never
    counted by the circuit breaker."""
    errors: tuple[type[BaseException], ...] = (*caught(StoreFailure), OSError)
    retry = sys.modules.get("gcsfs.retry")   # GCS answers 5xx as gcsfs's HttpError (not an OSError)
    if retry is not None and isinstance(getattr(retry, "HttpError", None), type):
        errors += (retry.HttpError,)
    return errors


@dataclass
class _Child:
    """A child in the making: its DNA, the parent it came from (if any), and timings."""

    dna: Any
    proposal: Proposal
    parent: Any = None                    # storage.Individual
    parent_dna: Any = None
    timings: dict[str, float] = field(default_factory=dict)


class Worker:
    """One worker's loop over a population store; every collaborator is passed in.

    ``population`` and ``runinfo``: the store's facets it lists, reads, publishes and kills
    in, and marks and beats in; ``history`` (optional): where it rolls the history up now
    and then (without it, it never does). ``population_size``: P. ``inherit_weights``:
    children start from the parent's weights where the space has a rule for it. The other
    collaborators' types are in :mod:`evo.search.seams` (``evaluator.prepare()`` loads the
    data: run calls it while heartbeats already go on).
    """

    def __init__(self, population: PopulationFacet, runinfo: RunInfoFacet, space: SearchSpace, strategy: Strategy,
                 evaluator: Evaluator, rng: np.random.Generator, *, population_size: int,
                 inherit_weights: bool = True, clock: Callable[[], float] = time.time,
                 observers: Iterable[WorkerObserver] = (), options: WorkerOptions = WorkerOptions(),
                 stop: StopSignals | None = None, history: HistoryFacet | None = None):
        self.population, self.runinfo, self.history = population, runinfo, history
        self.space, self.strategy, self.evaluator = space, strategy, evaluator
        self.rng, self.clock = rng, clock
        self.population_size = population_size
        self.inherit_weights = inherit_weights and space.inherits_weights
        self.observers = list(observers)
        self.options = options
        self.stop = stop if stop is not None else StopSignals()
        self.worker_id = options.worker_id or make_worker_id()
        self.stats = WorkerStats(self.worker_id, started=clock())
        self.scheduler = scheduler_identity()
        self._last_beat = float("-inf")
        self._state = "starting"
        self._beat_lock = threading.Lock()
        self._heart: HeartbeatThread | None = None
        self._final_beat = False
        self._seeded = False   # the store's SEEDED marker is known to exist
        self._kill_listing: Population | None = None   # the last kill's listing, for the next selection
        self._last_eval_s = float("inf")   # how long the last child took to evaluate (see beat)
        self._failed_in_a_row = 0          # children failed since the last publish (the breaker)

    # ----- one step: the paper's loop -----
    def step(self) -> dict | None:
        """Make, evaluate and publish one individual; its log record (None if skipped)."""
        t0 = time.perf_counter()
        population = self.current_population()
        if self.seeding(population):
            child = _Child(self.space.initial(self.rng).replace(mutation="initial"), Proposal())
        else:
            if len(population) < 2 and self._failed_in_a_row:
                # Nothing to select from, and this worker's own children have been failing: the
                # seeds may all have failed, so nobody else will refill the population. Make an
                # initial individual again, so that it either refills it or counts towards the
                # circuit breaker (waiting here would wait forever).
                child = _Child(self.space.initial(self.rng).replace(mutation="initial"), Proposal())
            elif len(population) < 2:
                time.sleep(0.2)   # the population is being repaired by others; nothing to select from
                return None
            else:
                child = self.make_child(self.strategy.propose(population, self.rng))
            if child is None:
                return None       # the parent vanished or was quarantined: select again
        child.timings["select_s"] = time.perf_counter() - t0
        outcome = self.evaluate(child)
        if outcome is None:
            return None
        with self.stop.critical():   # a stop signal now waits until the kill is done
            return self.publish_and_kill(child, outcome, t0)

    def current_population(self) -> Population:
        """The live population, oldest first, from one listing: the last kill's (less its
        victims) if none was taken since; back to back, a new one would show the same."""
        listing, self._kill_listing = self._kill_listing, None
        if listing is None:
            listing = Population(tuple(self.population.list_alive()), self.population_size)
        return listing

    def seeding(self, population: Population) -> bool:
        """True when this step makes one of the P initial individuals (a slot was claimed).

        Once this worker has seen the store's ``selection_started`` marker (or made it), it
        never asks again: the marker is never removed, and asking cost a write per child.
        """
        if self._seeded:
            return False
        if len(population) >= self.population_size:
            self.runinfo.mark(SEEDED)
            self._seeded = True
            return False
        if self.runinfo.has_mark(SEEDED) or not self._claim_seed_slot(len(population)):
            self._seeded = True
            return False
        self.beat("seeding")
        return True

    def make_child(self, proposal: Proposal) -> _Child | None:
        """The proposal's child DNA: a mutated copy of the parent, a fresh random one, or the
        strategy's own. None when the parent cannot be read any more."""
        self.beat("selecting")
        if proposal.dna is not None:
            return _Child(proposal.dna, proposal)
        if proposal.parent is None:
            return _Child(self.space.random(self.rng).replace(mutation="random"), proposal)
        t = time.perf_counter()
        parent = self.population.read_individual(proposal.parent)
        read_s = time.perf_counter() - t
        if parent is None:
            return None
        t = time.perf_counter()
        parent_dna = self.space.parse(parent.dna)
        dna = self.space.mutate(parent_dna, self.rng)
        return _Child(dna, proposal, parent, parent_dna,
                      {"read_parent_s": read_s, "mutate_s": time.perf_counter() - t})

    def evaluate(self, child: _Child) -> Any:
        """Train and validate the child (an Outcome), or None if it failed: a child that
        cannot be built or trained costs that child, never the run."""
        self.beat("training", force=self._last_eval_s >= FORCED_BEAT_MIN_EVAL_S)
        seed = int(self.rng.integers(0, 2**31 - 1))
        inherit = self.inherit_weights and child.parent is not None
        t = time.perf_counter()
        try:
            return self.evaluator.evaluate(child.dna, parent_dna=child.parent_dna,
                                           parent_weights=child.parent.weights if inherit else None,
                                           seed=seed, progress=lambda: self.beat())
        except Exception as exc:
            log.warning("child of %s (%s) failed: %s", child.parent.id if child.parent else "-",
                        child.dna.mutation, one_line(exc, with_type=True))
            self.child_failed(exc)
            return None
        finally:
            self._last_eval_s = time.perf_counter() - t

    def child_failed(self, exc: BaseException) -> None:
        """Count a failed child; ChildrenFailing once ``max_failed_children`` failed in a row."""
        self.stats.failures += 1
        self._failed_in_a_row += 1
        limit = self.options.max_failed_children
        if self._failed_in_a_row >= limit:
            raise ChildrenFailing(f"{self._failed_in_a_row} children in a row failed (--max-failed-children "
                                  f"{limit}); the last: {one_line(exc, with_type=True)}") from exc

    def publish_and_kill(self, child: _Child, outcome: Any, t0: float) -> dict:
        """Publish the child, then kill one individual if the population is above P."""
        metrics = {**outcome.metrics, **child.timings, **dict(child.proposal.note)}
        parent_id = child.parent.id if child.parent is not None else None
        t = time.perf_counter()
        info = self.population.publish(child.dna.to_dict(), outcome.weights, parent=parent_id,
                                  mutation=child.dna.mutation, fitness=outcome.fitness,
                                  worker=self.worker_id, metrics=metrics)
        publish_s = time.perf_counter() - t
        for observer in self.observers:
            observer.born(info.id, parent_id, outcome.fitness, self.worker_id, self.clock())
        self.stats.published += 1
        self._failed_in_a_row = 0
        if self.stats.best_fitness is None or outcome.fitness > self.stats.best_fitness:
            self.stats.best_fitness = outcome.fitness
        t = time.perf_counter()
        # Seeds kill too when the population is already full: a seed that was still training
        # when selection started would otherwise leave the population at P + 1 for good.
        killed = self._kill_one(child.proposal.victim, exclude=info.id)
        if killed:
            self._roll_up_soon()
        record = {
            "id": info.id, "parent": parent_id, "mutation": child.dna.mutation, "fitness": outcome.fitness,
            "killed": killed, "selected_victim": child.proposal.victim.id if child.proposal.victim else None,
            "dna_hash": child.dna.content_hash(), "worker": self.worker_id, "time": self.clock(),
            "train_s": metrics.get("train_s", 0.0), "inherited": metrics.get("inherited_fraction", 0.0),
            "publish_s": publish_s, "kill_s": time.perf_counter() - t,
            "select_s": child.timings["select_s"], "wall_s": time.perf_counter() - t0, "metrics": metrics,
        }
        log.info("published %s parent=%s mutation=%s fitness=%.4f train=%.1fs inherited=%.0f%%%s",
                 info.id, parent_id or "-", child.dna.mutation, outcome.fitness, record["train_s"],
                 100 * record["inherited"], f" killed={killed}" if killed else "")
        for observer in self.observers:
            observer.published(record)
        if child.parent is not None or child.proposal.fresh or child.proposal.dna is not None:
            try:   # a strategy that cannot learn from this child costs that update, not the worker
                self.strategy.observe(Published(info.id, outcome.fitness, child.dna, child.proposal, metrics,
                                                self.worker_id))
            except Exception as exc:
                log.warning("strategy %s could not learn from %s: %s", self.strategy.name, info.id,
                            one_line(exc, with_type=True))
        self.beat("idle", force=self._last_eval_s >= FORCED_BEAT_MIN_EVAL_S)
        return record

    def _roll_up_soon(self) -> None:
        """Now and then roll sealed history records up, in a background thread (storage.rollup)."""
        if self.history is not None:
            o = self.options
            self.history.roll_up_soon(min_age=o.rollup_min_age, segment_records=o.rollup_records,
                                      interval=o.rollup_interval)

    def _claim_seed_slot(self, start: int) -> bool:
        """Claim one of the P seeding slots (create-if-absent), so that concurrent workers seed
        exactly P initial individuals. False once all are taken.

        A worker that dies holding a slot leaves the population one short; the first
        publishes after seeding then add children without killing until it is back at P.
        """
        for k in range(start, self.population_size):
            if self.runinfo.mark(f"seed-{k:06d}"):
                return True
        self.runinfo.mark(SEEDED)
        return False

    def _kill_one(self, victim: Any, exclude: str) -> str | None:
        """Kill the victim (or, if another worker got it first, another one the strategy picks).

        Kills only while the population is above P, so racing workers cannot drain it. When the
        listing shows more than one too many (left by a worker killed between its publish and its
        kill, or by the end of seeding), it kills one more, so the excess drains. Returns the first.
        """
        P = self.population_size
        first = None
        for _ in range(MAX_KILL_TRIES):
            self._kill_listing = Population(tuple(self.population.list_alive()), P)
            members = self._kill_listing.without(exclude)
            if len(members) + 1 <= P:
                return first
            if victim is None or not members.has(victim.id):
                victim = self.strategy.victim(members, self.rng)
                if victim is None:
                    return first
            if self.population.kill(victim, worker=self.worker_id, reason=self.strategy.name):
                self._kill_listing = self._kill_listing.without(victim.id)
                self.stats.killed += 1
                for observer in self.observers:
                    observer.killed(victim.id, self.worker_id, self.clock())
                if first is None and len(members) > P:
                    first, victim = victim.id, None   # still above P after this kill: drain one more
                    continue
                return first or victim.id
            self.stats.race_losses += 1
            for observer in self.observers:
                observer.lost_race(victim.id, self.worker_id, self.clock())
            victim = None
        return first

    # ----- heartbeat -----
    def beat(self, state: str | None = None, force: bool = False) -> None:
        """Record the worker's state and get it into its heartbeat.

        ``force``: write it now, here (at the start and end of each child's training, which
        keeps concurrent workers' publishes spread out), but only while children take
        ``FORCED_BEAT_MIN_EVAL_S`` or more to evaluate: for zero-cost children two fsynced
        writes per child were a third of its time. Otherwise the heartbeat thread writes it
        soon after a state change and every ``heartbeat_interval`` seconds; without the
        thread (a caller driving :meth:`step`), here, at most every 2 s.
        """
        changed = state is not None and state != self._state
        if state:
            self._state = state
        if self._heart is not None and not force:
            if changed:
                self._heart.poke()
            return
        if not force and self.clock() - self._last_beat < 2.0:
            return
        self._write_beat()

    def _write_beat(self, final: bool = False) -> None:
        with self._beat_lock:
            if self._final_beat:
                return   # the final heartbeat is written: a late beat must not overwrite it
            self._final_beat = final
            now = self.clock()
            self._last_beat = now
            s = self.stats
            info = {
                "worker": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(),
                "state": self._state, "started": s.started, "last_seen": now,
                "interval": self.options.heartbeat_interval,
                "individuals": s.published, "kills": s.killed, "race_losses": s.race_losses,
                "failures": s.failures, "step_errors": s.step_errors, "best_fitness": s.best_fitness,
                "device": str(self.evaluator.device_name)[:32],
            }
            if self.scheduler:
                info["scheduler"] = self.scheduler
            if self.options.log_path:
                info["log"] = self.options.log_path
            if s.stopped_by:
                info["stopped_by"] = s.stopped_by
            if s.failed:
                info["reason"] = s.failed
            try:
                self.runinfo.heartbeat(self.worker_id, info)
            except Exception as exc:  # a heartbeat that cannot be written must not stop the work
                log.warning("heartbeat not written: %s", one_line(exc, with_type=True))


    # ----- the loop -----
    def run(self) -> WorkerStats:
        """Loop until a limit is reached, a stop signal arrives (see ``stop``), or forever.

        Heartbeats are written by a background thread from the start (while the dataset
        loads, too) until the final ``stopped`` one (``failed`` when the circuit breaker
        stopped it). Returns what this worker did; ``stats.stopped_by`` names the signal that
        stopped it, if one did; ``stats.failed`` why the breaker did (see the module docstring).
        """
        opts = self.options
        start = self.clock()
        self._state = "starting"
        self._heart = HeartbeatThread(self._write_beat, opts.heartbeat_interval)
        self._heart.start()
        errors_in_a_row = 0
        store_failed = store_errors()
        try:
            self.evaluator.prepare()   # load the dataset now: heartbeats go on meanwhile
            while True:
                self.stop.check()
                if opts.max_individuals is not None and self.stats.published >= opts.max_individuals:
                    break
                if opts.max_seconds is not None and self.clock() - start >= opts.max_seconds:
                    break
                try:
                    self.step()
                    errors_in_a_row = 0
                except ChildrenFailing:
                    raise
                except store_failed as exc:
                    # The store (or one entry of it) failed this step: an outage or a damaged
                    # folder costs this step, never the worker. Back off, then try again.
                    # (A stop signal is not an Exception: it still ends the loop at once.)
                    errors_in_a_row += 1
                    self._step_failed(exc, errors_in_a_row, "the store")
                except Exception as exc:
                    # The strategy or the space failed this step (a bug in a plug-in): it costs
                    # this step and counts as a failed child (the breaker stops a persistent one).
                    errors_in_a_row += 1
                    if self.stats.step_errors == 0 or errors_in_a_row == 1:
                        log.exception("step failed in the strategy or the space")
                    self.child_failed(exc)
                    self._step_failed(exc, errors_in_a_row, "a plug-in")
        except ChildrenFailing as exc:
            self.stats.failed = one_line(exc)
            log.error("stopping: %s", self.stats.failed)
        except StopRequested as stop:
            self.stats.stopped_by = stop.signal_name
        finally:
            for _ in range(2):
                try:
                    self._finish()
                    break
                except StopRequested as stop:  # a signal landed just as the worker finished
                    self.stats.stopped_by = self.stats.stopped_by or stop.signal_name
        return self.stats

    def _step_failed(self, exc: BaseException, in_a_row: int, where: str) -> None:
        """Count a failed step, back off (0.5 s doubling to MAX_STEP_BACKOFF_S)."""
        self.stats.step_errors += 1
        pause = min(MAX_STEP_BACKOFF_S, 0.5 * 2 ** min(in_a_row - 1, 8))
        log.warning("step failed in %s (%s); trying again in %.1f s", where, one_line(exc, with_type=True), pause)
        self.beat("waiting")
        time.sleep(pause)

    def _finish(self) -> None:
        """Stop the heartbeat thread and write the final ``stopped`` (or ``failed``) heartbeat."""
        self.stop.close()   # from here on a signal is only recorded
        if self.stats.stopped_by:
            log.info("stopping on %s: the child in training (if any) is abandoned", self.stats.stopped_by)
        if self._heart is not None:
            self._heart.halt()
        if self.history is not None:   # a roll-up cut off at exit is safe, but leaves work for the next one
            try:
                self.history.wait_for_roll_up(timeout=30)
            except Exception as exc:  # the store may be unreachable at exit: the final heartbeat still goes
                log.warning("history roll-up not finished: %s", one_line(exc, with_type=True))
        self._state = "failed" if self.stats.failed else "stopped"
        try:
            self._write_beat(final=True)
        except Exception as exc:  # the store may be unreachable at exit; the heartbeat just ages
            log.warning("final heartbeat not written: %s", one_line(exc, with_type=True))

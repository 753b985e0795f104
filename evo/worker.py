"""The stateless worker loop: select, train, publish, kill. No coordinator, no local state.

One step of a worker (pairwise, the 2017 paper; aging, the 2019 paper; random search):

1. List the live population (one listing; fitness and birth come from the names).
2. While the run is still being seeded (fewer than P individuals and selection has never
   started), claim one of P seeding slots and make a fresh initial individual instead of
   selecting; once every slot is taken, selection starts.
3. Otherwise select a parent (pairwise: the fitter of two at random, the other is the
   victim; aging: the best of S sampled, the victim is the oldest; random: no parent, a
   fresh random architecture, the victim is the less fit of a random pair), copy its DNA,
   apply one mutation, inherit its weights where shapes match, train, evaluate on the
   validation split.
4. Publish the child (atomically), then kill the victim exactly once. If another worker
   killed it first, pick another victim the same way. Every publish (a seed's too) is
   followed by a kill exactly when the population would otherwise exceed P, so concurrent
   workers neither drain it nor let it grow.

Publishing before killing is deliberate: a worker killed while training leaves the
population whole, so the run heals itself (a shortfall below P is refilled by children
published without a kill). Everything lives in the store; killing a worker at any moment
loses at most the child it was training.

Liveness: a background thread writes the worker's heartbeat every ``heartbeat_interval``
seconds (10 by default) whatever the main thread is doing (loading a dataset, a long
training step), plus soon after each state change; the heartbeat carries its interval, so
``evo status`` calls a worker lost after a few missed beats without guessing. It also names
where the worker runs: host and pid, the scheduler's job (SLURM job / array task, Kubernetes
pod and completion index) and the log file when known.

Stopping: with ``stop=StopSignals([...])`` (``evo.stopping``) a stop signal abandons the
child being made, lets a publish + kill in progress finish, writes a final ``stopped``
heartbeat naming the signal, and returns. Neither a stop nor anything else that is not an
``Exception`` counts as a failed child.

Test hook: with ``EVO_EVENT_LOG=/path`` set, the worker appends one JSON line per publish,
won kill and lost kill race to that file (``evo.audit.EventLog``, O_APPEND), so that
``evo audit --events`` can prove no publish was lost and no victim had two killers. Off by
default.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from evo import selection
from evo.audit import EventLog
from evo.config import RunConfig
from evo.spaces import for_config
from evo.stopping import StopRequested, StopSignals
from storage import FaultHook, open_store

log = logging.getLogger("evo.worker")

MAX_STEP_BACKOFF_S = 30.0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class WorkerOptions:
    """How one worker process runs (everything about the run itself is in config.json)."""

    url: str
    max_individuals: int | None = None   # stop after publishing this many
    max_seconds: float | None = None      # stop starting new children after this long
    device: str = "auto"                  # auto | cpu | cuda | cuda:N
    index: int | None = None              # seed stream; None = fresh entropy per process
    worker_id: str | None = None
    heartbeat_interval: float = 10.0      # seconds between heartbeats (evo status: lost after 5 missed)
    log_path: str | None = None           # where this worker's log goes, shown by evo status


@dataclass
class WorkerStats:
    """What a worker did, also written into its heartbeat."""

    worker_id: str
    published: int = 0
    killed: int = 0
    race_losses: int = 0
    failures: int = 0
    step_errors: int = 0                  # steps the store made fail (retried after a pause)
    best_fitness: float | None = None
    started: float = field(default_factory=time.time)
    stopped_by: str | None = None        # the signal that stopped it (None: a limit, or still running)


def make_worker_id() -> str:
    """host-pid-random: unique per process, readable in `evo status`."""
    host = socket.gethostname().split(".")[0][:32] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def scheduler_identity(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Which scheduler job this process is, from its environment (empty when none).

    SLURM: ``kind=slurm``, ``job_id`` and, in an array, ``array_job_id`` and
    ``array_task_id``. Kubernetes: ``kind=kubernetes``, ``pod`` (the pod name, which
    Kubernetes puts in HOSTNAME) and ``index`` (JOB_COMPLETION_INDEX of an Indexed Job).
    """
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value[:128] if value else None

    if get("SLURM_JOB_ID"):
        out = {"kind": "slurm", "job_id": get("SLURM_JOB_ID")}
        if get("SLURM_ARRAY_JOB_ID") and get("SLURM_ARRAY_TASK_ID"):
            out["array_job_id"] = get("SLURM_ARRAY_JOB_ID")
            out["array_task_id"] = get("SLURM_ARRAY_TASK_ID")
        return out
    if get("KUBERNETES_SERVICE_HOST") or get("JOB_COMPLETION_INDEX"):
        out = {"kind": "kubernetes"}
        if get("HOSTNAME"):
            out["pod"] = get("HOSTNAME")
        if get("JOB_COMPLETION_INDEX"):
            out["index"] = get("JOB_COMPLETION_INDEX")
        return out
    return {}


class _HeartbeatThread(threading.Thread):
    """Calls ``write`` every ``interval`` seconds, and soon after :meth:`poke` (a state
    change), at most once per ``min_gap`` seconds, until :meth:`halt`. A failed write is
    logged (once per kind of error) and retried at the next beat: liveness must never stop
    the worker."""

    def __init__(self, write: Callable[[], None], interval: float, min_gap: float = 2.0):
        super().__init__(name="evo-heartbeat", daemon=True)
        self.write = write
        self.interval = interval
        self.min_gap = min(min_gap, interval)
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._errors: set[str] = set()

    def poke(self) -> None:
        """Write soon (the state changed)."""
        self._wake.set()

    def halt(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for a write in progress (at most ``timeout`` s)."""
        self._halt.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        last = float("-inf")
        while True:
            poked = self._wake.wait(timeout=max(0.0, last + self.interval - time.monotonic()))
            if self._halt.is_set():
                return
            gap = last + self.min_gap - time.monotonic()
            if poked and gap > 0 and self._halt.wait(gap):
                return
            self._wake.clear()
            try:
                self.write()
            except Exception as exc:  # the store may be briefly unreachable; the next beat retries
                kind = type(exc).__name__
                if kind not in self._errors:
                    self._errors.add(kind)
                    log.warning("heartbeat not written (will retry every %.0f s): %s: %s", self.interval, kind,
                                str(exc).splitlines()[0][:200] if str(exc) else "")
            last = time.monotonic()


def make_evaluator(config: RunConfig, device: str):
    """The object that turns a child DNA into (fitness, weights, metrics).

    The synthetic mode never imports torch; every other dataset trains for real.
    """
    if config.dataset_name == "synthetic":
        from evo.synthetic import SyntheticEvaluator
        return SyntheticEvaluator(config)
    from evo.evaluator import TorchEvaluator
    return TorchEvaluator(config, device)


class Worker:
    """One worker's loop over a population store."""

    def __init__(self, options: WorkerOptions, *, on_publish: Callable[[dict], None] | None = None,
                 evaluator: Any = None, stop: StopSignals | None = None, fault: FaultHook | None = None):
        interval = options.heartbeat_interval
        if not (isinstance(interval, (int, float)) and math.isfinite(interval) and 0 < interval <= 3600):
            raise ValueError(f"heartbeat interval must be in (0, 3600] seconds, got {interval!r}")
        self.options = options
        store = open_store(options.url, fault=fault)   # fault: tests' crash points (storage.crash)
        self.config = RunConfig.from_json(store.read_config())
        self.space = for_config(self.config)
        self.store = store.with_run(keep_best=self.config.keep_best, bounds=self.config.bounds,
                                    dna_validator=self.space.parse)
        self.worker_id = options.worker_id or make_worker_id()
        entropy = [self.config.seed, options.index] if options.index is not None else None
        self.rng = np.random.default_rng(entropy)
        self.stats = WorkerStats(self.worker_id)
        self.on_publish = on_publish
        self.events = EventLog.from_env()   # test hook: off unless $EVO_EVENT_LOG names a file
        self.stop = stop if stop is not None else StopSignals()
        self.scheduler = scheduler_identity()
        self._evaluator = evaluator
        self._last_beat = 0.0
        self._state = "starting"
        self._beat_lock = threading.Lock()
        self._heart: _HeartbeatThread | None = None
        self._final_beat = False

    @property
    def evaluator(self):
        """The child evaluator, made on first use (the torch one loads the dataset then)."""
        if self._evaluator is None:
            self._evaluator = make_evaluator(self.config, self.options.device)
        return self._evaluator

    # ----- heartbeat -----
    def beat(self, state: str | None = None, force: bool = False) -> None:
        """Record the worker's state and get it into its heartbeat.

        ``force``: write it now, here (the worker does at the start and end of each child's
        training, as it always has: keeping that timing keeps concurrent workers' publishes
        as spread out as before). Otherwise, while :meth:`run` runs, the heartbeat thread
        writes it soon after a state change and every ``heartbeat_interval`` seconds anyway;
        without the thread (a caller driving :meth:`step` itself) it is written here, at
        most every 2 s.
        """
        changed = state is not None and state != self._state
        if state:
            self._state = state
        if self._heart is not None and not force:
            if changed:
                self._heart.poke()
            return
        now = time.time()
        if not force and now - self._last_beat < 2.0:
            return
        self._write_beat()

    def _write_beat(self, final: bool = False) -> None:
        with self._beat_lock:
            if self._final_beat:
                return   # the final heartbeat is written: a late beat must not overwrite it
            self._final_beat = final
            now = time.time()
            self._last_beat = now
            s = self.stats
            info = {
                "worker": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(),
                "state": self._state, "started": s.started, "last_seen": now,
                "interval": self.options.heartbeat_interval,
                "individuals": s.published, "kills": s.killed, "race_losses": s.race_losses,
                "failures": s.failures, "step_errors": s.step_errors, "best_fitness": s.best_fitness,
                "device": getattr(self._evaluator, "device_name", self.options.device),
            }
            if self.scheduler:
                info["scheduler"] = self.scheduler
            if self.options.log_path:
                info["log"] = self.options.log_path
            if s.stopped_by:
                info["stopped_by"] = s.stopped_by
            try:
                self.store.heartbeat(self.worker_id, info)
            except Exception as exc:  # a heartbeat that cannot be written must not stop the work
                log.warning("heartbeat not written: %s", _one_line(exc))

    # ----- one step -----
    def step(self) -> dict | None:
        """Make, train and publish one individual; returns its log record (None if skipped)."""
        cfg = self.config
        t0 = time.perf_counter()
        population = sorted(self.store.list_alive(), key=lambda p: p.id)
        P = cfg.population_size
        parent = None
        victim = None
        read_s = mutate_s = 0.0
        seeding = len(population) < P and not self.store.has_mark("selection_started") \
            and self._claim_seed_slot(len(population))
        if seeding:
            self.beat("seeding")
            child = self.space.initial(self.rng).replace(mutation="initial")
        else:
            if len(population) >= P:
                self.store.mark("selection_started")
            if len(population) < 2:
                time.sleep(0.2)   # the population is being repaired by others; nothing to select from
                return None
            self.beat("selecting")
            if cfg.selection == "random":
                child = self.space.random(self.rng).replace(mutation="random")
                victim = selection.pairwise(population, self.rng)[1]
            else:
                if cfg.selection == "pairwise":
                    parent_info, victim = selection.pairwise(population, self.rng)
                else:
                    parent_info = selection.tournament(population, self.rng, cfg.tournament_size)
                t_read = time.perf_counter()
                parent = self.store.read_individual(parent_info, bounds=cfg.bounds,
                                                    dna_validator=self.space.parse)
                read_s = time.perf_counter() - t_read
                if parent is None:       # vanished or quarantined: select again
                    return None
            t_mut = time.perf_counter()
            if parent is not None:
                child = self.space.mutate(self.space.parse(parent.dna), self.rng)
            mutate_s = time.perf_counter() - t_mut
        select_s = time.perf_counter() - t0

        self.beat("training", force=True)
        seed = int(self.rng.integers(0, 2**31 - 1))
        parent_dna = self.space.parse(parent.dna) if parent is not None else None
        try:
            outcome = self.evaluator.evaluate(
                child,
                parent_dna=parent_dna,
                parent_weights=parent.weights if (parent is not None and cfg.inherit_weights) else None,
                seed=seed,
                progress=lambda: self.beat(),
            )
        except Exception as exc:  # a child that cannot be built or trained must not stop the run
            self.stats.failures += 1
            log.warning("child of %s (%s) failed: %s: %s", parent.id if parent else "-", child.mutation,
                        type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            return None

        metrics = dict(outcome.metrics)
        metrics["select_s"] = select_s
        metrics["read_parent_s"] = read_s
        metrics["mutate_s"] = mutate_s
        with self.stop.critical():   # a stop signal now waits until the kill is done
            return self._publish_and_kill(child, outcome, parent, victim, metrics, t0, select_s)

    def _publish_and_kill(self, child, outcome, parent, victim, metrics, t0, select_s) -> dict:
        t_pub = time.perf_counter()
        info = self.store.publish(
            child.to_dict(), outcome.weights,
            parent=parent.id if parent is not None else None,
            mutation=child.mutation, fitness=outcome.fitness, worker=self.worker_id, metrics=metrics,
        )
        publish_s = time.perf_counter() - t_pub
        if self.events:
            self.events.write("publish", id=info.id, worker=self.worker_id, time=time.time(),
                              parent=parent.id if parent is not None else None, fitness=outcome.fitness)
        self.stats.published += 1
        if self.stats.best_fitness is None or outcome.fitness > self.stats.best_fitness:
            self.stats.best_fitness = outcome.fitness

        t_kill = time.perf_counter()
        # Seeds kill too when the population is already full: a seed that was still training
        # when selection started would otherwise leave the population at P + 1 for good.
        killed = self._kill_one(victim, exclude=info.id)
        kill_s = time.perf_counter() - t_kill
        record = {
            "id": info.id, "parent": parent.id if parent is not None else None,
            "mutation": child.mutation, "fitness": outcome.fitness, "killed": killed,
            "selected_victim": victim.id if victim is not None else None,
            "dna_hash": child.content_hash(),
            "train_s": metrics.get("train_s", 0.0), "inherited": metrics.get("inherited_fraction", 0.0),
            "publish_s": publish_s, "kill_s": kill_s, "select_s": select_s,
            "wall_s": time.perf_counter() - t0, "metrics": metrics,
        }
        log.info("published %s parent=%s mutation=%s fitness=%.4f train=%.1fs inherited=%.0f%%%s",
                 info.id, record["parent"] or "-", child.mutation, outcome.fitness, record["train_s"],
                 100 * record["inherited"], f" killed={killed}" if killed else "")
        if self.on_publish:
            self.on_publish(record)
        self.beat("idle", force=True)
        return record

    def _claim_seed_slot(self, start: int) -> bool:
        """Claim one of the P seeding slots (create-if-absent), so that concurrent workers
        seed exactly P initial individuals instead of overshooting. False once all are taken.

        A worker that dies holding a slot leaves the population one short; the first
        publishes after seeding then add children without killing until it is back at P.
        """
        for k in range(start, self.config.population_size):
            if self.store.mark(f"seed-{k:06d}"):
                return True
        self.store.mark("selection_started")
        return False

    def _kill_one(self, victim, exclude: str) -> str | None:
        """Kill the victim (or, if another worker got it first, another one picked the same way).

        Kills only while the population is above P, so racing workers cannot drain it. When
        the listing shows more than one individual too many (left by a worker killed between
        its publish and its kill, or by the end of seeding), it kills one more, so the excess
        drains instead of persisting for the rest of the run. Returns the first victim.
        """
        cfg = self.config
        first = None
        for _ in range(20):
            population = [p for p in self.store.list_alive() if p.id != exclude]
            if len(population) + 1 <= cfg.population_size:
                return first
            alive_ids = {p.id for p in population}
            if victim is None or victim.id not in alive_ids:
                if cfg.selection == "aging":
                    victim = selection.oldest(population)
                elif len(population) >= 2:
                    victim = selection.pairwise(population, self.rng)[1]
                else:
                    return first
            if self.store.kill(victim, worker=self.worker_id, reason=cfg.selection):
                self.stats.killed += 1
                if self.events:
                    self.events.write("kill", id=victim.id, worker=self.worker_id, time=time.time())
                if first is None and len(population) > cfg.population_size:
                    first, victim = victim.id, None   # still above P after this kill: drain one more
                    continue
                return first or victim.id
            self.stats.race_losses += 1
            if self.events:
                self.events.write("race_loss", id=victim.id, worker=self.worker_id, time=time.time())
            victim = None
        return first

    # ----- the loop -----
    def run(self) -> WorkerStats:
        """Loop until a limit is reached, a stop signal arrives (see ``stop``), or forever.

        Heartbeats are written by a background thread from the start (while the dataset
        loads, too) until the final ``stopped`` one. Returns what this worker did;
        ``stats.stopped_by`` names the signal that stopped it, if one did.
        """
        opts = self.options
        start = time.time()
        self._state = "starting"
        self._heart = _HeartbeatThread(self._write_beat, opts.heartbeat_interval)
        self._heart.start()
        errors_in_a_row = 0
        try:
            self.evaluator  # noqa: B018  (load the dataset now: heartbeats go on meanwhile)
            while True:
                self.stop.check()
                if opts.max_individuals is not None and self.stats.published >= opts.max_individuals:
                    break
                if opts.max_seconds is not None and time.time() - start >= opts.max_seconds:
                    break
                try:
                    self.step()
                    errors_in_a_row = 0
                except Exception as exc:
                    # The store (or one entry of it) failed this step: an outage or a damaged
                    # folder costs this step, never the worker. Back off, then try again.
                    # (A stop signal is not an Exception: it still ends the loop at once.)
                    self.stats.step_errors += 1
                    errors_in_a_row += 1
                    pause = min(MAX_STEP_BACKOFF_S, 0.5 * 2 ** min(errors_in_a_row - 1, 8))
                    log.warning("step failed (%s); trying again in %.1f s", _one_line(exc), pause)
                    self.beat("waiting")
                    time.sleep(pause)
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

    def _finish(self) -> None:
        """Stop the heartbeat thread and write the final ``stopped`` heartbeat."""
        self.stop.close()   # from here on a signal is only recorded
        if self.stats.stopped_by:
            log.info("stopping on %s: the child in training (if any) is abandoned", self.stats.stopped_by)
        if self._heart is not None:
            self._heart.halt()
        self._state = "stopped"
        try:
            self._write_beat(final=True)
        except Exception as exc:  # the store may be unreachable at exit; the heartbeat just ages
            log.warning("final heartbeat not written: %s: %s", type(exc).__name__, str(exc).splitlines()[0][:200]
                        if str(exc) else "")


def run_worker(options: WorkerOptions, *, stop: StopSignals | None = None, **kwargs: Any) -> WorkerStats:
    """Open the store, run the loop, return the stats.

    ``stop``: the stop signals in force (an installed :class:`StopSignals`); a stop that
    arrives while the store is being opened returns stats with ``stopped_by`` set and
    nothing written.
    """
    stop = stop if stop is not None else StopSignals()
    try:
        worker = Worker(options, stop=stop, **kwargs)
    except StopRequested as s:
        stats = WorkerStats(options.worker_id or "-")
        stats.stopped_by = s.signal_name
        return stats
    return worker.run()

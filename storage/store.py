"""The store: one population directory (local/NFS, GCS or memory) that many stateless workers
read and write without a coordinator or locks, seen through its facets.

    store = storage.open_store(url)
    store.population   # the live individuals: list, read, publish, kill, quarantine
    store.history      # everyone alive and dead: census, history, roll-ups, quarantine, kept
    store.runinfo      # config.json, heartbeats, marks, launch records
    store.datacache    # the run's decoded datasets (data/)
    store.retrains     # final trainings (retrain/)
    store.policy       # the learned strategy's policy versions (policy/)

Each facet is a small class with its own contract (:mod:`storage.facets` has their
protocols, for typing a collaborator by the facets it uses); all of a store's facets share
one :class:`~storage.core.StoreCore` (backend, settings, memo, live listing).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dna as dna_lib

from .backend import Backend
from .check import CheckReport, check_store
from .core import StoreCore
from .crash import FaultHook
from .datacache import DataCache
from .history import History
from .policy import PolicyVersions
from .population import Population
from .retrain import RetrainQueue
from .runinfo import RunInfo
from .verify import DnaValidator


class PopulationStore:
    """One population directory; safe to use from many processes and machines at once.

    ``PopulationStore(backend, keep_best=K, dna_validator=..., bounds=..., clock=...,
    fault=...)``: see :class:`storage.core.StoreCore` for what each setting means. Its
    facets (``population``, ``history``, ``runinfo``, ``datacache``, ``retrains``,
    ``policy``) share those settings and what this object has read.
    """

    def __init__(self, backend: Backend, *, keep_best: int = 0,
                 dna_validator: DnaValidator | None = None, bounds: dna_lib.Bounds | None = None,
                 clock: Callable[[], float] = time.time, fault: FaultHook | None = None):
        core = StoreCore(backend, keep_best=keep_best, dna_validator=dna_validator, bounds=bounds,
                         clock=clock, fault=fault)
        self._core = core
        self.population = Population(core)
        self.history = History(core, self.population)
        self.runinfo = RunInfo(core)
        self.datacache = DataCache(core)
        self.retrains = RetrainQueue(core)
        self.policy = PolicyVersions(core)

    @property
    def url(self) -> str:
        """The store's URL (no credentials)."""
        return self._core.url

    @property
    def backend(self) -> Backend:
        """The backend the store is built over (tests, benchmarks and ``evo check`` only)."""
        return self._core.backend

    @property
    def keep_best(self) -> int:
        """How many of the best dead individuals keep their weights."""
        return self._core.keep_best

    @property
    def bounds(self) -> dna_lib.Bounds | None:
        """The run's DNA bounds every DNA read is validated against (None: structure only)."""
        return self._core.bounds

    @property
    def dna_validator(self) -> DnaValidator | None:
        """The check of DNA of kinds other than ``large_scale`` (None: the default)."""
        return self._core.dna_validator

    def now(self) -> float:
        """The store's clock (unix seconds): what it writes as times of births and deaths."""
        return self._core.now()

    def with_run(self, *, keep_best: int | None = None, bounds: dna_lib.Bounds | None = None,
                 dna_validator: DnaValidator | None = None) -> PopulationStore:
        """The same store with the run's settings (from its config); None keeps the current."""
        core = self._core
        return PopulationStore(
            core.backend, keep_best=core.keep_best if keep_best is None else keep_best,
            dna_validator=dna_validator or core.dna_validator, bounds=bounds or core.bounds,
            clock=core.clock, fault=core.fault)

    def check(self, repair: bool = False, grace_seconds: float = 3600.0,
              bounds: dna_lib.Bounds | None = None,
              dna_validator: DnaValidator | None = None, deep: bool = False) -> CheckReport:
        """Audit the store (and with ``repair`` fix it); see :mod:`storage.check`.

        ``deep`` also reads every live individual's weights to verify their checksum.
        """
        return check_store(self, repair=repair, grace_seconds=grace_seconds, bounds=bounds,
                           dna_validator=dna_validator or self._core.dna_validator, deep=deep)

"""Tabular fitness: NAS-Bench-201's recorded training results instead of training.

NAS-Bench-201 recorded the 200-epoch training of every one of its 15,625 cells with three
seeds; :mod:`evo.data.nasbench201_tables` reads those tables from the package that ships them.

A worker on an ``nb201-*`` dataset looks its child up: the fitness is the 200-epoch
validation accuracy of one of the cell's recorded seeds, chosen with the seed the worker's
random stream gives each child (so evaluating a cell twice is noisy, as training it twice
would be); the metrics record which trial it was and the trial's training time, and the
worker may sleep a scaled fraction of that time. The table is read once per process
(:mod:`evo.data.nasbench201_tables`).

Never imports torch: like synthetic workers, tabular workers stay light.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from evo.config_checks import require_number
from evo.registry import RunView
from evo.train.modes import FitnessMode, register_mode
from evo.data.nasbench201_tables import TABLE_FILES, Table, load_table
from evo.train.outcome import Outcome
from evo.train.synthetic import safetensors_blob


@dataclass(frozen=True)
class TabularSettings:
    """Runs on NAS-Bench-201's tables (``nb201-*`` datasets): ``time_scale`` is the fraction of a
    cell's recorded training time a worker sleeps before answering (0: answer at once), so that
    asynchronous workers interleave as they would if they trained."""

    time_scale: float = field(default=0.0, metadata={"help": "0..1, --tabular-time-scale"})

    written_always: ClassVar[bool] = True   # config.json has always carried this block

    def __post_init__(self) -> None:
        require_number("tabular.time_scale", self.time_scale, 0, 1)


@register_mode
class TabularEvaluator(FitnessMode):
    """Drop-in replacement for the torch evaluator (same ``evaluate`` signature) that looks a
    NAS-Bench-201 cell up in ``dataset``'s table."""

    name, datasets = "tabular", tuple(TABLE_FILES)
    settings_class = TabularSettings
    device_name = "table"

    @classmethod
    def for_run(cls, run: RunView, space: Any) -> "TabularEvaluator":
        return cls(run.dataset_name, run.settings_of("tabular"))

    def __init__(self, dataset: str, settings: TabularSettings):
        self.dataset = dataset
        self.settings = settings
        self.table: Table | None = None

    def prepare(self) -> None:
        """Read the table (once per process); the worker calls this while heartbeats run."""
        if self.table is None:
            self.table = load_table(self.dataset)

    def evaluate(self, child: Any, *, parent_dna: Any = None, parent_weights: bytes | None = None, seed: int = 0,
                 progress: Callable[[], Any] | None = None) -> Outcome:
        """Fitness = the recorded 200-epoch validation accuracy of one of the cell's training
        seeds, chosen by ``seed``; sleeps ``time_scale`` x that trial's training time first."""
        self.prepare()
        assert self.table is not None
        accs, times = self.table.trials(child.table_key())
        trial = int(np.random.default_rng(seed).integers(len(accs)))
        simulated = times[trial]
        t = time.perf_counter()
        if self.settings.time_scale > 0:
            end = time.monotonic() + self.settings.time_scale * simulated
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(left, 1.0))
                if progress:
                    progress()
        return Outcome(fitness=accs[trial], weights=safetensors_blob(b""), metrics={
            "train_s": time.perf_counter() - t, "eval_s": 0.0, "build_s": 0.0, "inherit_s": 0.0,
            "inherited_fraction": 0.0, "steps": 0, "tabular": self.dataset, "table_trial": trial,
            "simulated_train_s": simulated,
        })

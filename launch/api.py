"""evo's Python API: ``evo.open``, ``evo.init``, ``evo.launch`` (re-exported lazily by ``evo``).

A thin layer over the code of the commands, nothing of its own: a :class:`Run` reads the
store exactly as `evo status` does (``launch.views.snapshot``: one census of the store's
facets, broken entries skipped and counted), ``status()`` is `evo status --json`'s object,
``lineage()`` `evo lineage --json`'s, ``best()`` `evo best`'s verified individuals, a
:class:`Model` exports and evaluates with `evo best --export` and `evo evaluate`'s code, and
``init``/``launch`` parse their keyword arguments with the CLI's own parser, so the
validation and the one-line messages are the CLI's. Every error is an
:class:`evo.errors.EvoError` (the lower layers' registered errors are re-raised as one of its
kinds, with the same message).

Light: importing this module imports neither torch nor pandas; ``Model.module()`` imports
torch, ``Run.individuals()`` pandas (an extra: ``pip install 'evo[pandas]'``).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import weakref
from typing import Any

from evo.errors import EvoError, SettingsError, kind_of, one_line

from .cli import Parser, build_parser
from .errors import UserError, one_line_errors

__all__ = ["Run", "Model", "open", "init", "launch", "EvoError"]

# ``individuals()``'s columns, in order (``records()`` gives the same keys)
COLUMNS = ("id", "parent", "birth", "death", "killer", "fitness", "mutation", "worker", "parameters",
           "train_seconds", "policy_version", "alive")
PANDAS_MISSING = "Run.individuals() needs pandas: pip install 'evo[pandas]' (Run.records() gives plain dicts)"


def _evo_errors(func):
    """``func`` raising only :class:`EvoError`: a lower layer's registered error (a
    ``storage.StoreError``, which an ``except EvoError`` would not catch) is raised again as its
    kind with the same one-line message, and an OSError as the CLI words it."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EvoError:
            raise
        except OSError as exc:
            where = exc.filename if exc.filename is not None else "evo"
            raise EvoError(f"{where}: {exc.strerror or type(exc).__name__}") from None
        except Exception as exc:
            if not isinstance(exc, one_line_errors()):
                raise
            raise (kind_of(exc) or EvoError)(one_line(exc, limit=2000)) from None
    return wrapper


class _RaisingParser(Parser):
    """The CLI's parser, whose usage errors are raised (UserError, the CLI's message without
    ``evo CMD: error:``) instead of printed with an exit."""

    def error(self, message: str):
        raise UserError(" ".join(message.split()))


def parse(command: str, positionals: list[str], options: dict[str, Any], renamed: dict[str, str] | None = None
          ) -> argparse.Namespace:
    """The options of `evo COMMAND POSITIONALS ...` given as keyword arguments, parsed by the
    command's own parser: ``options`` by the option's name (``population_size=8``,
    ``set=["nasnet.filters=32"]``, ``no_augment=True``; None and False leave an option out; a
    list repeats it); ``renamed`` maps an API name to the option's (``workers`` -> ``n``).
    UserError for an unknown name or a value the CLI refuses, with the CLI's message."""
    parser = build_parser([command], _RaisingParser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    by_name: dict[str, argparse.Action] = {}   # by option name, and by dest
    shown: list[str] = []                      # one name per option, for the error
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            longs = [o[2:].replace("-", "_") for o in action.option_strings if o.startswith("--")]
            shown.append(longs[0] if longs else action.dest)
            for name in [*longs, action.dest]:
                by_name.setdefault(name, action)
    argv = [command, *positionals]
    renamed = renamed or {}
    for name, value in options.items():
        # a renamed option is reachable by its API name only
        action = None if name in renamed.values() and name not in renamed else by_name.get(renamed.get(name, name))
        if action is None:
            known = sorted([n for n in shown if n not in renamed.values()] + list(renamed))
            raise UserError(f"evo {command}: unknown setting {name!r} (known: {', '.join(known)})")
        opt = max(action.option_strings, key=len)
        if value is None or value is False:
            continue
        if action.nargs == 0:
            if value is not True:
                raise UserError(f"{opt}: give True or False, not {value!r}")
            argv.append(opt)
        else:
            for v in value if isinstance(value, (list, tuple)) else [value]:
                argv += [opt, str(v)]
    return parser.parse_args(argv)


class Run:
    """A run's population store, read as `evo status` reads it. Nothing is read until asked;
    the first question reads the whole run once (one census), later ones answer from that
    read until :meth:`refresh`, which reads only what is new (as `evo status --watch` does)."""

    def __init__(self, url: str, population: tuple[Any, Any]):
        self.url = url
        self._population = population   # (store, config) of open_population: it keeps what it read
        self._snap = None
        self._rows: list[dict[str, Any]] | None = None   # records() of the last read

    def __repr__(self) -> str:
        return f"evo.Run({self.url!r})"

    @property
    def config(self):
        """The run's :class:`evo.config.RunConfig` (its config.json)."""
        return self._population[1]

    @_evo_errors
    def refresh(self) -> Run:
        """Read what changed since the last read (the records read before are not read again:
        records never change); returns the run itself."""
        from .views.snapshot import take_snapshot

        self._snap = take_snapshot(self.url, spinner=False, history_dna=False, alive_dna=False,
                                   population=self._population)
        self._rows = None
        return self

    def _snapshot(self):
        if self._snap is None:
            self.refresh()
        return self._snap

    @_evo_errors
    def status(self, lost_after: float | None = None) -> dict[str, Any]:
        """`evo status URL --json`'s object (the same code) as of the last read."""
        from .commands.status import status_of

        return status_of(self._snapshot(), lost_after)

    @_evo_errors
    def records(self) -> list[dict[str, Any]]:
        """Every individual alive or dead as of the last read, one plain dict each (keys:
        :data:`COLUMNS`), by birth. Quarantined and broken entries are not individuals
        (``status()`` counts them); ``parameters``, ``train_seconds`` and ``policy_version``
        are None where the individual's metrics do not say."""
        return [dict(r) for r in self._all_rows()]

    def _all_rows(self) -> list[dict[str, Any]]:
        snap = self._snapshot()
        if self._rows is None:
            self._rows = individual_rows(snap)
        return self._rows

    @_evo_errors
    def individuals(self):
        """:meth:`records` as a pandas DataFrame (columns :data:`COLUMNS`, one row per
        individual; times are unix seconds). SettingsError saying how to install pandas
        when it is not."""
        try:
            import pandas as pd
        except ImportError:
            raise SettingsError(PANDAS_MISSING) from None
        rows = self._all_rows()
        return pd.DataFrame({c: [r[c] for r in rows] for c in COLUMNS}, columns=list(COLUMNS))

    @_evo_errors
    def lineage(self, ident: str = "best") -> dict[str, Any]:
        """`evo lineage URL ID --json`'s object: the chain of ``ident`` (an id, a unique prefix
        of one, or ``best``) back to its initial ancestor, oldest first."""
        from .views.lineage import lineage

        return lineage(self._snapshot(), ident)

    @_evo_errors
    def best(self, k: int = 1) -> list[Model]:
        """The ``k`` fittest live individuals that read and verify now (`evo best`'s code),
        fittest first, as :class:`Model` objects (fewer when fewer are alive)."""
        from .commands.best import best_individuals

        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise UserError(f"k must be a positive integer, not {k!r}")
        store, config = self._population
        return [Model(ind, self) for ind in best_individuals(store, config, k)]


class Model:
    """One individual of a run with its trained weights: ``dna`` (dict), ``id``, ``fitness``
    (validation accuracy), ``parent``, ``mutation``, ``metrics``. ``module()``, ``export()``
    and ``evaluate()`` use `evo best --export` and `evo evaluate`'s code."""

    def __init__(self, individual: Any, run: Run):
        self._ind = individual
        self.run = run
        self.id, self.fitness, self.dna = individual.id, individual.fitness, individual.dna
        self.parent, self.mutation, self.metrics = individual.parent, individual.mutation, individual.metrics
        self._dir: str | None = None

    def __repr__(self) -> str:
        return f"evo.Model({self.id!r}, fitness={self.fitness:.4f})"

    @_evo_errors
    def export(self, directory: str, onnx: bool = False, *, force: bool = False, cells: int | None = None,
               filters: int | None = None, dataset: str | None = None, seed: int = 0) -> dict[str, Any]:
        """`evo best URL --id ID --export DIRECTORY` (same options, same files: ``load.py``,
        ``model.json``, weights, ``test.npz``); returns model.json's content. ``onnx``: also
        ``model.onnx``."""
        from .export import export, parse_dataset
        from .onnx_export import require_onnx, write_onnx

        if onnx:
            require_onnx()   # before the torch export: a missing extra costs nothing
        store, config = self.run._population
        args = parse("best", [self.run.url], {"export": directory, "cells": cells, "filters": filters,
                                              "dataset": dataset, "seed": seed, "force": force})
        info = export(self._ind, config, self.run.url, args.export, cells=args.cells, filters=args.filters,
                      dataset=parse_dataset(args.dataset) if args.dataset else None, seed=args.seed,
                      force=args.force)
        if onnx:
            info = {**info, "onnx": write_onnx(directory)}
        return info

    def _exported(self) -> str:
        """A private export of this model (made once; removed with the object)."""
        if self._dir is None:
            path = tempfile.mkdtemp(prefix=f"evo-model-{self.id[:12]}-")
            weakref.finalize(self, shutil.rmtree, path, True)
            self.export(path, force=True)
            self._dir = path
        return self._dir

    @_evo_errors
    def module(self, device: str = "cpu"):
        """The trained network as a ``torch.nn.Module`` in eval mode, on ``device``: it takes
        images ``(N, C, H, W)`` as pixel values 0..255 (the normalisation is inside), as the
        export's ``load.py`` gives it."""
        import dna.portable as portable

        try:
            return portable.load(self._exported(), device)
        except portable.ExportError as exc:
            raise UserError(str(exc)) from None

    @_evo_errors
    def evaluate(self, split: str = "test", device: str = "cpu", batch_size: int | None = None,
                 onnx: bool = False) -> dict[str, Any]:
        """`evo evaluate DIR --json`'s object for this model: its accuracy on the run's test
        split (``split="val"``: the validation split); ``onnx``: of its ``model.onnx`` run by
        onnxruntime (exported once, as :meth:`export` with ``onnx=True`` makes it)."""
        from .commands.evaluate import evaluate

        directory = self._exported()
        if onnx and not os.path.exists(os.path.join(directory, "model.onnx")):
            from .onnx_export import write_onnx

            write_onnx(directory)
        args = parse("evaluate", [directory], {"split": split, "device": device, "batch_size": batch_size,
                                               "json": True, "onnx": onnx})
        result, _ = evaluate(args)
        return result


def individual_rows(snap) -> list[dict[str, Any]]:
    """The rows of :meth:`Run.records` from a ``launch.views.snapshot.Snapshot``."""
    def number(metrics: dict, key: str, kind: type):
        v = metrics.get(key)
        return kind(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    rows = []
    for r in sorted(snap.records.values(), key=lambda r: (r.birth, r.id)):
        m = r.metrics if isinstance(r.metrics, dict) else {}
        rows.append({"id": r.id, "parent": r.parent, "birth": r.birth, "death": r.death,
                     "killer": r.killer if not r.alive and r.killer not in (None, "None") else None,
                     "fitness": r.fitness, "mutation": r.mutation, "worker": r.worker or None,
                     "parameters": number(m, "params", int), "train_seconds": number(m, "train_s", float),
                     "policy_version": number(m, "policy_version", int), "alive": r.alive})
    return rows


@_evo_errors
def open(url: str) -> Run:   # noqa: A001 (evo.open, as optuna.load_study)
    """The run at ``url`` (a directory, ``file://`` or ``gs://``), as every command opens it:
    UserError (a SettingsError) when it holds no readable config."""
    from .views.snapshot import open_population

    return Run(url, open_population(url))


@_evo_errors
def init(url: str, dataset: str | None = None, **settings: Any) -> Run:
    """`evo init URL --dataset DATASET ...`: write the run's config (once) and return the run.
    ``settings`` are `evo init`'s options by name (``population_size=8, steps=50, seed=0,
    set=["nasnet.filters=32"]``), checked by its parser and code: the same errors, as
    :class:`evo.errors.EvoError`. A store holding the same config is left as it is."""
    from .commands.init import initialise

    args = parse("init", [url], {"dataset": dataset, **settings})
    initialise(args)
    return open(url)


@_evo_errors
def launch(url: str, workers: int = 2, max_seconds: float | None = None, **settings: Any) -> Run:
    """`evo launch URL -n WORKERS --max-seconds S ...`: start local workers (initialising the
    run from ``settings``, `evo launch`'s and `evo init`'s options by name, when given or when
    it has no config), show their progress until they stop, and return the run. Ctrl-C (a
    notebook's interrupt) stops every worker cleanly and returns the run; WorkersFailed (an
    :class:`evo.errors.EvoError`) when a worker failed on its own."""
    from .commands.launch import launch_local

    args = parse("launch", [url], {"workers": workers, "max_seconds": max_seconds, **settings},
                 renamed={"workers": "n"})
    launch_local(args)
    return open(url)

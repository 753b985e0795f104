"""One consistent read of a population for the inspection commands (status, plot, lineage, best).

Torch-free. Everything comes from the store: the ``alive/`` listing and commit objects, the
``history/`` records of the dead, the ``quarantine/`` records, the workers' heartbeats and
the final trainings (``retrain/``).
An individual listed in ``alive/`` that also has its own history or quarantine record (a
zombie: its killer crashed before unlisting it) counts as dead; a segment or a record that
does not hold its very commit never makes a live individual dead (``Census.contradicted``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError


@dataclass(frozen=True)
class Record:
    """One individual that ever lived: provenance, fitness and (for the dead) its death."""

    id: str
    parent: str | None
    mutation: str
    fitness: float
    birth: float
    alive: bool
    worker: str = ""
    death: float | None = None
    killer: str | None = None
    dna: dict[str, Any] | None = None       # None when the commit could not be read
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """The population at ``taken`` (unix seconds): every individual by id, and the rest."""

    url: str
    taken: float
    config: Any                              # evo.config.RunConfig, or None if unreadable
    records: dict[str, Record]
    quarantined_ids: frozenset[str]
    workers: list[dict[str, Any]]
    broken: tuple[Any, ...] = ()             # storage Broken entries: shown, never used
    data: dict[str, Any] | None = None       # the run's decoded user dataset (evo.data.cache.cache_status)
    retrains: tuple[Any, ...] = ()           # storage RetrainState of every final training
    policy: Any = None                       # a learned strategy's PolicyReport (evo.strategies.policy_report)

    @property
    def quarantined(self) -> int:
        return len(self.quarantined_ids)

    @property
    def born(self) -> int:
        """Every individual that ever lived: alive, dead or quarantined (each counted once)."""
        return len(set(self.records) | self.quarantined_ids)

    @property
    def alive(self) -> list[Record]:
        """Live individuals, oldest first."""
        return sorted((r for r in self.records.values() if r.alive), key=lambda r: r.id)

    @property
    def dead(self) -> list[Record]:
        return sorted((r for r in self.records.values() if not r.alive), key=lambda r: r.id)

    def best_alive(self) -> Record | None:
        """The fittest live individual (ties: the older one)."""
        return max(self.alive, key=lambda r: (r.fitness, -r.birth), default=None)


def open_population(url: str):
    """(store, config) for an existing population, the store set up with the run's keep-best,
    DNA bounds and search space (so every DNA read is validated); UserError when it is not
    a population. A config.json that is not the one ``evo init`` sealed is used, with a
    warning on stderr."""
    import storage
    from evo.config import ConfigError, RunConfig
    from evo.spaces import for_config

    try:
        store = storage.open_store(url)
        text = store.runinfo.read_config()
    except storage.StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        config = RunConfig.from_json(text)
    except ConfigError as exc:
        raise UserError(f"{url}/config.json: {exc}") from None
    seal = store.runinfo.config_seal(text)
    if not seal.trusted:   # shown, not fatal: these commands only read (evo check says more)
        print(f"warning: {seal.problem}", file=sys.stderr, flush=True)
    return store.with_run(keep_best=config.keep_best, bounds=config.bounds,
                          dna_validator=for_config(config).parse), config


def take_snapshot(url: str, *, read_alive: bool = True, spinner: bool = True, history_dna: bool = True,
                  alive_dna: bool = True, population: tuple[Any, Any] | None = None) -> Snapshot:
    """Read the whole population at ``url`` once (one listing per folder, records in bulk).

    ``read_alive=False`` skips reading live commit objects (their fitness and birth then come
    from the listing and their parent, mutation and DNA are unknown). ``history_dna=False``:
    the dead individuals' DNA is neither read nor checked (their ``dna`` is None), for commands
    that never use it: far faster and smaller; ``alive_dna=False``: likewise for the live
    individuals. (``evo check`` validates every DNA.) ``spinner``: show
    one on a terminal while reading. ``population``: the ``(store, config)`` of an earlier
    :func:`open_population`, to read only what is new since that store's last read
    (records never change; ``evo status --watch``).
    """
    store, config = population or open_population(url)
    with _reading(url) if spinner else contextlib.nullcontext():
        snap = _read(store, config, url, read_alive, history_dna, alive_dna)
        # read without the live DNA: the best live one is what users act on (best, export,
        # retrain), so its DNA is checked now (and the next one's, if it fails)
        return snap if alive_dna or not read_alive else with_checked_dna(snap, store, 1, alive_only=True)


def with_checked_dna(snap: Snapshot, store: Any, k: int, *, alive_only: bool = False) -> Snapshot:
    """``snap`` once the DNA of its ``k`` fittest individuals (live ones only with
    ``alive_only``) has been read and checked (``store.history.dna_of``): those records get their
    ``dna``; one whose DNA does not check out (or cannot be read) leaves the records for
    ``broken`` and the next fittest is checked instead."""
    from dataclasses import replace

    from storage import Broken, alive_key, history_key

    records, broken, checked = dict(snap.records), list(snap.broken), 0
    order = sorted((r for r in records.values() if r.alive or not alive_only), key=lambda r: (-r.fitness, r.birth, r.id))
    start = 0
    while checked < k and start < len(order):
        batch = order[start:start + k - checked]
        start += len(batch)
        dnas = store.history.dna_of([r.id for r in batch])
        for r in batch:
            if r.id in dnas:
                records[r.id] = replace(r, dna=dnas[r.id])
                checked += 1
            else:
                del records[r.id]
                broken.append(Broken(alive_key(r.id, r.fitness) if r.alive else history_key(r.id),
                                     "its DNA cannot be read or does not check out"))
    return replace(snap, records=records, broken=tuple(broken))


@contextlib.contextmanager
def _reading(url: str):
    """A spinner on a terminal while a (possibly large, remote) population is read."""
    if not sys.stderr.isatty():
        yield
        return
    try:
        from rich.console import Console
    except ImportError:
        print(f"reading {url} ...", file=sys.stderr, flush=True)
        yield
        return
    with Console(stderr=True).status(f"reading {url} ...", spinner="dots"):
        yield


def _read(store, config, url: str, read_alive: bool, history_dna: bool = True, alive_dna: bool = True) -> Snapshot:
    from storage import Broken

    census = store.history.census(read_alive=read_alive, history_dna=history_dna, alive_dna=alive_dna)
    broken = list(census.broken_history + census.broken_quarantine + census.foreign + census.contradicted)
    quarantined = census.quarantined_ids
    records: dict[str, Record] = {}
    for h in census.history:
        records[h["id"]] = Record(
            id=h["id"], parent=h["parent"], mutation=h["mutation"], fitness=float(h["fitness"]),
            birth=float(h["birth"]), alive=False, worker=h["worker"], death=float(h["death"]),
            killer=str(h.get("killer")), dna=h.get("dna"), metrics=h["metrics"])
    # A listed individual with a history or quarantine record is a zombie: dead, not alive.
    for info in census.listed:
        if info.id in records or info.id in quarantined:
            continue
        commit = census.commits.get(info.id)
        if isinstance(commit, Broken):
            broken.append(commit)  # not a record: its name's fitness is not trusted anywhere
        elif commit is None:
            if not read_alive:
                records[info.id] = Record(id=info.id, parent=None, mutation="?", fitness=info.fitness,
                                          birth=info.birth, alive=True)
            # else: it left alive/ with no record in history/ or quarantine/: nothing to show
        else:
            records[info.id] = Record(
                id=info.id, parent=commit["parent"], mutation=commit["mutation"],
                fitness=float(commit["fitness"]), birth=float(commit["birth"]), alive=True,
                worker=commit["worker"], dna=commit.get("dna"), metrics=commit["metrics"])
    retrains = tuple(store.retrains.retrain_states())
    broken += [b for r in retrains for b in r.broken]
    workers, broken_beats = store.runinfo.read_workers()   # out of bounds ones (future-dated) are broken
    broken += broken_beats
    return Snapshot(url=url, taken=time.time(), config=config, records=records,
                    quarantined_ids=frozenset(quarantined), workers=workers,
                    broken=tuple(broken), data=_data_status(store, config), retrains=retrains,
                    policy=_policy(store, config))


def _policy(store, config) -> Any:
    if config is None:
        return None
    from evo.strategies.policy_report import read_policy_report

    return read_policy_report(store.policy, config)


def _data_status(store, config) -> dict[str, Any] | None:
    """Where the run's user dataset stands in the store (None for the built-in datasets)."""
    if not config.dataset_spec.is_user:
        return None
    from evo.data.cache import cache_status

    return cache_status(store.datacache, config.dataset_spec, config.data)


def find_record(snapshot: Snapshot, ident: str) -> Record:
    """The record of ``ident`` (an id, a unique prefix of one, or ``best``); UserError if none."""
    if ident == "best":
        best = snapshot.best_alive()
        if best is None:
            raise UserError(f"{snapshot.url}: no live individuals")
        return best
    if ident in snapshot.records:
        return snapshot.records[ident]
    matches = [i for i in snapshot.records if i.startswith(ident)] if len(ident) >= 4 else []
    if len(matches) == 1:
        return snapshot.records[matches[0]]
    if len(matches) > 1:
        raise UserError(f"{ident!r} matches {len(matches)} individuals in {snapshot.url}; give more of the id")
    raise UserError(f"{snapshot.url}: no individual {ident!r} (neither alive nor in history/)")


def ago(seconds: float) -> str:
    """``42s``, ``5m07s``, ``3h12m``, ``2d04h``: a short duration."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def utc(t: float) -> str:
    """Unix time as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))

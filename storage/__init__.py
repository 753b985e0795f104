"""The population store: a shared directory (local/NFS, GCS, or memory) that many stateless
workers read and write without a coordinator or locks.

    store = storage.open_store("gs://bucket/run1")      # or /path, file:///path, memory://x
    pop = store.population
    for info in pop.list_alive(): ...                    # one listing, no reads
    ind = pop.read_individual(info, bounds=bounds)       # verified, or None
    pop.kill(info, worker=me)                            # True for exactly one caller
    pop.publish(child.to_dict(), weights, parent=ind.id, mutation=..., fitness=..., worker=me)

The store's facets (:mod:`storage.store`; their protocols in :mod:`storage.facets`):
``population`` (the live individuals), ``history`` (everyone alive and dead: ``census()``,
``scan_history()``, ``scan_quarantine()``, ``births()``, roll-ups, kept weights),
``runinfo`` (``config.json``, heartbeats, marks, launch records), ``datacache`` (the run's
decoded dataset in ``data/``), ``retrains`` (final trainings, ``evo retrain``:
:mod:`storage.retrain`) and ``policy`` (the learned strategy's versions). Readers of the
whole population (status, plots, audits, benchmarks) use the history facet, never the
backend or the record formats; broken entries come back as :class:`Broken`, never raised.
The history is read from segments (:mod:`storage.segments`) plus the unsealed tail in
``history/``, each record once; a store object remembers what it read, and ``gs://`` stores
keep a local read cache (:mod:`storage.readcache`).

Torch-free (weights are opaque safetensors bytes here). See docs/layout.md for the files and
protocols. ``open_store`` imports gcsfs only for ``gs://`` URLs.
"""

from __future__ import annotations

import os

from .backend import TEMP_PREFIX, Backend, Entry, StoreError, UnreadableEntry
from .check import CheckReport
from .crash import POINTS as CRASH_POINTS
from .crash import CrashAt, FaultHook, crash_hook
from .datacache import DataState, check_data_key, manifest_problem, time_problem
from .facets import DataCacheFacet, HistoryFacet, PolicyFacet, PopulationFacet, RetrainFacet, RunInfoFacet
from .local import LocalBackend
from .memory import MemoryBackend, drop_memory_store
from .history import Census
from .store import PopulationStore
from .policy import intake_key, policy_key
from .reading import Broken
from .records import CorruptRecord, Individual, IndividualInfo, alive_key, birth_of, dna_hash, history_key, is_id
from .retrain import Claim, RetrainState
from .retrain_format import is_retrain_id
from .safetensors_check import safetensors_header_ok, safetensors_problem
from .verify import DnaValidator

__all__ = [
    # opening a store, and the store
    "open_store", "open_backend", "PopulationStore", "StoreError", "DnaValidator",
    # the store's facets, as protocols (type a collaborator by the facets it receives)
    "PopulationFacet", "HistoryFacet", "RunInfoFacet", "DataCacheFacet", "RetrainFacet", "PolicyFacet",
    # what readers get back
    "IndividualInfo", "Individual", "Census", "Broken", "CheckReport", "CorruptRecord",
    "is_id", "birth_of", "dna_hash", "alive_key", "history_key", "policy_key", "intake_key", "safetensors_header_ok", "safetensors_problem",
    # the run's decoded dataset (data/)
    "DataState", "check_data_key", "manifest_problem", "time_problem",
    # final trainings (evo retrain)
    "Claim", "RetrainState", "is_retrain_id",
    # backends (a store is built over one)
    "Backend", "Entry", "LocalBackend", "MemoryBackend", "drop_memory_store", "UnreadableEntry",
    "TEMP_PREFIX",
    # fault injection (tests, and the hidden ``evo worker --crash-at``)
    "FaultHook", "CrashAt", "crash_hook", "CRASH_POINTS",
]


def open_backend(url: str, *, fault: FaultHook | None = None) -> Backend:
    """The backend for a store URL: ``/path``, ``relative/path``, ``file:///path``,
    ``gs://bucket/prefix`` or ``memory://name``. StoreError (one line) for anything else.

    ``fault``: the fault hook of the local backend's temp-file steps (others have none).
    """
    if not isinstance(url, str) or not url.strip():
        raise StoreError("empty store URL")
    url = url.strip()
    if url.startswith("memory://"):
        name = url[len("memory://"):]
        if not name or "/" in name:
            raise StoreError(f"bad memory store URL {url!r} (use memory://NAME)")
        return MemoryBackend(name)
    if url.startswith("gs://"):
        from .gcs import GCSBackend

        try:
            return GCSBackend(url)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
    if url.startswith("file://"):
        rest = url[len("file://"):]
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost") or not slash:
            raise StoreError(f"bad file URL {url!r} (use file:///absolute/path)")
        if os.path.exists("/" + path) and not os.path.isdir("/" + path):
            raise StoreError(f"{url} is a file, not a population directory")
        return LocalBackend("/" + path, fault=fault)
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(f"unsupported store URL scheme {scheme!r} in {url!r} "
                         "(use a path, file://, gs:// or memory://)")
    if os.path.exists(url) and not os.path.isdir(url):
        raise StoreError(f"{url} is a file, not a population directory")
    return LocalBackend(url, fault=fault)


def open_store(url: str, *, keep_best: int = 0, dna_validator: DnaValidator | None = None,
               fault: FaultHook | None = None) -> PopulationStore:
    """The population store at ``url`` (see :func:`open_backend` for the URL forms).

    Opening creates nothing; directories appear as objects are written. ``fault``: a fault
    hook (:func:`crash_hook`) called at every step boundary of the store's protocols, the
    backend's included; tests only.
    """
    return PopulationStore(open_backend(url, fault=fault), keep_best=keep_best,
                           dna_validator=dna_validator, fault=fault)

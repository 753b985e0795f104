"""What a run records besides its individuals: its config (``config.json``), workers'
heartbeats, one-time markers and launchers' records of scheduler jobs. Small JSON objects,
read bounded and leniently."""

from __future__ import annotations

from typing import Any

from dna.numbers import is_finite_number

from .backend import StoreError, UnreadableEntry
from .core import StoreCore
from .reading import read_json
from .records import (
    CONFIG_KEY, LAUNCHES, MAX_CONFIG_BYTES, MAX_HEARTBEAT_BYTES, STATE, WORKERS, check_safe_name, dumps, is_safe_name,
)


class RunInfo:
    """What a run records besides its individuals (the store's ``runinfo`` facet): its config,
    workers' heartbeats, one-time markers and launchers' records of scheduler jobs.

    Contract: ``config.json`` is written once (create-if-absent) and read bounded; marks are
    created once; heartbeats and launch records are overwritten by their one writer and read
    leniently (broken ones are left out, never raised).
    """

    def __init__(self, core: StoreCore):
        self._core = core
        self._backend = core.backend

    # ----- the run's config -----
    def init_config(self, text: str) -> bool:
        """Store ``config.json`` if there is none yet; True iff this call stored it."""
        return self._backend.create(CONFIG_KEY, text.encode("utf-8"))

    def has_config(self) -> bool:
        """True if something has the name ``config.json`` (one stat; nothing is read)."""
        return self._backend.exists(CONFIG_KEY)

    def read_config(self) -> str:
        """The text of ``config.json``; StoreError if this is not a population directory."""
        url = self._core.url
        try:
            raw = self._backend.read(CONFIG_KEY, MAX_CONFIG_BYTES)
        except FileNotFoundError:
            raise StoreError(f"{url}: no config.json "
                             "(not a population directory; run 'evo init')") from None
        except UnreadableEntry as exc:
            raise StoreError(f"{url}/{exc}") from None
        except OSError as exc:  # the store itself is unreachable or forbidden
            raise StoreError(f"{url}: cannot read config.json: {exc.strerror or exc}") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError(f"{url}/config.json is not UTF-8 text") from None

    # ----- workers, marks, launches -----
    def heartbeat(self, worker_id: str, info: dict[str, Any] | None = None) -> None:
        """Record that ``worker_id`` is alive now (overwrites its previous heartbeat)."""
        check_safe_name(worker_id, "worker id")
        self._backend.write(f"{WORKERS}/{worker_id}.json",
                           dumps({"worker": worker_id, "time": self._core.now(), "info": info or {}}))

    def list_workers(self) -> list[dict[str, Any]]:
        """Latest heartbeat of every worker (``worker``, ``time``, ``info``), by worker id.

        Heartbeats that are unreadable, oversized or malformed are left out.
        """
        return [beat for beat in self._read_named(WORKERS, "heartbeat")
                if isinstance(beat.get("worker"), str)]

    def mark(self, name: str) -> bool:
        """Create marker ``state/{name}`` if absent; True iff this call created it."""
        check_safe_name(name, "marker name")
        return self._backend.create(f"{STATE}/{name}", dumps({"time": self._core.now()}))

    def has_mark(self, name: str) -> bool:
        """True if marker ``state/{name}`` exists."""
        check_safe_name(name, "marker name")
        return self._backend.exists(f"{STATE}/{name}")

    def record_launch(self, name: str, info: dict[str, Any]) -> None:
        """Write ``launches/{name}.json`` (``name``, ``time``, ``info``): what a launcher started,
        e.g. a SLURM array's job id, so that ``evo status`` can ask the scheduler about it."""
        check_safe_name(name, "launch name")
        self._backend.write(f"{LAUNCHES}/{name}.json", dumps({"name": name, "time": self._core.now(), "info": info}))

    def list_launches(self) -> list[dict[str, Any]]:
        """Every launch record (``name``, ``time``, ``info``), by name; unreadable ones are skipped."""
        return [rec for rec in self._read_named(LAUNCHES, "launch record")
                if isinstance(rec.get("name"), str) and isinstance(rec.get("info"), dict)]

    def _read_named(self, dirname: str, what: str) -> list[dict[str, Any]]:
        """The JSON objects ``{dirname}/{safe name}.json`` with a finite ``time``, by name."""
        keys = [f"{dirname}/{n}" for n in self._backend.list(dirname)
                if n.endswith(".json") and is_safe_name(n[:-len(".json")])]
        return [obj for _, obj in read_json(self._backend, sorted(keys), what, max_bytes=MAX_HEARTBEAT_BYTES)
                if isinstance(obj, dict) and _finite_number(obj.get("time"))]


def _finite_number(x: Any) -> bool:
    return is_finite_number(x)

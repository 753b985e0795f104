"""What a run records besides its individuals: workers' heartbeats, one-time markers and
launchers' records of scheduler jobs. Small JSON objects, read bounded and leniently."""

from __future__ import annotations

from typing import Any

from dna.numbers import is_finite_number

from .core import StoreCore
from .reading import read_json
from .records import LAUNCHES, MAX_HEARTBEAT_BYTES, STATE, WORKERS, check_safe_name, dumps, is_safe_name


class RunRecords(StoreCore):
    """Heartbeats, markers and launch records of :class:`storage.PopulationStore`."""

    def heartbeat(self, worker_id: str, info: dict[str, Any] | None = None) -> None:
        """Record that ``worker_id`` is alive now (overwrites its previous heartbeat)."""
        check_safe_name(worker_id, "worker id")
        self.backend.write(f"{WORKERS}/{worker_id}.json",
                           dumps({"worker": worker_id, "time": self._clock(), "info": info or {}}))

    def list_workers(self) -> list[dict[str, Any]]:
        """Latest heartbeat of every worker (``worker``, ``time``, ``info``), by worker id.

        Heartbeats that are unreadable, oversized or malformed are left out.
        """
        return [beat for beat in self._read_named(WORKERS, "heartbeat")
                if isinstance(beat.get("worker"), str)]

    def mark(self, name: str) -> bool:
        """Create marker ``state/{name}`` if absent; True iff this call created it."""
        check_safe_name(name, "marker name")
        return self.backend.create(f"{STATE}/{name}", dumps({"time": self._clock()}))

    def has_mark(self, name: str) -> bool:
        """True if marker ``state/{name}`` exists."""
        check_safe_name(name, "marker name")
        return self.backend.exists(f"{STATE}/{name}")

    def record_launch(self, name: str, info: dict[str, Any]) -> None:
        """Write ``launches/{name}.json`` (``name``, ``time``, ``info``): what a launcher started,
        e.g. a SLURM array's job id, so that ``evo status`` can ask the scheduler about it."""
        check_safe_name(name, "launch name")
        self.backend.write(f"{LAUNCHES}/{name}.json", dumps({"name": name, "time": self._clock(), "info": info}))

    def list_launches(self) -> list[dict[str, Any]]:
        """Every launch record (``name``, ``time``, ``info``), by name; unreadable ones are skipped."""
        return [rec for rec in self._read_named(LAUNCHES, "launch record")
                if isinstance(rec.get("name"), str) and isinstance(rec.get("info"), dict)]

    def _read_named(self, dirname: str, what: str) -> list[dict[str, Any]]:
        """The JSON objects ``{dirname}/{safe name}.json`` with a finite ``time``, by name."""
        keys = [f"{dirname}/{n}" for n in self.backend.list(dirname)
                if n.endswith(".json") and is_safe_name(n[:-len(".json")])]
        return [obj for _, obj in read_json(self.backend, sorted(keys), what, max_bytes=MAX_HEARTBEAT_BYTES)
                if isinstance(obj, dict) and _finite_number(obj.get("time"))]


def _finite_number(x: Any) -> bool:
    return is_finite_number(x)

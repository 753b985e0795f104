"""The few primitives every storage backend provides; the population logic is built on them.

A backend stores small byte strings under '/'-separated relative keys (``alive/x.json``).
Each primitive states its concurrency contract; ``storage.population`` relies on nothing
else. The one primitive that must be exactly right is :meth:`Backend.create`: it is the
only source of mutual exclusion in the whole store (no locks anywhere).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable
from dataclasses import dataclass

# Temporary files of the local backend start with this; no population key ever does.
TEMP_PREFIX = ".tmp-"

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.~@:+=-]*")


class StoreError(Exception):
    """A store that cannot be opened or used (bad URL, not a population, ...). One line."""


@dataclass(frozen=True)
class Entry:
    """One object directly under a listed directory: its name, modification time, size."""

    name: str
    mtime: float  # unix seconds
    size: int


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key (``dir/name``), else raise ValueError.

    Keys come partly from listings of an untrusted store, so this refuses absolute paths,
    ``..``, empty parts, backslashes and temporary names before any backend touches them.
    """
    if not isinstance(key, str) or not key or len(key) > 1024:
        raise ValueError(f"bad store key {key!r}")
    for part in key.split("/"):
        if not _PART.fullmatch(part) or part.startswith(TEMP_PREFIX):
            raise ValueError(f"bad store key {key!r}: part {part!r} is not allowed")
    return key


def check_dir(dirname: str) -> str:
    """Like :func:`check_key` for a directory; ``""`` means the store's root."""
    return dirname if dirname == "" else check_key(dirname)


class Backend(abc.ABC):
    """Byte objects under relative keys, with one exactly-once primitive (``create``).

    Every method may be called concurrently from many processes on many machines.
    """

    #: A URL naming this store (``file:///...``, ``gs://...``, ``memory://...``); no secrets.
    url: str

    @abc.abstractmethod
    def read(self, key: str) -> bytes:
        """The whole object. FileNotFoundError if absent. Never a partially written object."""

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """``{key: bytes, or None if absent}`` for several keys (backends may parallelise)."""
        out: dict[str, bytes | None] = {}
        for key in keys:
            try:
                out[key] = self.read(key)
            except FileNotFoundError:
                out[key] = None
        return out

    @abc.abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Create or overwrite; a concurrent reader sees the old or the new object, whole."""

    @abc.abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if no object has that name; True iff this call created it.

        Exactly once: when many processes race on one key, exactly one gets True, and the
        object then holds that caller's data, whole. A transport retry of a create that had
        already succeeded still returns True.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there. Missing is fine.

        The result is advisory (a retried request may report False although it deleted);
        the population logic never depends on it for correctness.
        """

    @abc.abstractmethod
    def list(self, dirname: str) -> list[str]:
        """Names of the objects directly under ``dirname`` (empty if it does not exist).

        Shows every object created before the call started (on NFS, other clients'
        listings may lag by seconds: callers treat a listing as a hint and re-check).
        """

    @abc.abstractmethod
    def list_detail(self, dirname: str) -> list[Entry]:
        """Like :meth:`list`, with modification time and size of each object."""

    @abc.abstractmethod
    def stat(self, key: str) -> Entry | None:
        """Modification time and size of ``key``, or None if absent."""

    def exists(self, key: str) -> bool:
        """True if an object named ``key`` exists now."""
        return self.stat(key) is not None

    def delete_temp(self, dirname: str, name: str) -> bool:
        """Remove a leftover temporary file (a name starting with ``TEMP_PREFIX``).

        Only backends that write temporary files (local/NFS) have any; the others return
        False. Used by ``evo check --repair`` for temp files of crashed writers.
        """
        return False

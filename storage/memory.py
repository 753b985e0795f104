"""In-process backend for unit tests: ``memory://name`` is a dict shared by name, under a lock.

It means nothing across processes; within one process it has the same exactly-once
semantics as the real backends, so threaded races can be tested against it.
"""

from __future__ import annotations

import threading
import time

from .backend import MAX_RECORD_BYTES, Backend, Entry, UnreadableEntry, check_dir, check_key, moved_key, split_key

_LOCK = threading.Lock()
# store name -> directory -> object name -> (data, mtime)
_STORES: dict[str, dict[str, dict[str, tuple[bytes, float]]]] = {}


class MemoryBackend(Backend):
    """Objects in a process-global dict; every ``MemoryBackend(name)`` with one name shares it."""

    def __init__(self, name: str):
        self.name = name
        self.url = f"memory://{name}"
        with _LOCK:
            self._dirs = _STORES.setdefault(name, {})

    def read(self, key: str, max_bytes: int = MAX_RECORD_BYTES) -> bytes:
        directory, name = split_key(key)
        with _LOCK:
            item = self._dirs.get(directory, {}).get(name)
        if item is None:
            raise FileNotFoundError(key)
        if len(item[0]) > max_bytes:
            raise UnreadableEntry(key, f"is too large ({len(item[0])} bytes; at most {max_bytes} expected)")
        return item[0]

    def stat(self, key: str) -> Entry | None:
        directory, name = split_key(key)
        with _LOCK:
            item = self._dirs.get(directory, {}).get(name)
        return None if item is None else Entry(name, item[1], len(item[0]))

    def list(self, dirname: str) -> list[str]:
        with _LOCK:
            return list(self._dirs.get(check_dir(dirname), {}))

    def list_detail(self, dirname: str) -> list[Entry]:
        with _LOCK:
            items = list(self._dirs.get(check_dir(dirname), {}).items())
        return [Entry(name, mtime, len(data)) for name, (data, mtime) in items]

    def write(self, key: str, data: bytes) -> None:
        directory, name = split_key(key)
        with _LOCK:
            self._dirs.setdefault(directory, {})[name] = (bytes(data), time.time())

    def create(self, key: str, data: bytes) -> bool:
        directory, name = split_key(key)
        with _LOCK:
            objects = self._dirs.setdefault(directory, {})
            if name in objects:
                return False
            objects[name] = (bytes(data), time.time())
            return True

    def delete(self, key: str) -> bool:
        directory, name = split_key(key)
        with _LOCK:
            return self._dirs.get(directory, {}).pop(name, None) is not None

    def move_aside(self, dirname: str, name: str, target: str | None = None) -> str:
        target = target or moved_key(dirname, name)
        check_key(target)
        target_dir, target_name = split_key(target)
        with _LOCK:
            item = self._dirs.get(check_dir(dirname), {}).pop(name, None)
            if item is None:
                raise FileNotFoundError(f"{dirname}/{name}")
            self._dirs.setdefault(target_dir, {})[target_name] = item
        return target


def drop_memory_store(name: str) -> None:
    """Forget the in-memory store ``name`` (tests use it to free memory)."""
    with _LOCK:
        _STORES.pop(name, None)

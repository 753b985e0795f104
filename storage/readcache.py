"""A local read cache of objects that never change once created, so that a second look at a
remote population (``evo status`` on gs://...) does not GET them again.

What may be cached: history segments, history records and live commit objects. Each is
created once (create-if-absent) under a name that is never reused, and never rewritten, so
its bytes under that name are final. What is *not* cached: any listing (which objects exist
is always asked of the store), heartbeats, markers and everything else that is overwritten.
Readers check cached bytes exactly like fresh ones (they may have been tampered with
locally), and put bytes here only after they checked out, so a broken entry that is later
repaired is read afresh.

Where: ``$EVO_CACHE_DIR`` if set (``off`` or ``0`` turns the cache off), else
``$XDG_CACHE_HOME/evo``, else ``~/.cache/evo``; one folder per store URL (16 hex digits of
its SHA-256). Local and ``memory://`` stores are not cached (reading them is as cheap as
reading the cache). A folder that cannot be made or written means no cache, silently: the
cache only ever saves time.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from .backend import check_key

CACHE_ENV = "EVO_CACHE_DIR"


def cache_root(env: dict[str, str] | None = None) -> Path | None:
    """The cache's base folder from the environment (see the module docstring); None: off."""
    env = os.environ if env is None else env
    given = env.get(CACHE_ENV, "").strip()
    if given.lower() in ("off", "0", "none", "false"):
        return None
    if given:
        return Path(given)
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    if xdg:
        return Path(xdg) / "evo"
    home = env.get("HOME", "").strip()
    return Path(home) / ".cache" / "evo" if home else None


class ReadCache:
    """Bytes of immutable objects of one store, under ``root/{16 hex of the URL's SHA-256}/``."""

    def __init__(self, root: Path, url: str):
        self.url = url
        self.folder = Path(root) / hashlib.sha256(url.encode()).hexdigest()[:16]
        self._usable: bool | None = None

    def _path(self, key: str) -> Path:
        return self.folder / check_key(key)

    def get(self, key: str, max_bytes: int) -> bytes | None:
        """The cached bytes of ``key``, or None (not cached, unreadable, or over ``max_bytes``)."""
        try:
            with open(self._path(key), "rb") as f:
                data = f.read(max_bytes + 1)
        except (OSError, ValueError):
            return None
        return data if len(data) <= max_bytes else None

    def put(self, key: str, data: bytes) -> None:
        """Remember ``data`` as ``key``'s bytes (atomically: temp file, then rename); errors
        turn the cache off for this process."""
        if self._usable is False:
            return
        try:
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{path.name}.{secrets.token_hex(4)}")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            self._usable = True
        except (OSError, ValueError):
            self._usable = False

    def drop(self, key: str) -> None:
        """Forget ``key`` (its cached bytes did not check out)."""
        try:
            os.unlink(self._path(key))
        except (OSError, ValueError):
            pass


def cache_for(url: str, env: dict[str, str] | None = None) -> ReadCache | None:
    """The read cache of the store at ``url``, or None (cache off, or a local/memory store)."""
    if not url.startswith("gs://"):
        return None
    root = cache_root(env)
    return ReadCache(root, url) if root is not None else None

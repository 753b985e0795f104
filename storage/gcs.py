"""Google Cloud Storage backend through gcsfs (``gs://bucket/prefix``).

- ``create``: a single-request upload with ``ifGenerationMatch=0`` (gcsfs
  ``pipe_file(mode="create")``); GCS answers 412, which gcsfs raises as FileExistsError, when
  the object exists. gcsfs retries 5xx and dropped connections, so a create whose first try
  landed can come back 412 on the retry: every create carries a random nonce in the
  object's metadata, and on FileExistsError we read it back: our nonce means we won.
- ``write``: an upload replaces the object whole (GCS objects are immutable versions).
- Listings bypass gcsfs's listing cache (``use_listings_cache=False`` and ``refresh=True``):
  GCS listing itself is strongly consistent.

Credentials come from the environment only: Application Default Credentials, or anonymous
access when ``STORAGE_EMULATOR_HOST`` points at an emulator. They never reach logs or the
store. ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` is defaulted to ``false`` before gcsfs is
imported (else gcsfs asks a gRPC API for every bucket's type, which stalls on emulators).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from .backend import (
    MAX_RECORD_BYTES, Backend, Entry, Foreign, StoreError, UnreadableEntry, check_dir, check_key, moved_key,
)

NONCE_FIELD = "evo-create-nonce"
# Ranged reads of read_verified's first (hashing) pass.
GCS_CHUNK = 8 * 2**20
# Uploads below gcsfs's chunk size are single requests, where the precondition is atomic.
MAX_CREATE_BYTES = 8 * 2**20

_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


def make_filesystem() -> Any:
    """A gcsfs filesystem configured from the environment (no listing cache, no sharing)."""
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    from gcsfs.core import GCSFileSystem  # the plain class, whatever that variable says

    endpoint = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    if endpoint and endpoint != "default":
        if not endpoint.startswith(("http://", "https://")):
            endpoint = "http://" + endpoint
        token: str = "anon"
    else:
        endpoint, token = "", "google_default"
    try:
        return GCSFileSystem(token=token, endpoint_url=endpoint or None,
                             use_listings_cache=False, skip_instance_cache=True)
    except Exception as exc:  # google.auth raises several types; the message has no secret
        raise StoreError(f"cannot open Google Cloud Storage: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''} "
                         "(credentials come from Application Default Credentials)") from None


def parse_gs_url(url: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; ValueError if malformed."""
    if not url.startswith("gs://"):
        raise ValueError(f"not a gs:// URL: {url!r}")
    bucket, _, prefix = url[len("gs://"):].partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"bad bucket name {bucket!r} in {url!r}")
    prefix = prefix.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ValueError:
            raise ValueError(f"bad prefix {prefix!r} in {url!r}") from None
    return bucket, prefix


def _mtime(info: dict[str, Any]) -> float:
    stamp = info.get("updated") or info.get("timeCreated")
    if isinstance(stamp, str):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    mtime = info.get("mtime")
    return mtime.timestamp() if isinstance(mtime, datetime) else 0.0


class GCSBackend(Backend):
    """A population under ``gs://bucket/prefix``."""

    def __init__(self, url: str, fs: Any = None):
        bucket, prefix = parse_gs_url(url)
        self.url = f"gs://{bucket}/{prefix}".rstrip("/")
        self._root = f"{bucket}/{prefix}".rstrip("/")
        self._fs = fs if fs is not None else make_filesystem()

    def _path(self, key: str) -> str:
        return f"{self._root}/{check_key(key)}"

    def _dirpath(self, dirname: str) -> str:
        return f"{self._root}/{check_dir(dirname)}".rstrip("/")

    def read(self, key: str, max_bytes: int = MAX_RECORD_BYTES) -> bytes:
        # A ranged GET: an object larger than the bound costs max_bytes + 1 bytes, not all.
        try:
            data = self._fs.cat_file(self._path(key), start=0, end=max_bytes + 1)
        except PermissionError:
            raise UnreadableEntry(key, "cannot be read: permission denied") from None
        except IsADirectoryError:
            raise UnreadableEntry(key, "is a directory (a prefix with objects under it)") from None
        return _bounded(key, data, max_bytes)

    def stream(self, key: str, max_bytes: int) -> Iterator[bytes]:
        # Ranged GETs of GCS_CHUNK bytes each; the object's size is checked first, and at
        # most max_bytes + 1 bytes are ever fetched.
        path = self._path(key)
        try:
            info = self._fs.info(path)
        except PermissionError:
            raise UnreadableEntry(key, "cannot be read: permission denied") from None
        if info.get("type") != "file":
            raise UnreadableEntry(key, "is a directory (a prefix with objects under it)")
        if int(info.get("size", 0)) > max_bytes:
            raise UnreadableEntry(key, f"is too large ({int(info.get('size', 0))} bytes; at most {max_bytes} expected)")
        start, size = 0, int(info.get("size", 0))
        while start < size:   # a replaced object is caught by the caller's size and hash
            try:
                chunk = self._fs.cat_file(path, start=start, end=min(start + GCS_CHUNK, size))
            except PermissionError:
                raise UnreadableEntry(key, "cannot be read: permission denied") from None
            if not chunk:
                return
            start += len(chunk)
            yield chunk

    def read_many(self, keys: Any, max_bytes: int = MAX_RECORD_BYTES) -> dict[str, bytes | UnreadableEntry | None]:
        keys = list(keys)
        if not keys:
            return {}
        paths = {self._path(k): k for k in keys}
        got = self._fs.cat(list(paths), on_error="return", start=0, end=max_bytes + 1)
        out: dict[str, bytes | UnreadableEntry | None] = {}
        for path, key in paths.items():
            value = got.get(path)
            if isinstance(value, FileNotFoundError) or value is None:
                out[key] = None
            elif isinstance(value, PermissionError):
                out[key] = UnreadableEntry(key, "cannot be read: permission denied")
            elif isinstance(value, BaseException):
                raise value
            else:
                try:
                    out[key] = _bounded(key, value, max_bytes)
                except UnreadableEntry as exc:
                    out[key] = exc
        return out

    def write(self, key: str, data: bytes) -> None:
        self._fs.pipe_file(self._path(key), bytes(data))

    def create(self, key: str, data: bytes) -> bool:
        if len(data) > MAX_CREATE_BYTES:
            raise ValueError(f"create of {key}: {len(data)} bytes is too large for one request")
        path = self._path(key)
        nonce = secrets.token_hex(16)
        try:
            self._fs.pipe_file(path, bytes(data), mode="create", metadata={NONCE_FIELD: nonce})
            return True
        except FileExistsError:
            pass
        try:
            info = self._fs.info(path)
        except FileNotFoundError:
            return False  # it existed, and someone deleted it since: never ours
        return (info.get("metadata") or {}).get(NONCE_FIELD) == nonce

    def delete(self, key: str) -> bool:
        try:
            self._fs.rm_file(self._path(key))
            return True
        except FileNotFoundError:
            return False

    def _ls(self, dirname: str, kind: str = "file") -> list[tuple[str, dict[str, Any]]]:
        """(name, gcsfs info) of the objects (``kind="file"``) or prefixes (``"directory"``)
        directly under ``dirname``, listed afresh (no cache)."""
        base = self._dirpath(dirname)
        try:
            entries = self._fs.ls(base, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        prefix = base + "/"
        named = [(e["name"][len(prefix):], e) for e in entries
                 if e.get("type") == kind and e["name"].startswith(prefix)]
        if kind == "directory":  # a prefix's name may end with "/"
            return [(name.rstrip("/"), e) for name, e in named]
        return [(name, e) for name, e in named if "/" not in name]

    def list(self, dirname: str) -> list[str]:
        return [name for name, _ in self._ls(dirname)]

    def list_detail(self, dirname: str) -> list[Entry]:
        return [Entry(name, _mtime(e), int(e.get("size", 0))) for name, e in self._ls(dirname)]

    def list_foreign(self, dirname: str) -> list[Foreign]:
        return [Foreign(name, "a directory") for name, _ in self._ls(dirname, "directory")]

    def move_aside(self, dirname: str, name: str, target: str | None = None) -> str:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not an entry name: {name!r}")
        target = target or moved_key(dirname, name)
        check_key(target)
        source = f"{self._dirpath(dirname)}/{name}"
        # copy, then delete: a server-side copy reads nothing into this process (gcsfs's own
        # mv tries a move API first that emulators lack)
        if self._fs.isfile(source):
            self._fs.cp_file(source, self._path(target))
            self._fs.rm_file(source)
        else:
            self._fs.copy(source, self._path(target), recursive=True)
            self._fs.rm(source, recursive=True)
        return target

    def stat(self, key: str) -> Entry | None:
        try:
            info = self._fs.info(self._path(key))
        except FileNotFoundError:
            return None
        if info.get("type") != "file":
            raise UnreadableEntry(key, "is a directory (a prefix with objects under it)")
        return Entry(key.rsplit("/", 1)[-1], _mtime(info), int(info.get("size", 0)))


def _bounded(key: str, data: bytes, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise UnreadableEntry(key, f"is too large (more than {max_bytes} bytes)")
    return data

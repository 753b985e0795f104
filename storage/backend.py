"""The few primitives every storage backend provides; the population logic is built on them.

A backend stores small byte strings under '/'-separated relative keys (``alive/x.json``).
Each primitive states its concurrency contract; ``storage.population`` relies on nothing
else. The one primitive that must be exactly right is :meth:`Backend.create`: it is the
only source of mutual exclusion in the whole store (no locks anywhere).
"""

from __future__ import annotations

import abc
import hashlib
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# Temporary files of the local backend start with this; no population key ever does.
TEMP_PREFIX = ".tmp-"

# Reads of records (commits, history, heartbeats, markers) never take more than this; the
# weights are read with the size their commit states as the bound.
MAX_RECORD_BYTES = 4 * 2**20

# Chunks in which :meth:`Backend.read_verified` hashes an object before reading it.
HASH_CHUNK = 4 * 2**20

# Where entries that are not usable objects (symlinks, directories, unreadable or oversized
# files) are moved aside, as they are, by quarantine and ``evo check --repair``.
MOVED_DIR = "quarantine/moved"

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.~@:+=-]*")


class StoreError(Exception):
    """A store that cannot be opened or used (bad URL, not a population, ...). One line."""


class UnreadableEntry(Exception):
    """An entry that exists but is not a usable object of the store: not a regular file (a
    symlink, directory or special file), not readable (permissions, I/O error), or larger
    than the reader's bound. A per-entry problem: it costs that entry, never the reader.

    The message is one line naming the key and the problem; it never carries the entry's
    content (which may come from outside the store).
    """

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Entry:
    """One object directly under a listed directory: its name, modification time, size."""

    name: str
    mtime: float  # unix seconds
    size: int


@dataclass(frozen=True)
class Foreign:
    """A name under a directory that is not a regular object: what it is, in words."""

    name: str
    what: str     # "a symbolic link", "a directory", "a FIFO", "a device", "a socket"


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


def is_key(text: str) -> bool:
    """True if ``text`` is a safe relative key (see :func:`check_key`)."""
    try:
        check_key(text)
        return True
    except ValueError:
        return False


def moved_key(dirname: str, name: str) -> str:
    """Key under ``quarantine/moved/`` for the entry ``dirname/name`` moved aside: the old
    place in the name (characters a key cannot hold become ``_``) and a random suffix."""
    place = f"{dirname}/{name}" if dirname else name
    safe = re.sub(r"[^A-Za-z0-9_.~@:+=-]", "_", place.replace("/", "~"))[:160]
    if not re.match(r"[A-Za-z0-9_]", safe):
        safe = "_" + safe
    return f"{MOVED_DIR}/{safe}.{secrets.token_hex(4)}"


def check_declared(size: int, sha256: str) -> None:
    """ValueError unless ``size`` is a whole number >= 0 and ``sha256`` 64 lowercase hex digits."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"bad declared size {size!r}")
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError("bad declared SHA-256")


def digest_problem(data: bytes, size: int, sha256: str) -> str | None:
    """None if ``data`` has ``size`` bytes and that SHA-256; else the problem, in words."""
    if len(data) != size:
        return f"has {len(data)} bytes, {size} expected"
    if hashlib.sha256(data).hexdigest() != sha256:
        return "SHA-256 does not match (damaged)"
    return None


def split_key(key: str) -> tuple[str, str]:
    """``(folder, name)`` of a safe key (see :func:`check_key`): ``"alive/x.json"`` gives
    ``("alive", "x.json")``, a key without a folder ``("", key)``."""
    dirname, _, name = check_key(key).rpartition("/")
    return dirname, name


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
    def read(self, key: str, max_bytes: int = MAX_RECORD_BYTES) -> bytes:
        """The whole object. Never a partially written object, never more than ``max_bytes``.

        FileNotFoundError if absent. :class:`UnreadableEntry` if the name exists but is not a
        regular object (symlinks are never followed), cannot be read (permissions), or holds
        more than ``max_bytes`` (checked before reading where the backend can; at most
        ``max_bytes + 1`` bytes are ever read).
        """

    def read_verified(self, key: str, size: int, sha256: str) -> bytes:
        """The whole object, exactly ``size`` bytes whose SHA-256 is ``sha256`` (lowercase
        hex), as stated by a record that names it (a commit, a manifest).

        Memory never grows with a planted size: the object is first hashed while streaming
        in chunks of ``HASH_CHUNK`` with ``size`` as the bound (stopping at the first byte
        past it), and only an object whose size and hash check out is then read whole (and
        hashed again, so an object replaced between the two passes is refused too). The
        trade-off: a good object is read and hashed twice; a bad one costs one chunk of memory.

        FileNotFoundError if absent. :class:`UnreadableEntry` (one line) if the name is not
        a regular object, cannot be read, or holds another size or another SHA-256.
        ValueError if ``size`` or ``sha256`` is malformed (the caller checks records first).
        """
        check_declared(size, sha256)
        self.verify(key, size, sha256)
        data = self.read(key, size)
        problem = digest_problem(data, size, sha256)
        if problem:
            raise UnreadableEntry(key, f"changed while it was read ({problem})")
        return data

    def verify(self, key: str, size: int, sha256: str) -> None:
        """Check, while streaming and without holding the object, that it has exactly
        ``size`` bytes whose SHA-256 is ``sha256``; raise as :meth:`read_verified` does."""
        check_declared(size, sha256)
        digest, total = hashlib.sha256(), 0
        for chunk in self.stream(key, size):
            total += len(chunk)
            if total > size:
                raise UnreadableEntry(key, f"is too large (more than the {size} bytes stated)")
            digest.update(chunk)
        if total != size:
            raise UnreadableEntry(key, f"has {total} bytes, {size} expected")
        if digest.hexdigest() != sha256:
            raise UnreadableEntry(key, "SHA-256 does not match (damaged)")

    def stream(self, key: str, max_bytes: int) -> Iterator[bytes]:
        """The object's bytes in chunks of at most ``HASH_CHUNK``, stopping after the first
        byte past ``max_bytes`` (errors as :meth:`read`). This default reads the object
        whole: backends whose objects are not already in memory override it."""
        yield self.read(key, max_bytes)

    def read_many(self, keys: Iterable[str],
                  max_bytes: int = MAX_RECORD_BYTES) -> dict[str, bytes | UnreadableEntry | None]:
        """``{key: bytes, the UnreadableEntry, or None if absent}`` for several keys.

        One bad entry never stops the others (backends may parallelise).
        """
        out: dict[str, bytes | UnreadableEntry | None] = {}
        for key in keys:
            try:
                out[key] = self.read(key, max_bytes)
            except FileNotFoundError:
                out[key] = None
            except UnreadableEntry as exc:
                out[key] = exc
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
        """Names of the regular objects directly under ``dirname`` (empty if it does not exist).

        Shows every object created before the call started (on NFS, other clients'
        listings may lag by seconds: callers treat a listing as a hint and re-check).
        Symlinks, directories and special files are not objects: :meth:`list_foreign`.
        """

    def list_foreign(self, dirname: str) -> list[Foreign]:
        """Names directly under ``dirname`` that are not regular objects (symlinks,
        directories, special files), for ``evo check``. Backends without them return []."""
        return []

    @abc.abstractmethod
    def list_detail(self, dirname: str) -> list[Entry]:
        """Like :meth:`list`, with modification time and size of each object."""

    @abc.abstractmethod
    def stat(self, key: str) -> Entry | None:
        """Modification time and size of the regular object ``key``, or None if absent.

        A name that exists but is not a regular object raises :class:`UnreadableEntry`.
        """

    def exists(self, key: str) -> bool:
        """True if anything (an object, or a foreign entry) has the name ``key`` now."""
        try:
            return self.stat(key) is not None
        except UnreadableEntry:
            return True

    def move_aside(self, dirname: str, name: str, target: str | None = None) -> str:
        """Move the entry ``dirname/name`` (any kind, even one no key can name) as it is to
        ``target`` (default: a new :func:`moved_key`), without following or reading it;
        return its new key.

        FileNotFoundError if it is gone; PermissionError (or another OSError) when the
        store does not allow it. Used for entries that cannot be quarantined by copying.
        """
        raise PermissionError(f"{self.url}: this backend cannot move entries aside")

    def delete_temp(self, dirname: str, name: str) -> bool:
        """Remove a leftover temporary file (a name starting with ``TEMP_PREFIX``).

        Only backends that write temporary files (local/NFS) have any; the others return
        False. Used by ``evo check --repair`` for temp files of crashed writers.
        """
        return False

"""Local directory (also NFS) backend: temp file + fsync, then ``os.link`` / ``os.replace``.

- ``create``: write a temp file in the target's directory, fsync, ``os.link`` it to the final
  name. ``link`` fails with EEXIST if the name exists, atomically on local file systems and
  on NFS (the server does it). On NFS a resent LINK whose first reply was lost can say
  EEXIST although it had succeeded: then the temp file has two links, and we did win.
  (``os.rename``/``os.replace`` would silently overwrite: every racer would "win".)
- ``write``: temp file + fsync + ``os.replace``: readers see the old or the new file.
- ESTALE (a file deleted by another NFS client) is treated as "absent".

The store is untrusted, so nothing inside it is ever followed: every operation opens the
store's folders one component at a time with ``O_NOFOLLOW`` and works relative to that
folder's descriptor, so a symlink planted anywhere in the store (``alive -> /etc``,
``alive/x.json -> /etc/passwd``) is never read through or written through. Reads open with
``O_NOFOLLOW | O_NONBLOCK`` (a planted FIFO cannot block them), accept regular files only,
and check the size with ``fstat`` before reading at most ``max_bytes + 1`` bytes;
``read_verified`` hashes the file in chunks before it reads it whole, on one descriptor. Only the
store's root path itself may be a symlink (the user chose it).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat as stat_mode
from collections.abc import Iterator

from .backend import (
    HASH_CHUNK, MAX_RECORD_BYTES, TEMP_PREFIX, Backend, Entry, Foreign, UnreadableEntry, check_declared,
    check_dir, check_key, digest_problem, moved_key, split_key,
)
from .crash import FaultHook, no_fault

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
# Errors of the process or the machine, not of one entry: they propagate.
_NOT_PER_ENTRY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOSPC, errno.EDQUOT}


def _absent(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError) or exc.errno == errno.ESTALE


def describe_mode(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words ("a symbolic link", "a directory", ...)."""
    if stat_mode.S_ISLNK(mode):
        return "a symbolic link"
    if stat_mode.S_ISDIR(mode):
        return "a directory"
    if stat_mode.S_ISFIFO(mode):
        return "a FIFO"
    if stat_mode.S_ISSOCK(mode):
        return "a socket"
    if stat_mode.S_ISCHR(mode) or stat_mode.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _problem(exc: OSError) -> str:
    """A one-line reason for a failed open/read of one entry (never its content)."""
    if exc.errno == errno.ELOOP:
        return "is a symbolic link (never followed)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "cannot be read: permission denied"
    return f"cannot be read: {exc.strerror or type(exc).__name__}"


class LocalBackend(Backend):
    """A population directory on a local or NFS file system.

    ``fault``: called at the temp-file steps of ``write`` and ``create`` (tests kill the
    process there; see :mod:`storage.crash`).
    """

    def __init__(self, root: str | os.PathLike[str], *, fault: FaultHook | None = None):
        self.root = os.path.abspath(os.fspath(root))
        self.url = "file://" + self.root
        self._fault = fault or no_fault

    # ----- folders, opened without following anything -----
    @contextlib.contextmanager
    def _folder(self, dirname: str, create: bool = False) -> Iterator[int | None]:
        """A descriptor of the store's folder ``dirname`` (``""``: the root), or None if it
        does not exist (with ``create``, it is made). A component that is a symlink or not
        a folder raises :class:`UnreadableEntry` naming it."""
        parts = [p for p in check_dir(dirname).split("/") if p]
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        except OSError as exc:
            if _absent(exc) and create:
                os.makedirs(self.root, exist_ok=True)
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
            elif _absent(exc) or exc.errno == errno.ENOTDIR:
                yield None
                return
            else:
                raise
        try:
            for i, part in enumerate(parts):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if _absent(exc) and create:
                        try:
                            os.mkdir(part, 0o755, dir_fd=fd)
                        except FileExistsError:
                            pass
                        child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    elif _absent(exc):
                        yield None
                        return
                    elif exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        where = "/".join(parts[:i + 1])
                        raise UnreadableEntry(where, "is not a folder of the store (a symlink or a file)") from None
                    else:
                        raise
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    # ----- reading -----
    def _open_regular(self, key: str, max_bytes: int) -> tuple[int, int]:
        """``(descriptor, size)`` of the regular file ``key`` (never through a symlink, never
        blocking on a FIFO); errors as :meth:`read`, the size bound checked by ``fstat``."""
        dirname, name = split_key(key)
        with self._folder(dirname) as dfd:
            if dfd is None:
                raise FileNotFoundError(errno.ENOENT, "no such object", key)
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if _absent(exc):
                    raise FileNotFoundError(errno.ENOENT, "no such object", key) from None
                if exc.errno in _NOT_PER_ENTRY:
                    raise
                raise UnreadableEntry(key, _problem(exc)) from None
        try:
            st = os.fstat(fd)
            if not stat_mode.S_ISREG(st.st_mode):
                raise UnreadableEntry(key, f"is {describe_mode(st.st_mode)}, not a regular file")
            if st.st_size > max_bytes:
                raise UnreadableEntry(key, f"is too large ({st.st_size} bytes; at most {max_bytes} expected)")
        except BaseException:
            os.close(fd)
            raise
        return fd, st.st_size

    def read(self, key: str, max_bytes: int = MAX_RECORD_BYTES) -> bytes:
        fd, _ = self._open_regular(key, max_bytes)
        try:
            chunks, total = [], 0
            while total <= max_bytes:
                chunk = os.read(fd, min(max_bytes + 1 - total, 1 << 22))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total > max_bytes:  # it grew after fstat
                raise UnreadableEntry(key, f"is too large (more than {max_bytes} bytes)")
            return b"".join(chunks)
        except OSError as exc:
            if exc.errno in _NOT_PER_ENTRY:
                raise
            raise UnreadableEntry(key, _problem(exc)) from None
        finally:
            os.close(fd)

    def stream(self, key: str, max_bytes: int) -> Iterator[bytes]:
        fd, _ = self._open_regular(key, max_bytes)
        try:
            total = 0
            while total <= max_bytes:
                chunk = os.read(fd, min(max_bytes + 1 - total, HASH_CHUNK))
                if not chunk:
                    break
                total += len(chunk)
                yield chunk
        except OSError as exc:
            if exc.errno in _NOT_PER_ENTRY:
                raise
            raise UnreadableEntry(key, _problem(exc)) from None
        finally:
            os.close(fd)

    def read_verified(self, key: str, size: int, sha256: str) -> bytes:
        # Both passes on one descriptor: the file hashed is the file read (see Backend).
        check_declared(size, sha256)
        fd, found = self._open_regular(key, size)
        try:
            if found != size:
                raise UnreadableEntry(key, f"has {found} bytes, {size} expected")
            digest, total = hashlib.sha256(), 0
            while total <= size:
                chunk = os.pread(fd, min(size + 1 - total, HASH_CHUNK), total)
                if not chunk:
                    break
                total += len(chunk)
                digest.update(chunk)
                del chunk
            if total != size:
                raise UnreadableEntry(key, f"has {total} bytes, {size} expected" if total < size
                                      else f"is too large (more than the {size} bytes stated)")
            if digest.hexdigest() != sha256:
                raise UnreadableEntry(key, "SHA-256 does not match (damaged)")
            chunks, total = [], 0
            while total <= size:
                chunk = os.pread(fd, size + 1 - total, total)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            del chunks
            problem = digest_problem(data, size, sha256)
            if problem:
                raise UnreadableEntry(key, f"changed while it was read ({problem})")
            return data
        except OSError as exc:
            if exc.errno in _NOT_PER_ENTRY:
                raise
            raise UnreadableEntry(key, _problem(exc)) from None
        finally:
            os.close(fd)

    def stat(self, key: str) -> Entry | None:
        dirname, name = split_key(key)
        with self._folder(dirname) as dfd:
            if dfd is None:
                return None
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError as exc:
                if _absent(exc):
                    return None
                raise
        if not stat_mode.S_ISREG(st.st_mode):
            raise UnreadableEntry(key, f"is {describe_mode(st.st_mode)}, not a regular file")
        return Entry(name, st.st_mtime, st.st_size)

    def _scan(self, dirname: str, stat: str = "none") -> list[tuple[str, bool, os.stat_result | None]]:
        """(name, is a regular file, its lstat result) of every entry of the folder.

        ``stat``: "none" stats nothing (d_type from readdir tells regular files apart: the
        hot path of selection), "foreign" only the entries that are not regular files, "all"
        every entry. Entries deleted meanwhile are left out.
        """
        for attempt in (1, 2):
            try:
                with self._folder(dirname) as dfd:
                    if dfd is None:
                        return []
                    out = []
                    with os.scandir(dfd) as entries:
                        for e in entries:
                            regular = _is_regular(e)
                            st = None
                            if stat == "all" or (stat == "foreign" and not regular):
                                try:
                                    st = e.stat(follow_symlinks=False)
                                except OSError as exc:
                                    if _absent(exc):
                                        continue
                                    raise
                            out.append((e.name, regular, st))
                    return out
            except UnreadableEntry:
                return []  # the folder itself is foreign: list_foreign of its parent shows it
            except OSError as exc:
                if exc.errno != errno.ESTALE or attempt == 2:
                    raise
        return []

    def list(self, dirname: str) -> list[str]:
        # The hot path of selection (twice per child): one comprehension over readdir's
        # d_type, no call per entry. Where d_type is unknown is_file() stats, and an entry
        # deleted meanwhile raises: then the general scan, which leaves such entries out.
        try:
            with self._folder(dirname) as dfd:
                if dfd is None:
                    return []
                with os.scandir(dfd) as entries:
                    return [e.name for e in entries if e.is_file(follow_symlinks=False)]
        except UnreadableEntry:
            return []  # the folder itself is foreign: list_foreign of its parent shows it
        except OSError:
            pass
        return [name for name, regular, _ in self._scan(dirname) if regular]

    def list_detail(self, dirname: str) -> list[Entry]:
        return [Entry(name, st.st_mtime, st.st_size) for name, _, st in self._scan(dirname, stat="all")
                if st is not None and stat_mode.S_ISREG(st.st_mode)]

    def list_foreign(self, dirname: str) -> list[Foreign]:
        return [Foreign(name, describe_mode(st.st_mode)) for name, _, st in self._scan(dirname, stat="foreign")
                if st is not None and not stat_mode.S_ISREG(st.st_mode)]

    # ----- writing -----
    def _write_temp(self, dfd: int, name: str, data: bytes, point: str) -> str:
        """Write ``data`` to a fresh temp file in the folder ``dfd``, fsynced; return its name
        (after calling the fault hook with ``point``)."""
        tmp = f"{TEMP_PREFIX}{name}.{secrets.token_hex(8)}"
        fd = os.open(tmp, _TEMP_FLAGS, 0o644, dir_fd=dfd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp, dfd)
            raise
        os.close(fd)
        self._fault(point)
        return tmp

    def write(self, key: str, data: bytes) -> None:
        dirname, name = split_key(key)
        with self._folder(dirname, create=True) as dfd:
            tmp = self._write_temp(dfd, name, data, "write:after_temp")
            try:
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                _unlink_quietly(tmp, dfd)
                raise

    def create(self, key: str, data: bytes) -> bool:
        dirname, name = split_key(key)
        with self._folder(dirname, create=True) as dfd:
            tmp = self._write_temp(dfd, name, data, "create:after_temp")
            try:
                try:
                    os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                    won = True
                except FileExistsError:
                    # NFS: a resent LINK after a lost reply says EEXIST although it worked.
                    won = os.stat(tmp, dir_fd=dfd, follow_symlinks=False).st_nlink == 2
                self._fault("create:after_link")
            finally:
                _unlink_quietly(tmp, dfd)
        return won

    def delete(self, key: str) -> bool:
        return self._unlink(*split_key(key))

    def delete_temp(self, dirname: str, name: str) -> bool:
        if not name.startswith(TEMP_PREFIX) or "/" in name or name in (".", ".."):
            raise ValueError(f"not a temporary file name: {name!r}")
        return self._unlink(dirname, name)

    def _unlink(self, dirname: str, name: str) -> bool:
        """Remove the entry ``name`` of the folder ``dirname``; True if it was there."""
        with self._folder(dirname) as dfd:
            if dfd is None:
                return False
            try:
                os.unlink(name, dir_fd=dfd)
                return True
            except OSError as exc:
                if _absent(exc):
                    return False
                raise

    def move_aside(self, dirname: str, name: str, target: str | None = None) -> str:
        if not name or "/" in name or "\0" in name or name in (".", ".."):
            raise ValueError(f"not an entry name: {name!r}")
        target = target or moved_key(dirname, name)
        check_key(target)
        target_dir, target_name = split_key(target)
        with self._folder(dirname) as src, self._folder(target_dir, create=True) as dst:
            if src is None:
                raise FileNotFoundError(errno.ENOENT, "no such entry", f"{dirname}/{name}")
            # rename moves the entry itself (a symlink stays a symlink; nothing is read)
            os.rename(name, target_name, src_dir_fd=src, dst_dir_fd=dst)
        return target


def _is_regular(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def _unlink_quietly(name: str, dfd: int) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass

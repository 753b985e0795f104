"""Local directory (also NFS) backend: temp file + fsync, then ``os.link`` / ``os.replace``.

- ``create``: write a temp file in the target's directory, fsync, ``os.link`` it to the final
  name. ``link`` fails with EEXIST if the name exists, atomically on local file systems and
  on NFS (the server does it). On NFS a resent LINK whose first reply was lost can say
  EEXIST although it had succeeded: then the temp file has two links, and we did win.
  (``os.rename``/``os.replace`` would silently overwrite: every racer would "win".)
- ``write``: temp file + fsync + ``os.replace``: readers see the old or the new file.
- ESTALE (a file deleted by another NFS client) is treated as "absent".
"""

from __future__ import annotations

import errno
import os
import secrets
import stat as stat_mode

from .backend import TEMP_PREFIX, Backend, Entry, check_dir, check_key
from .crash import crash_point


def _absent(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError) or exc.errno == errno.ESTALE


class LocalBackend(Backend):
    """A population directory on a local or NFS file system."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = os.path.abspath(os.fspath(root))
        self.url = "file://" + self.root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *check_key(key).split("/"))

    def _dir(self, dirname: str) -> str:
        return os.path.join(self.root, *check_dir(dirname).split("/")) if dirname else self.root

    # ----- reading -----
    def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            if _absent(exc):
                raise FileNotFoundError(errno.ENOENT, "no such object", key) from None
            raise

    def stat(self, key: str) -> Entry | None:
        try:
            st = os.stat(self._path(key))
        except OSError as exc:
            if _absent(exc):
                return None
            raise
        return Entry(key.rsplit("/", 1)[-1], st.st_mtime, st.st_size)

    def list(self, dirname: str) -> list[str]:
        path = self._dir(dirname)
        for attempt in (1, 2):
            try:
                # d_type from readdir: no stat per entry (this is the hot path of selection)
                with os.scandir(path) as entries:
                    return [e.name for e in entries if not e.is_dir(follow_symlinks=False)]
            except (FileNotFoundError, NotADirectoryError):
                return []
            except OSError as exc:
                if exc.errno != errno.ESTALE or attempt == 2:
                    raise
        return []

    def list_detail(self, dirname: str) -> list[Entry]:
        directory = self._dir(dirname)
        out = []
        for name in self.list(dirname):
            try:
                st = os.stat(os.path.join(directory, name))
            except OSError as exc:
                if _absent(exc):
                    continue  # deleted since the listing
                raise
            if stat_mode.S_ISREG(st.st_mode):
                out.append(Entry(name, st.st_mtime, st.st_size))
        return out

    # ----- writing -----
    def _write_temp(self, path: str, data: bytes) -> str:
        """Write ``data`` to a fresh temp file beside ``path``, fsynced; return its path."""
        directory, name = os.path.split(path)
        tmp = os.path.join(directory, f"{TEMP_PREFIX}{name}.{secrets.token_hex(8)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        return tmp

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        crash_point("write:after_temp")
        try:
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        crash_point("create:after_temp")
        try:
            try:
                os.link(tmp, path)
                won = True
            except FileExistsError:
                # NFS: a resent LINK after a lost reply says EEXIST although it worked.
                won = os.stat(tmp).st_nlink == 2
            crash_point("create:after_link")
        finally:
            _unlink_quietly(tmp)
        return won

    def delete(self, key: str) -> bool:
        try:
            os.unlink(self._path(key))
            return True
        except OSError as exc:
            if _absent(exc):
                return False
            raise

    def delete_temp(self, dirname: str, name: str) -> bool:
        if not name.startswith(TEMP_PREFIX) or "/" in name or name in (".", ".."):
            raise ValueError(f"not a temporary file name: {name!r}")
        try:
            os.unlink(os.path.join(self._dir(dirname), name))
            return True
        except OSError as exc:
            if _absent(exc):
                return False
            raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

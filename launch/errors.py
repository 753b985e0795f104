"""Errors the CLI prints as one line (no traceback), and the runner that prints them."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable

from evo.errors import SettingsError, one_line


class UserError(SettingsError):
    """Bad input or environment the user can fix; the message says what and where (a
    :class:`evo.errors.SettingsError`)."""


def one_line_errors() -> tuple[type[BaseException], ...]:
    """The errors a command reports as one line: every :class:`evo.errors.EvoError` (a
    :class:`UserError`, an invalid run config, dataset, store or DNA, a misbehaving plug-in),
    the lower layers' included (``storage`` and ``dna`` are imported here, when asked for,
    so that importing this module imports nothing heavy)."""
    import dna  # noqa: F401  (registers dna.DNAError with its kind)
    import storage  # noqa: F401  (registers storage.StoreError, ...)
    from evo.errors import EvoError, caught

    return caught(EvoError)


def read_user_file(path: str, max_bytes: int, what: str) -> bytes:
    """The bytes of the regular file the user named, at most ``max_bytes`` of them; UserError
    naming ``path`` when it cannot be read, is not a regular file (a FIFO, /dev/zero, a folder)
    or is too large to be ``what``. Never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{path}: not a regular file; not {what}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > max_bytes:
        raise UserError(f"{path}: larger than {max_bytes:,} bytes; not {what}")
    return raw


def run_reporting(prog: str, func: Callable[[], int | None], errors: tuple[type[BaseException], ...]) -> int:
    """``func()``'s exit code (None counts as 0). An error of a type in ``errors`` is printed as
    ``PROG: error: MESSAGE`` on stderr (:func:`evo.errors.one_line`; exit code 2); Ctrl-C as
    ``PROG: interrupted`` (130). Anything else propagates.

    The check is ``isinstance``, made when the error arrives: it sees the lower layers' errors
    registered with an :class:`evo.errors.EvoError` kind by then (their module may be imported
    by the command itself, after ``errors`` was made), which an ``except`` clause would not."""
    try:
        return int(func() or 0)
    except Exception as exc:
        if not isinstance(exc, errors):
            raise
        print(f"{prog}: error: {one_line(exc, limit=2000)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130

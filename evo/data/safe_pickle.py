"""Read the CIFAR "python version" batches without running code from the file.

The official CIFAR-10/100 batches are pickles of a dict holding a numpy array and lists.
A pickle can name any importable callable, so a hostile file given as a dataset could run
code on every worker. :func:`load_restricted` allows only the few globals these files
actually use (numpy array and dtype reconstruction, and ``_codecs.encode``, which
protocol-2 pickles written by Python 3 use for ``bytes``) and refuses everything else.

Torch-free.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

from evo.errors import DataError


class RefusedPickle(DataError, pickle.UnpicklingError):
    """The pickle names a global outside the allow-list. One-line message."""


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import codecs

    import numpy as np

    try:  # numpy >= 2 moved the implementation to numpy._core
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    reconstruct = multiarray._reconstruct
    frombuffer = numeric._frombuffer
    return {
        # Files written by numpy 1.x (the official ones) and numpy 2.x name different modules
        # for the same functions; map both to whatever this numpy has.
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,    # pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file, encoding="bytes")
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise RefusedPickle(
                f"refusing to load {module}.{name} (only numpy arrays, dicts and lists are allowed)"
            ) from None


def load_restricted(data: bytes) -> Any:
    """Unpickle ``data`` allowing only numpy arrays, dtypes and plain containers.

    Raises :class:`RefusedPickle` for any other global, and the usual unpickling errors
    (``pickle.UnpicklingError``, ``EOFError``, ...) for a malformed stream. Byte strings
    stay ``bytes`` (``encoding="bytes"``), so the CIFAR keys read as ``b"data"``.
    """
    return _RestrictedUnpickler(io.BytesIO(data)).load()

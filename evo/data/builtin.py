"""The built-in datasets: scikit-learn's digits and the CIFAR-10/100 python batches.

Both are read into a :class:`evo.data.base.HostDataset` (numpy only) and split by a fixed
permutation that depends on ``split_seed`` alone (:func:`split_permutation`): digits 60/20/20
train/val/test, CIFAR's training set 45,000/5,000 train/validation with the official test
set as the test split (as in Real et al. 2017). CIFAR batches are read from a local
directory or an fsspec URL, through :mod:`evo.data.safe_pickle` (never a plain unpickle).
:mod:`evo.data.datasets` dispatches to this module by spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from evo.data.base import CIFAR_AUGMENT, NO_AUGMENT, DatasetError, HostDataset
from evo.data.safe_pickle import RefusedPickle, load_restricted
from evo.errors import one_line

CIFAR_VALIDATION = 5_000
DIGITS_TRAIN = 1078          # 60% of scikit-learn's 1797 digits


def split_permutation(n: int, split_seed: int) -> np.ndarray:
    """The fixed permutation of ``range(n)`` that every split of this module uses."""
    return np.random.Generator(np.random.PCG64(split_seed)).permutation(n)


def check_builtin(name: str, path: str) -> dict[str, Any]:
    """Check, without loading it, that the built-in dataset ``name`` (``digits``, or a CIFAR
    at ``path``) can be read: scikit-learn importable for digits; for CIFAR every batch file
    found the way :func:`read_cifar` looks (local path or fsspec URL, the batch directory or
    its parent) and its first byte read. Returns ``{"name", "train_images"}`` (nominal for
    CIFAR). :class:`evo.data.base.DatasetError` with one line naming the path and what is wrong.
    """
    if name == "digits":
        try:
            import sklearn.datasets  # noqa: F401  (bundled with scikit-learn; nothing to download)
        except ImportError:
            raise DatasetError("digits needs scikit-learn: pip install scikit-learn") from None
        return {"name": name, "train_images": DIGITS_TRAIN}
    layout = CIFAR[name]
    fs, root = _open_fs(name, path)
    try:
        is_dir = bool(fs.isdir(root)) if root else False
    except Exception as exc:  # network/permission errors from any fsspec backend
        raise DatasetError(f"{name}: cannot read {path}: {one_line(exc)}") from None
    if not is_dir:
        what = "is a file, not a directory" if _exists(fs, root, name, path) else "does not exist"
        raise DatasetError(f"{name}: {path} {what}; {layout.expected()}")
    root = _find_batch_dir(fs, root, layout, name, path)
    for filename in layout.train_files + (layout.test_file,):
        where = f"{root}/{filename}"
        if not _exists(fs, where, name, where):
            raise DatasetError(f"{name}: {where} is missing; {layout.expected()}")
        try:
            with fs.open(where, "rb") as f:
                first = f.read(1)
        except Exception as exc:
            raise DatasetError(f"{name}: cannot read {where}: {one_line(exc)}") from None
        if not first:
            raise DatasetError(f"{name}: {where} is empty; {layout.expected()}")
    return {"name": name, "train_images": layout.train_images - CIFAR_VALIDATION}


# --- digits ---------------------------------------------------------------------------

def read_digits(split_seed: int) -> HostDataset:
    """scikit-learn's 8x8 digits, 0..16 scaled to 0..255, split 60/20/20 by ``split_seed``."""
    pixels, target = _digits_table()
    images = np.rint(pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    x = images[:, None, :, :]
    y = target
    order = split_permutation(len(y), split_seed)
    n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
    parts = np.split(order, [n_train, n_train + n_val])
    (trx, try_), (vax, vay), (tex, tey) = ((x[p], y[p]) for p in parts)
    return HostDataset("digits", 10, NO_AUGMENT, trx, try_, vax, vay, tex, tey)


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """(pixels as float64 (n, 64), labels as int64) of scikit-learn's bundled digits table,
    read from its file without importing ``sklearn.datasets`` (which costs ~140 MB of
    memory); ``load_digits`` when the file is not where scikit-learn keeps it."""
    import gzip
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    for base in (spec.submodule_search_locations or []) if spec else []:
        path = Path(base) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",", dtype=np.float64)
            return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


# --- CIFAR ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _CifarLayout:
    dirname: str
    title: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: bytes
    num_classes: int
    train_images: int           # in the official files, before the validation split

    def expected(self) -> str:
        return (f"expected the '{self.title}' directory {self.dirname}/ containing "
                f"{_list_files(self.train_files)} and {self.test_file}")


def _list_files(files: tuple[str, ...]) -> str:
    if len(files) > 2 and files[0].endswith("_1"):
        return f"{files[0]}..{len(files)}"
    return " and ".join(files)


CIFAR = {
    "cifar10": _CifarLayout("cifar-10-batches-py", "CIFAR-10 python version",
                            tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", b"labels", 10, 50_000),
    "cifar100": _CifarLayout("cifar-100-python", "CIFAR-100 python version",
                             ("train",), "test", b"fine_labels", 100, 50_000),
}


def read_cifar(name: str, path: str, split_seed: int, test: bool = True) -> HostDataset:
    """CIFAR ``name`` (a key of :data:`CIFAR`) from ``path``: training batches split into
    train and :data:`CIFAR_VALIDATION` validation images by ``split_seed``; the test batch only if ``test``.
    DatasetError (one line) for missing or malformed files."""
    layout = CIFAR[name]
    fs, root = _open_fs(name, path)
    root = _find_batch_dir(fs, root, layout, name, path)
    train = [_read_batch(fs, root, f, layout, name) for f in layout.train_files]
    x = np.concatenate([b[0] for b in train])
    y = np.concatenate([b[1] for b in train])
    if test:
        test_x, test_y = _read_batch(fs, root, layout.test_file, layout, name)
    else:   # the search never reads the test batch
        test_x, test_y = np.zeros((0, 3, 32, 32), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    if len(y) <= CIFAR_VALIDATION:
        raise DatasetError(f"{name}: {path} has only {len(y)} training images; "
                           f"need more than the {CIFAR_VALIDATION} held out for validation")
    order = split_permutation(len(y), split_seed)
    val, tr = order[:CIFAR_VALIDATION], order[CIFAR_VALIDATION:]
    return HostDataset(name, layout.num_classes, CIFAR_AUGMENT,
                       x[tr], y[tr], x[val], y[val], test_x, test_y)


def _open_fs(name: str, path: str) -> tuple[Any, str]:
    import fsspec

    if fsspec.core.split_protocol(path)[0] == "memory":
        raise DatasetError(f"{name}: {path}: memory:// is evo's in-process population store (for tests), "
                           f"not a place for data; give a directory or a URL such as gs://BUCKET/PATH")
    try:
        fs, root = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as exc:
        raise DatasetError(f"{name}: cannot open {path}: {one_line(exc)}") from None
    return fs, root.rstrip("/")


def _find_batch_dir(fs: Any, root: str, layout: _CifarLayout, name: str, path: str) -> str:
    first = layout.train_files[0]
    for candidate in (root, f"{root}/{layout.dirname}"):
        if _exists(fs, f"{candidate}/{first}", name, path):
            return candidate
    raise DatasetError(f"{name}: {path} has no {first}; {layout.expected()}")


def _exists(fs: Any, path: str, name: str, shown: str) -> bool:
    try:
        return bool(fs.isfile(path))
    except Exception as exc:  # network/permission errors from any fsspec backend
        raise DatasetError(f"{name}: cannot read {shown}: {one_line(exc)}") from None


def _read_batch(fs: Any, root: str, filename: str, layout: _CifarLayout,
                name: str) -> tuple[np.ndarray, np.ndarray]:
    where = f"{root}/{filename}"
    if not _exists(fs, where, name, where):
        raise DatasetError(f"{name}: {where} is missing; {layout.expected()}")
    try:
        with fs.open(where, "rb") as f:
            raw = f.read()
    except Exception as exc:
        raise DatasetError(f"{name}: cannot read {where}: {one_line(exc)}") from None
    try:
        batch = load_restricted(raw)
    except RefusedPickle as exc:
        raise DatasetError(f"{name}: {where}: {exc}") from None
    except Exception as exc:  # any malformed stream: EOFError, UnpicklingError, TypeError, ...
        raise DatasetError(f"{name}: {where} is not a CIFAR python batch "
                           f"({one_line(exc, with_type=True)})") from None
    return _batch_arrays(batch, where, layout, name)


def _batch_arrays(batch: Any, where: str, layout: _CifarLayout, name: str) -> tuple[np.ndarray, np.ndarray]:
    key = layout.label_key.decode()
    if not isinstance(batch, dict) or b"data" not in batch or layout.label_key not in batch:
        raise DatasetError(f"{name}: {where} is not a CIFAR python batch "
                           f"(expected a dict with keys b'data' and b'{key}')")
    data, labels = batch[b"data"], batch[layout.label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DatasetError(f"{name}: {where}: b'data' must be a uint8 array of shape (N, 3072), "
                           f"got {dtype} {shape}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DatasetError(f"{name}: {where}: b'{key}' must be a list of integers") from None
    if y.shape != (data.shape[0],):
        raise DatasetError(f"{name}: {where}: {y.size} labels for {data.shape[0]} images")
    if y.size and (y.min() < 0 or y.max() >= layout.num_classes):
        raise DatasetError(f"{name}: {where}: labels must be in 0..{layout.num_classes - 1}, "
                           f"got {y.min()}..{y.max()}")
    return data.reshape(-1, 3, 32, 32), y

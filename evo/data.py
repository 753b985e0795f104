"""Image datasets, split once and kept resident on the training device as uint8.

Specs (the run config's ``dataset``):

- ``digits``: scikit-learn's bundled 8x8 grey digits (1797 images, 10 classes), values
  0..16 scaled to 0..255, split 60/20/20 train/val/test by a fixed permutation.
- ``cifar10=PATH`` / ``cifar100=PATH``: the official "python version" batches in a local
  directory or at an fsspec URL every worker reaches (``gs://bucket/cifar-10-batches-py``);
  PATH may be the batch directory itself or its parent. ``memory://`` is refused: in evo it
  names the population store that lives inside one process (``storage/memory.py``). The training set is split 45,000/5,000 train/validation
  by a fixed permutation (as in Real et al. 2017); the official test set is the test split.

The splits depend on ``split_seed`` only, never on the run seed, so every worker of a run
sees the same validation set. Reading (:func:`read_dataset`) is numpy-only; torch is
imported only to put the arrays on a device (:func:`load_dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .safe_pickle import RefusedPickle, load_restricted

if TYPE_CHECKING:
    import torch

SPECS = "digits, cifar10=PATH, cifar100=PATH"
CIFAR_VALIDATION = 5_000
DIGITS_TRAIN = 1078          # 60% of scikit-learn's 1797 digits


class DatasetError(ValueError):
    """A dataset spec that is unknown, or data that is missing or malformed. One line."""


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation a dataset calls for.

    ``crop_padding``: pad each side by this many pixels, then crop back to the original size
    at a random offset (0: no cropping). ``flip``: mirror left-right with probability 1/2.
    """

    crop_padding: int = 0
    flip: bool = False

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.flip


NO_AUGMENT = Augment()
CIFAR_AUGMENT = Augment(crop_padding=4, flip=True)


@dataclass(frozen=True, eq=False)
class HostDataset:
    """The three splits as numpy arrays: images uint8 ``(N, C, H, W)``, labels int64 ``(N,)``."""

    name: str
    num_classes: int
    augment: Augment
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.train_x.shape[1:])  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class DeviceDataset:
    """A dataset resident on one device: uint8 NCHW images and int64 labels per split.

    ``mean``/``std`` are per-channel statistics of the training split in 0..255 units;
    :meth:`normalize` applies them on the device.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    augment: Augment
    train_x: "torch.Tensor"
    train_y: "torch.Tensor"
    val_x: "torch.Tensor"
    val_y: "torch.Tensor"
    test_x: "torch.Tensor"
    test_y: "torch.Tensor"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    _scale: "torch.Tensor" = field(repr=False)   # 1/std, shape (1, C, 1, 1)
    _shift: "torch.Tensor" = field(repr=False)   # -mean/std, shape (1, C, 1, 1)

    @property
    def device(self) -> "torch.device":
        return self.train_x.device

    def normalize(self, x_uint8: "torch.Tensor") -> "torch.Tensor":
        """Float32 ``(x - mean) / std`` per channel, computed on ``x``'s device (same shape)."""
        return x_uint8.float().mul_(self._scale).add_(self._shift)

    def split(self, name: str) -> tuple["torch.Tensor", "torch.Tensor"]:
        """``(images, labels)`` of ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r} (train, val, test)")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


def read_dataset(spec: str, *, split_seed: int = 0) -> HostDataset:
    """Read and split the dataset named by ``spec`` into numpy arrays (no torch).

    Raises :class:`DatasetError` (one line, naming the path and the expected layout) for an
    unknown spec or missing/malformed data.
    """
    name, _, path = spec.partition("=")
    if name == "digits" and not path:
        return _read_digits(split_seed)
    if name in _CIFAR and path:
        return _read_cifar(name, path, split_seed)
    if name in _CIFAR:
        raise DatasetError(f"{name}: needs a path, e.g. {name}=/data/{_CIFAR[name].dirname}")
    if name == "synthetic":
        raise DatasetError("synthetic: the synthetic mode trains nothing and has no images")
    raise DatasetError(f"unknown dataset {spec!r} (choose from {SPECS})")


def check_dataset(spec: str) -> dict[str, Any]:
    """Check that ``spec`` names a dataset whose files the loader will find and can read,
    without loading it: the form of the spec, then for CIFAR every batch file, looked up the
    way :func:`read_dataset` looks (local path or fsspec URL, the batch directory or its
    parent) and its first byte read. Returns ``{"name", "train_images"}`` (the training-split
    size the loader will produce, nominal for CIFAR; None for synthetic).

    Raises :class:`DatasetError` with one line naming the path and what is wrong.
    """
    from .config import ConfigError, check_dataset_spec

    try:
        name = check_dataset_spec(spec)
    except ConfigError as exc:
        raise DatasetError(str(exc)) from None
    if name == "synthetic":
        return {"name": name, "train_images": None}
    if name.startswith("nb201-"):
        from .tabular import TableError, table_path

        try:
            table_path(name)
        except TableError as exc:
            raise DatasetError(str(exc)) from None
        return {"name": name, "train_images": None}
    if name == "digits":
        try:
            import sklearn.datasets  # noqa: F401  (bundled with scikit-learn; nothing to download)
        except ImportError:
            raise DatasetError("digits needs scikit-learn: pip install scikit-learn") from None
        return {"name": name, "train_images": DIGITS_TRAIN}
    path = spec.partition("=")[2]
    layout = _CIFAR[name]
    fs, root = _open_fs(name, path)
    try:
        is_dir = bool(fs.isdir(root)) if root else False
    except Exception as exc:  # network/permission errors from any fsspec backend
        raise DatasetError(f"{name}: cannot read {path}: {_one_line(exc)}") from None
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
            raise DatasetError(f"{name}: cannot read {where}: {_one_line(exc)}") from None
        if not first:
            raise DatasetError(f"{name}: {where} is empty; {layout.expected()}")
    return {"name": name, "train_images": layout.train_images - CIFAR_VALIDATION}


def load_dataset(spec: str, device: "torch.device | str", *, split_seed: int = 0) -> DeviceDataset:
    """Read ``spec`` (see :func:`read_dataset`) and put every split on ``device``.

    Normalisation statistics come from the training split alone.
    """
    return to_device(read_dataset(spec, split_seed=split_seed), device)


def to_device(host: HostDataset, device: "torch.device | str") -> DeviceDataset:
    """Copy a :class:`HostDataset` to ``device`` and compute its normalisation."""
    import torch

    device = torch.device(device)
    mean, std = channel_stats(host.train_x)

    def put(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    stat_shape = (1, len(mean), 1, 1)
    scale = torch.tensor([1.0 / s for s in std], dtype=torch.float32, device=device).view(stat_shape)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32, device=device).view(stat_shape)
    return DeviceDataset(
        name=host.name, num_classes=host.num_classes, input_shape=host.input_shape,
        augment=host.augment,
        train_x=put(host.train_x), train_y=put(host.train_y),
        val_x=put(host.val_x), val_y=put(host.val_y),
        test_x=put(host.test_x), test_y=put(host.test_y),
        mean=mean, std=std, _scale=scale, _shift=shift,
    )


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and standard deviation of uint8 images ``(N, C, H, W)``.

    Computed from a 256-bin histogram per channel, so no float copy of the data is made.
    A constant channel gets std 1 (normalisation then only centres it).
    """
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].ravel(), minlength=256).astype(np.float64)
        total = counts.sum()
        mean = float((counts * values).sum() / total)
        var = float((counts * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(float(np.sqrt(var)) if var > 0 else 1.0)
    return tuple(means), tuple(stds)


def split_permutation(n: int, split_seed: int) -> np.ndarray:
    """The fixed permutation of ``range(n)`` that every split of this module uses."""
    return np.random.Generator(np.random.PCG64(split_seed)).permutation(n)


# --- digits ---------------------------------------------------------------------------

def _read_digits(split_seed: int) -> HostDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    x = images[:, None, :, :]
    y = np.asarray(bunch.target, dtype=np.int64)
    order = split_permutation(len(y), split_seed)
    n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
    parts = np.split(order, [n_train, n_train + n_val])
    (trx, try_), (vax, vay), (tex, tey) = ((x[p], y[p]) for p in parts)
    return HostDataset("digits", 10, NO_AUGMENT, trx, try_, vax, vay, tex, tey)


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


_CIFAR = {
    "cifar10": _CifarLayout("cifar-10-batches-py", "CIFAR-10 python version",
                            tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", b"labels", 10, 50_000),
    "cifar100": _CifarLayout("cifar-100-python", "CIFAR-100 python version",
                             ("train",), "test", b"fine_labels", 100, 50_000),
}


def _read_cifar(name: str, path: str, split_seed: int) -> HostDataset:
    layout = _CIFAR[name]
    fs, root = _open_fs(name, path)
    root = _find_batch_dir(fs, root, layout, name, path)
    train = [_read_batch(fs, root, f, layout, name) for f in layout.train_files]
    x = np.concatenate([b[0] for b in train])
    y = np.concatenate([b[1] for b in train])
    test_x, test_y = _read_batch(fs, root, layout.test_file, layout, name)
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
        raise DatasetError(f"{name}: cannot open {path}: {_one_line(exc)}") from None
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
        raise DatasetError(f"{name}: cannot read {shown}: {_one_line(exc)}") from None


def _read_batch(fs: Any, root: str, filename: str, layout: _CifarLayout,
                name: str) -> tuple[np.ndarray, np.ndarray]:
    where = f"{root}/{filename}"
    if not _exists(fs, where, name, where):
        raise DatasetError(f"{name}: {where} is missing; {layout.expected()}")
    try:
        with fs.open(where, "rb") as f:
            raw = f.read()
    except Exception as exc:
        raise DatasetError(f"{name}: cannot read {where}: {_one_line(exc)}") from None
    try:
        batch = load_restricted(raw)
    except RefusedPickle as exc:
        raise DatasetError(f"{name}: {where}: {exc}") from None
    except Exception as exc:  # any malformed stream: EOFError, UnpicklingError, TypeError, ...
        raise DatasetError(f"{name}: {where} is not a CIFAR python batch "
                           f"({type(exc).__name__}: {_one_line(exc)})") from None
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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

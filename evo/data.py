"""Image datasets, split once and kept resident on the training device as uint8.

Specs (the run config's ``dataset``):

- ``digits``: scikit-learn's bundled 8x8 grey digits (1797 images, 10 classes), values
  0..16 scaled to 0..255, split 60/20/20 train/val/test by a fixed permutation.
- ``cifar10=PATH`` / ``cifar100=PATH``: the official "python version" batches in a local
  directory or at an fsspec URL every worker reaches (``gs://bucket/cifar-10-batches-py``);
  PATH may be the batch directory itself or its parent. ``memory://`` is refused: in evo it
  names the population store that lives inside one process (``storage/memory.py``). The training set is split 45,000/5,000 train/validation
  by a fixed permutation (as in Real et al. 2017); the official test set is the test split.
- ``imagefolder=PATH``, ``npz=PATH``, ``hf=PATH``: the user's own images (a folder of class
  folders, NumPy arrays, a Hugging Face dataset saved to disk or as parquet; local or
  ``gs://``), turned into arrays as the run's ``data`` settings say (:mod:`evo.decoding`,
  :mod:`evo.imagefolder`, :mod:`evo.arraysets`, :mod:`evo.huggingface`). In a run they are decoded once, into the
  population directory, for every worker (:func:`evo.userdata.prepare_data`, :mod:`evo.datacache`).

The splits depend on ``split_seed`` only, never on the run seed, so every worker of a run
sees the same validation set. Reading (:func:`read_dataset`) is numpy-only; torch is
imported only to put the arrays on a device (:func:`load_dataset`). The search asks for the
``train`` and ``val`` splits only: the test split is read by ``evo evaluate``, ``evo best
--export`` and retraining, never by a worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .config import USER_DATASETS, DataSettings
from .datacache import human_bytes

if TYPE_CHECKING:
    import torch

    from storage import DataCacheFacet

SPECS = "digits, cifar10=PATH, cifar100=PATH, imagefolder=PATH, npz=PATH, hf=PATH"
SPLITS = ("train", "val", "test")
SEARCH_SPLITS = ("train", "val")   # what a worker loads: the search never sees the test split


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
    """The three splits as numpy arrays: images uint8 ``(N, C, H, W)``, labels int64 ``(N,)``.

    A split that was not asked for is empty (0 images). For user datasets, ``class_names``
    are the classes in label order, ``preprocessing`` what every image went through
    (``dna.portable_images.Preprocessing.to_dict()``; None: arrays used as stored),
    ``summary`` what decoding found, and ``data_id`` the SHA-256 identity of the run's
    decoded cache the arrays came from (None when not read from a cache).
    """

    name: str
    num_classes: int
    augment: Augment
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: tuple[str, ...] = ()
    preprocessing: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    data_id: str | None = None

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
    class_names: tuple[str, ...] = ()
    data_id: str | None = None                   # the run's decoded cache (user datasets)
    splits: tuple[str, ...] = SPLITS             # the splits that were loaded (the others are empty)

    @property
    def device(self) -> "torch.device":
        return self.train_x.device

    def normalize(self, x_uint8: "torch.Tensor") -> "torch.Tensor":
        """Float32 ``(x - mean) / std`` per channel, computed on ``x``'s device (same shape)."""
        return x_uint8.float().mul_(self._scale).add_(self._shift)

    def split(self, name: str) -> tuple["torch.Tensor", "torch.Tensor"]:
        """``(images, labels)`` of ``train``, ``val`` or ``test``; ValueError for a split that
        was not loaded (a worker never loads ``test``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r} (train, val, test)")
        if name not in self.splits:
            raise ValueError(f"the {name} split was not loaded (the search never reads the test split)")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


def read_dataset(spec: str, *, split_seed: int = 0, settings: DataSettings | None = None,
                 splits: tuple[str, ...] = SPLITS, progress: Callable[[str, int, int], None] | None = None
                 ) -> HostDataset:
    """Read and split the dataset named by ``spec`` into numpy arrays (no torch).

    ``splits``: the splits to keep (the others come back empty; CIFAR's test batch is then
    not even read). User datasets are decoded from their source here, with ``settings``
    (the run's ``data`` settings; default: :class:`DataSettings`'s) and ``progress(phase,
    done, total)``; a run reads them through its cache instead (:func:`evo.userdata.prepare_data`).

    Raises :class:`DatasetError` (one line, naming the path and the expected layout) for an
    unknown spec or missing/malformed data.
    """
    from .builtin_data import CIFAR, read_cifar, read_digits

    check_splits(splits)
    name, _, path = spec.partition("=")
    if name == "digits" and not path:
        return _only(read_digits(split_seed), splits)
    if name in CIFAR and path:
        return _only(read_cifar(name, path, split_seed, test="test" in splits), splits)
    if name in USER_DATASETS and path:
        from .userdata import read_user

        return read_user(spec, settings or DataSettings(), splits, progress)
    if name in USER_DATASETS:
        raise DatasetError(f"{name}: needs a path, e.g. {name}=/data/my-images")
    if name in CIFAR:
        raise DatasetError(f"{name}: needs a path, e.g. {name}=/data/{CIFAR[name].dirname}")
    if name == "synthetic":
        raise DatasetError("synthetic: the synthetic mode trains nothing and has no images")
    raise DatasetError(f"unknown dataset {spec!r} (choose from {SPECS})")


def check_splits(splits: tuple[str, ...]) -> None:
    """ValueError unless ``splits`` includes ``train`` and names only known splits."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or "train" not in splits:
        raise ValueError(f"splits must include train and be among {', '.join(SPLITS)}, got {splits!r}")


def _only(host: HostDataset, splits: tuple[str, ...]) -> HostDataset:
    """``host`` with the splits not in ``splits`` emptied (nothing of them kept in memory)."""
    from dataclasses import replace

    changes = {}
    for name in SPLITS:
        if name not in splits:
            x, y = getattr(host, f"{name}_x"), getattr(host, f"{name}_y")
            changes[f"{name}_x"] = np.zeros((0, *x.shape[1:]), dtype=x.dtype)
            changes[f"{name}_y"] = np.zeros(0, dtype=y.dtype)
    return replace(host, **changes) if changes else host


def available_host_memory() -> int | None:
    """Bytes of memory this machine can still give (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def device_memory(device: "torch.device") -> int | None:
    """Free bytes on ``device`` (a CUDA device's free memory; the host's for the CPU)."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return available_host_memory()
    return None


def check_fits(host: HostDataset, device: "torch.device", free: int | None, splits: tuple[str, ...]) -> None:
    """DatasetError (how large, how much is free, what to do) unless the splits of ``host``
    fit into ``free`` bytes of ``device`` (None: unknown, not checked) with room to train."""
    sizes = {s: getattr(host, f"{s}_x").nbytes + getattr(host, f"{s}_y").nbytes for s in splits}
    need = sum(sizes.values())
    if free is None or need <= 0.8 * free:   # the rest is for the model, activations and batches
        return
    parts = " + ".join(f"{s} {human_bytes(n)}" for s, n in sizes.items())
    c, h, w = host.input_shape
    raise DatasetError(f"{host.name}: the dataset takes {human_bytes(need)} on {device} ({parts}; {c}x{h}x{w} "
                       f"images) but {device} has {human_bytes(free)} free, and training needs room beyond the "
                       "data; use a smaller --image-size, --color grayscale, fewer images, or a device with more memory")


def check_dataset(spec: str, settings: DataSettings | None = None) -> dict[str, Any]:
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
    if name in USER_DATASETS:
        from .userdata import check_user

        return check_user(spec, settings or DataSettings())
    from .builtin_data import check_builtin

    return check_builtin(name, spec.partition("=")[2])


def load_dataset(spec: str, device: "torch.device | str", *, split_seed: int = 0,
                 settings: DataSettings | None = None, cache: "DataCacheFacet | None" = None,
                 splits: tuple[str, ...] = SPLITS) -> DeviceDataset:
    """Read ``spec`` (see :func:`read_dataset`) and put ``splits`` on ``device`` (the others
    are empty).

    A user dataset is read through the run's cache when ``cache`` (the store's ``datacache``) is given
    (:func:`evo.userdata.prepare_data`; pass the run's ``config.data`` as ``settings``), else decoded
    from its source. Normalisation statistics come from the training split alone.
    DatasetError when the splits do not fit into the device's free memory.
    """
    name = spec.partition("=")[0]
    if name in USER_DATASETS and cache is not None:
        from .userdata import prepare_data

        host = prepare_data(spec, settings or DataSettings(), cache, splits=splits)
    else:
        host = read_dataset(spec, split_seed=split_seed, settings=settings, splits=splits)
    return to_device(host, device, splits=splits)


def to_device(host: HostDataset, device: "torch.device | str", *, splits: tuple[str, ...] = SPLITS,
              free: int | None | str = "ask") -> DeviceDataset:
    """Copy ``splits`` of a :class:`HostDataset` to ``device`` and compute its normalisation.

    DatasetError (:func:`check_fits`) when they do not fit into ``free`` bytes (default: what
    the device says is free).
    """
    import torch

    device = torch.device(device)
    check_fits(host, device, device_memory(device) if free == "ask" else free, splits)
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
        class_names=host.class_names, data_id=host.data_id, splits=tuple(splits),
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



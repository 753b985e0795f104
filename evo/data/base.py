"""What every module of :mod:`evo.data` shares: the split names, the one-line
:class:`DatasetError`, augmentation, the numpy :class:`HostDataset`, and small helpers.

The bottom of the package: it imports nothing of evo (and neither torch nor PIL), so the
readers (:mod:`evo.data.builtin`, :mod:`evo.data.imagefolder`, :mod:`evo.data.arrays`,
:mod:`evo.data.huggingface`), the decoder and the cache import it, and the dispatch
(:mod:`evo.data.datasets`) sits on top of them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from evo.errors import DataError

SPLITS = ("train", "val", "test")
SEARCH_SPLITS = ("train", "val")   # what a worker loads: the search never sees the test split


class DatasetError(DataError, ValueError):
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


def check_splits(splits: tuple[str, ...]) -> None:
    """ValueError unless ``splits`` includes ``train`` and names only known splits."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or "train" not in splits:
        raise ValueError(f"splits must include train and be among {', '.join(SPLITS)}, got {splits!r}")


def only_splits(host: HostDataset, splits: tuple[str, ...]) -> HostDataset:
    """``host`` with the splits not in ``splits`` emptied (nothing of them kept in memory)."""
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


def human_bytes(n: float) -> str:
    """``1.5 MiB`` style."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"

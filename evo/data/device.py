"""A dataset resident on the training device: :class:`DeviceDataset` and :func:`to_device`.

The only module of :mod:`evo.data` that uses torch, and it imports torch only inside the
functions that need it (the annotations are strings), so importing it stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from evo.data.base import SPLITS, Augment, DatasetError, HostDataset, available_host_memory, human_bytes

if TYPE_CHECKING:
    import torch


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
    preprocessing: dict | None = None            # how a user dataset's images were decoded (size, colour)
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
        preprocessing=host.preprocessing,
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

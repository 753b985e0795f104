"""Training batches drawn, normalised and augmented entirely on the device.

An epoch's randomness (a permutation of the training split, one crop offset, one flip flag
and, with cutout, one cutout centre per image) is drawn once at the start of the epoch, by
a seeded ``torch.Generator`` on the device, into buffers whose addresses never change. Each
step reads the row selected by a cursor that lives on the device, so a step is pure device
work at fixed addresses: it can be captured in a CUDA graph and replayed, and a replayed
step draws exactly the batch an eager step would have drawn under the same seed. The host
only starts a new epoch (:meth:`EpochSampler.new_epoch`) every ``steps_per_epoch`` steps.

Epochs drop the remainder: ``len(train) // batch_size`` steps, each image at most once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evo.data.base import NO_AUGMENT, Augment
from evo.data.device import DeviceDataset


def cutout(x: torch.Tensor, centers: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square of each image of a float batch ``(B, C, H, W)``
    (DeVries & Taylor 2017), centred at ``centers[b] = (cy, cx)`` and clipped at the borders.

    Zero is the mean colour after normalisation. Pure device work (a mask from broadcast
    comparisons), so it can be captured in a CUDA graph; the result has ``x``'s shape.
    """
    b, _, h, w = x.shape
    lo = centers - size // 2                                   # (B, 2): top-left corner
    rows = torch.arange(h, device=x.device).expand(b, h)
    cols = torch.arange(w, device=x.device).expand(b, w)
    in_rows = (rows >= lo[:, 0:1]) & (rows < lo[:, 0:1] + size)
    in_cols = (cols >= lo[:, 1:2]) & (cols < lo[:, 1:2] + size)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


def crop_flip(x: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None,
              padding: int) -> torch.Tensor:
    """Random-crop-with-padding and horizontal flip of a float batch ``(B, C, H, W)``.

    The batch is zero-padded by ``padding`` on each side (zero is the mean colour after
    normalisation) and the ``H x W`` window at ``offsets[b] = (dy, dx)`` (each in
    ``0..2*padding``) is kept; where ``flips[b]`` is true the window's columns are read right
    to left. Both become one gather per axis, so the result has ``x``'s shape and dtype and
    no per-image Python work is done. ``offsets``/``flips`` may be None (no crop / no flip).
    """
    b, c, h, w = x.shape
    crop = padding > 0 and offsets is not None
    if not crop and flips is None:
        return x
    cols = torch.arange(w, device=x.device).expand(b, w)
    if crop:
        x = F.pad(x, (padding, padding, padding, padding))
        rows = offsets[:, 0:1] + torch.arange(h, device=x.device)
        x = x.gather(2, rows[:, None, :, None].expand(b, c, h, x.shape[3]))
        cols = cols + offsets[:, 1:2]
    if flips is not None:
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))


class EpochSampler:
    """Per-step training batches of ``data``'s training split, ready for the model.

    :meth:`next_batch` returns ``(images float32 normalised, labels int64)`` and advances
    the device-side cursor; :meth:`new_epoch` must be called before the first step and
    after every ``steps_per_epoch`` steps. ``cutout`` > 0 zeroes a square of that side in
    every training image (after crop and flip). :meth:`state_dict` / :meth:`load_state_dict`
    save and restore the epoch's data order and the cursor (a checkpoint taken mid-epoch
    resumes with exactly the batches that were to come).
    """

    def __init__(self, data: DeviceDataset, batch_size: int, augment: Augment,
                 generator: torch.Generator, cutout: int = 0) -> None:
        n = int(data.train_y.shape[0])
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} is larger than the {n} training images of {data.name}")
        self.data = data
        self.batch_size = batch_size
        self.augment = augment if augment.enabled else NO_AUGMENT
        self.generator = generator
        self.steps_per_epoch = n // batch_size
        dev = data.device
        shape = (self.steps_per_epoch, batch_size)
        self.order = torch.zeros(shape, dtype=torch.long, device=dev)
        self.offsets = (torch.zeros(shape + (2,), dtype=torch.long, device=dev)
                        if self.augment.crop_padding > 0 else None)
        self.flips = torch.zeros(shape, dtype=torch.bool, device=dev) if self.augment.flip else None
        if cutout < 0:
            raise ValueError(f"cutout must be >= 0, got {cutout}")
        self.cutout_size = int(cutout)
        self.centers = torch.zeros(shape + (2,), dtype=torch.long, device=dev) if self.cutout_size else None
        self.cursor = torch.zeros(1, dtype=torch.long, device=dev)

    def new_epoch(self) -> None:
        """Draw the next epoch's permutation, offsets and flips; rewind the cursor."""
        dev, g, shape = self.data.device, self.generator, self.order.shape
        n = int(self.data.train_y.shape[0])
        perm = torch.randperm(n, generator=g, device=dev)
        self.order.copy_(perm[: shape[0] * shape[1]].view(shape))
        if self.offsets is not None:
            high = 2 * self.augment.crop_padding + 1
            self.offsets.copy_(torch.randint(0, high, self.offsets.shape, generator=g, device=dev))
        if self.flips is not None:
            self.flips.copy_(torch.randint(0, 2, shape, generator=g, device=dev).bool())
        if self.centers is not None:
            h, w = self.data.train_x.shape[2:]
            self.centers[..., 0].copy_(torch.randint(0, h, shape, generator=g, device=dev))
            self.centers[..., 1].copy_(torch.randint(0, w, shape, generator=g, device=dev))
        self.cursor.zero_()

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current step's batch (device work only, no host sync); advances the cursor."""
        row = self.cursor
        index = self.order.index_select(0, row).view(-1)
        x = self.data.normalize(self.data.train_x.index_select(0, index))
        y = self.data.train_y.index_select(0, index)
        if self.augment.enabled:
            offsets = self.offsets.index_select(0, row)[0] if self.offsets is not None else None
            flips = self.flips.index_select(0, row)[0] if self.flips is not None else None
            x = crop_flip(x, offsets, flips, self.augment.crop_padding)
        if self.centers is not None:
            x = cutout(x, self.centers.index_select(0, row)[0], self.cutout_size)
        self.cursor.add_(1)
        return x, y

    def _buffers(self) -> dict[str, torch.Tensor]:
        named = {"order": self.order, "offsets": self.offsets, "flips": self.flips,
                 "centers": self.centers, "cursor": self.cursor}
        return {k: v for k, v in named.items() if v is not None}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The current epoch's data order and augmentation draws and the cursor (CPU copies)."""
        return {k: v.detach().to("cpu").clone() for k, v in self._buffers().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` saved, in place (buffer addresses do not change).

        ValueError (one line) when a buffer is missing or has another shape or dtype (a
        checkpoint of another dataset, batch size or augmentation).
        """
        for name, buf in self._buffers().items():
            got = state.get(name)
            if got is None or tuple(got.shape) != tuple(buf.shape) or got.dtype != buf.dtype:
                raise ValueError(f"sampler state {name!r} does not fit this sampler")
            buf.copy_(got.to(buf.device))

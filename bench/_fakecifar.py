"""A CIFAR-10 "python version" directory of random images, so benchmarks can use the real loader
(``--dataset cifar10=PATH``) without downloading anything. Only the benchmarks use it."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


def write_fake_cifar(root: str | Path, *, train_images: int = 50_000, test_images: int = 10_000,
                     seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py/`` (five training batches and ``test_batch``) and return it.

    Images are uniform random uint8 (N, 3072) rows, labels uniform in 0..9: the official
    layout and types, random content. ``train_images`` must exceed the 5,000 the loader holds
    out for validation.
    """
    if train_images <= 5_000 or train_images % len(TRAIN_FILES):
        raise ValueError(f"train_images must be a multiple of 5 above 5000, got {train_images}")
    out = Path(root) / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_batch = train_images // len(TRAIN_FILES)
    for name, n in [(f, per_batch) for f in TRAIN_FILES] + [("test_batch", test_images)]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        (out / name).write_bytes(pickle.dumps(batch, protocol=2))
    return out

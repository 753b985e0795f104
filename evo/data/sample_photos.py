"""A small image folder of larger photographs, for trying evo on images above CIFAR's size
without downloading anything: ``python -m evo.data.sample_photos DIR``.

scikit-learn ships two photographs (:func:`sklearn.datasets.load_sample_images`:
``china.jpg``, a temple, and ``flower.jpg``, both 640x427). Each becomes one class: ``DIR/china/``
and ``DIR/flower/`` get ``--per-class`` JPEG files, each a random square crop of the photograph
(its side 40% to 100% of the photograph's height, anywhere in it), mirrored half the time, and
scaled to ``--size`` pixels (default 128). The crops are seeded (``--seed``), so the same
command makes the same folder. Then::

    evo init RUN --dataset imagefolder=DIR --search-space nasnet ...

Numpy and Pillow; no torch.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

CLASSES = ("china", "flower")   # scikit-learn's sample images, without .jpg
MIN_SIZE, MAX_SIZE = 8, 427     # a crop is at most the photographs' height
MAX_PER_CLASS = 10_000


def photographs() -> dict[str, np.ndarray]:
    """scikit-learn's two sample photographs by class name, as uint8 (H, W, 3) arrays."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    found = {os.path.splitext(os.path.basename(f))[0]: img for f, img in zip(bunch.filenames, bunch.images)}
    return {name: np.asarray(found[name], dtype=np.uint8) for name in CLASSES}


def make_folder(directory: str, *, size: int = 128, per_class: int = 150, seed: int = 0) -> dict[str, int]:
    """Write ``per_class`` random ``size``-px crops of each photograph as JPEG files into
    ``directory/<class>/`` (created; it must not hold anything yet). Returns the files written
    per class. ValueError (one line) for a size or count out of range or a folder in use."""
    from PIL import Image

    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be {MIN_SIZE}..{MAX_SIZE} pixels, got {size!r}")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or not 1 <= per_class <= MAX_PER_CLASS:
        raise ValueError(f"per_class must be 1..{MAX_PER_CLASS}, got {per_class!r}")
    if os.path.lexists(directory) and (not os.path.isdir(directory) or os.path.islink(directory)
                                       or os.listdir(directory)):
        raise ValueError(f"{directory}: already exists and is not an empty folder; give a new one")
    rng = np.random.Generator(np.random.PCG64(seed))
    written = {}
    for name, photo in photographs().items():
        h, w = photo.shape[:2]
        folder = os.path.join(directory, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(int(0.4 * h), h + 1))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = Image.fromarray(photo[top:top + side, left:left + side])
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crop.resize((size, size), Image.Resampling.BILINEAR).save(
                os.path.join(folder, f"{name}_{i:05d}.jpg"), quality=90)
        written[name] = per_class
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evo.data.sample_photos", description=__doc__.split("\n\n")[0])
    p.add_argument("directory", help="a new folder for the image folder (DIR/china/, DIR/flower/)")
    p.add_argument("--size", type=int, default=128, help=f"pixels of each square image, {MIN_SIZE}..{MAX_SIZE} (default 128)")
    p.add_argument("--per-class", type=int, default=150, help="images per class (default 150)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops (default 0)")
    args = p.parse_args(argv)
    try:
        written = make_folder(args.directory, size=args.size, per_class=args.per_class, seed=args.seed)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.directory}: {sum(written.values())} images of {args.size}x{args.size} px in "
          f"{len(written)} classes ({', '.join(f'{k}: {v}' for k, v in written.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

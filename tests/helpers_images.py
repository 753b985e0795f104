"""Small datasets of the user's kinds for tests: image folders (PNG and JPEG, mixed sizes,
grey and colour, optionally one corrupt file), .npz arrays and Hugging Face datasets saved
with the real ``datasets`` library, plus real photographs shipped in scikit-image.

The generated images are learnable: each class has its own brightness and stripe
direction, with noise, so a tiny network trained for a few steps beats chance.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("cat", "dog", "fish")
SIZES = ((20, 24), (32, 32), (28, 20), (24, 24))   # (width, height), mixed on purpose


def class_image(label: int, size: tuple[int, int], rng: np.random.Generator, color: bool) -> Image.Image:
    """An image of class ``label``: brightness 60 + 70 * label, stripes along x for even
    labels and along y for odd ones, plus noise."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = ((xx if label % 2 == 0 else yy) // 3) % 2
    base = 60 + 70 * (label % 3) + 40 * stripes + rng.normal(0, 8, (h, w))
    gray = np.clip(base, 0, 255).astype(np.uint8)
    if not color:
        return Image.fromarray(gray)
    rgb = np.stack([gray, np.clip(gray.astype(int) + 10, 0, 255), np.clip(gray.astype(int) - 10, 0, 255)], axis=2)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG", quality=95)


def make_image_folder(root: Path, *, layout: str = "split", per_class: int = 12, classes=CLASSES,
                      corrupt: int = 1, seed: int = 0, val_per_class: int = 3, test_per_class: int = 3) -> Path:
    """An image folder at ``root``: ``split`` (train/ val/ test/ class folders) or ``one``
    (class folders only). Images alternate PNG/JPEG, grey/RGB and four sizes; ``corrupt``
    truncated JPEGs are added to the first class's training images. Returns ``root``."""
    rng = np.random.default_rng(seed)
    counts = {"train": per_class} if layout == "one" else \
        {"train": per_class, "val": val_per_class, "test": test_per_class}
    i = 0
    for split, n in counts.items():
        for label, name in enumerate(classes):
            folder = root / name if layout == "one" else root / split / name
            for k in range(n):
                ext = ".png" if i % 2 == 0 else ".jpg"
                save(class_image(label, SIZES[i % len(SIZES)], rng, color=(i // 2) % 2 == 0), folder / f"{k:03d}{ext}")
                i += 1
    first = root / classes[0] if layout == "one" else root / "train" / classes[0]
    for c in range(corrupt):
        buf = io.BytesIO()
        class_image(0, (32, 32), rng, color=True).save(buf, format="JPEG")
        (first / f"broken{c}.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])   # truncated
    (first / "notes.txt").write_text("not an image; ignored")
    return root


def class_arrays(n_per_class: int, classes: int = 3, size: int = 16, seed: int = 0,
                 color: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(x uint8 (N, H, W) or (N, H, W, 3), y int64)`` of learnable images."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label in range(classes):
        for _ in range(n_per_class):
            xs.append(np.asarray(class_image(label, (size, size), rng, color)))
            ys.append(label)
    order = rng.permutation(len(ys))
    return np.stack(xs)[order], np.array(ys, dtype=np.int64)[order]


def make_npz(path: Path, *, layout: str = "nhwc", dtype: str = "uint8", val: bool = True, seed: int = 0) -> Path:
    """An .npz with x_train/y_train (and x_val/y_val), images in ``layout`` (nhwc, nchw, nhw)
    and ``dtype`` (uint8, or float32 in 0..1)."""
    x, y = class_arrays(16, seed=seed, color=layout != "nhw")
    if layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    if dtype == "float32":
        x = x.astype(np.float32) / 255.0
    arrays = {"x_train": x[:36], "y_train": y[:36], "classes": np.array(list(CLASSES))}
    if val:
        arrays.update(x_val=x[36:], y_val=y[36:])
    np.savez(path, **arrays)
    return path


def make_hf(path: Path, *, kind: str = "disk", seed: int = 0, per_class: int = 10) -> Path:
    """A Hugging Face dataset with ``datasets``: an Image column of PNG/JPEG files of mixed
    sizes and a ClassLabel; ``disk``: DatasetDict.save_to_disk (train + test), ``parquet``:
    one train parquet file."""
    import datasets

    rng = np.random.default_rng(seed)
    rows = {"img": [], "animal": []}
    for label in range(len(CLASSES)):
        for k in range(per_class):
            rows["img"].append(class_image(label, SIZES[k % len(SIZES)], rng, color=k % 2 == 0))
            rows["animal"].append(label)
    features = datasets.Features({"img": datasets.Image(), "animal": datasets.ClassLabel(names=list(CLASSES))})
    ds = datasets.Dataset.from_dict(rows, features=features).shuffle(seed=seed)
    if kind == "parquet":
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(path))
        return path
    split = ds.train_test_split(test_size=0.2, seed=seed, stratify_by_column="animal")
    split.save_to_disk(str(path))
    return path


def lfw_folder(root: Path, per_class: int = 40) -> Path:
    """Real photographs: scikit-image's bundled LFW subset (faces and non-faces, 25 x 25 grey)
    written as PNG files in class folders ``face/`` and ``other/``."""
    from skimage.data import lfw_subset

    images = lfw_subset()   # 200 images: the first 100 are faces, the others are not
    for name, block in (("face", images[:100]), ("other", images[100:])):
        for k, img in enumerate(block[:per_class]):
            save(Image.fromarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)), root / name / f"{k:03d}.png")
    return root

"""``npz=URL``: NumPy arrays in an ``.npz``, local or ``gs://``, read into a
:class:`evo.data.decoding.Source`; and the pixel-array checks (:func:`pixel_scale`,
:func:`as_nchw`) that :mod:`evo.data.huggingface` shares for datasets of pixel arrays.

npz: arrays ``x_train``, ``y_train`` and optionally ``x_val``/``y_val``, ``x_test``/``y_test``
and ``classes`` (class names). Images are ``(N, H, W)`` (grey), ``(N, H, W, C)`` or
``(N, C, H, W)`` with C = 1 or 3 (the layout is told by where the 1 or 3 is; NHWC when both
could be); uint8, other integers within 0..255, or floats in 0..1 or 0..255 (told by the
largest value of ``x_train``). Labels are integers 0..K-1. Read with ``allow_pickle=False``:
an object array is refused, never unpickled.
"""

from __future__ import annotations

import io

import numpy as np

from evo.data.decoding import DataProblem, Part, Source
from evo.data.imagefolder import open_fs
from evo.errors import one_line


def read_npz(url: str) -> Source:
    """The arrays of the ``.npz`` at ``url`` as a Source. DataProblem (one line naming the
    file and the array) for a missing file, missing or object arrays, shapes that are not
    images, pixel values out of range, labels that are not integers, or x/y of different
    lengths."""
    kind = "npz"
    fs, path = open_fs(kind, url)
    try:
        with fs.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataProblem(f"{kind}: {url} does not exist") from None
    except IsADirectoryError:
        raise DataProblem(f"{kind}: {url} is a folder, not an .npz file") from None
    except Exception as exc:
        raise DataProblem(f"{kind}: cannot read {url}: {one_line(exc)}") from None
    if raw.startswith(b"\x93NUMPY"):
        raise DataProblem(f"{kind}: {url} is a .npy file (one array); an .npz holds x_train, y_train, ...: "
                          "write it with numpy.savez(path, x_train=..., y_train=...)")
    if not raw.startswith((b"PK\x03\x04", b"PK\x05\x06")):   # every .npz is a zip archive
        raise DataProblem(f"{kind}: {url} is not an .npz file (not a zip archive: written by numpy.savez?)")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            names = list(z.files)
            arrays = {}
            for name in names:
                try:
                    arrays[name] = z[name]
                except ValueError:   # an object array needs pickle: refused
                    raise DataProblem(f"{kind}: {url}: array {name} holds Python objects, which only pickle "
                                      "can read and evo never uses: store numbers (images uint8 or float, "
                                      "labels integers)") from None
    except DataProblem:
        raise
    except Exception as exc:
        raise DataProblem(f"{kind}: {url} is not an .npz file ({one_line(exc)})") from None
    del raw
    if "x_train" not in arrays or "y_train" not in arrays:
        raise DataProblem(f"{kind}: {url} needs arrays x_train and y_train (has {', '.join(sorted(arrays)) or 'none'})")
    scale = pixel_scale(arrays["x_train"], f"{url}: x_train", kind)
    parts: dict[str, Part] = {}
    for split in ("train", "val", "test"):
        xk, yk = f"x_{split}", f"y_{split}"
        if (xk in arrays) != (yk in arrays):
            have, lack = (xk, yk) if xk in arrays else (yk, xk)
            raise DataProblem(f"{kind}: {url} has {have} but no {lack}")
        if xk not in arrays:
            continue
        x = as_nchw(arrays[xk], f"{url}: {xk}", kind, scale)
        y = _int_labels(arrays[yk], f"{url}: {yk}", kind)
        if len(x) != len(y):
            raise DataProblem(f"{kind}: {url}: {xk} has {len(x)} images but {yk} has {len(y)} labels")
        if len(x) == 0 and split != "test":
            raise DataProblem(f"{kind}: {url}: {xk} holds no images")
        parts[split] = Part(labels=y, arrays=x)
    shapes = {p.arrays.shape[1:] for p in parts.values() if len(p)}
    if len(shapes) > 1:
        raise DataProblem(f"{kind}: {url}: the splits' images differ in shape ({', '.join(map(str, sorted(shapes)))})")
    names = _class_names(arrays, parts, url, kind)
    return Source(kind, url, parts, names, facts={"files": 1, "source_bytes": int(sum(a.nbytes for a in arrays.values()))})


def pixel_scale(x: np.ndarray, where: str, kind: str) -> float:
    """The factor that brings ``x``'s pixels to 0..255: 255 for float images in 0..1, else 1
    (checked again per array by :func:`as_nchw`). DataProblem for NaN or infinite pixels."""
    if x.dtype.kind == "f" and x.size:
        top = float(np.nanmax(x)) if np.isfinite(x).all() else float("nan")
        if not np.isfinite(top):
            raise DataProblem(f"{kind}: {where} holds NaN or infinite pixel values")
        return 255.0 if top <= 1.0 else 1.0
    return 1.0


def as_nchw(x: np.ndarray, where: str, kind: str, scale: float) -> np.ndarray:
    """``x`` (``(N, H, W)``, NHWC or NCHW; numbers in 0..255 after ``scale``) as uint8
    ``(N, C, H, W)``; DataProblem naming ``where`` otherwise."""
    if x.dtype.kind not in "uif":
        raise DataProblem(f"{kind}: {where} must hold numbers (uint8, integers or floats), got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[3] in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        elif x.shape[1] not in (1, 3):
            raise DataProblem(f"{kind}: {where} has shape {tuple(x.shape)}: images must be (N, H, W), "
                              "(N, H, W, C) or (N, C, H, W) with C = 1 or 3")
    else:
        raise DataProblem(f"{kind}: {where} has shape {tuple(x.shape)}: images must be (N, H, W), "
                          "(N, H, W, C) or (N, C, H, W) with C = 1 or 3")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise DataProblem(f"{kind}: {where} has empty images {tuple(x.shape)}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.size == 0:
        return np.zeros(x.shape, dtype=np.uint8)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataProblem(f"{kind}: {where} holds NaN or infinite pixel values")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high * scale > 255.0 + 1e-6:
        span = "0..1 or 0..255" if x.dtype.kind == "f" else "0..255"
        raise DataProblem(f"{kind}: {where}: pixel values {low:g}..{high:g} are out of range ({span})")
    if x.dtype.kind == "f":
        return np.ascontiguousarray(np.rint(x.astype(np.float64) * scale).astype(np.uint8))
    return np.ascontiguousarray(x.astype(np.uint8))


def _int_labels(y: np.ndarray, where: str, kind: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataProblem(f"{kind}: {where} has shape {tuple(y.shape)}: labels must be one integer per image")
    if y.dtype.kind == "f" and y.size and not (np.isfinite(y).all() and (y == np.rint(y)).all()):
        raise DataProblem(f"{kind}: {where}: labels must be whole numbers")
    if y.dtype.kind not in "uif":
        raise DataProblem(f"{kind}: {where}: labels must be integers, got {y.dtype}")
    if y.size and float(y.min()) < 0:
        raise DataProblem(f"{kind}: {where}: label {int(y.min())} is out of range (labels are 0..K-1)")
    return y.astype(np.int64)


def _class_names(arrays: dict[str, np.ndarray], parts: dict[str, Part], url: str, kind: str) -> tuple[str, ...]:
    k = int(parts["train"].labels.max()) + 1 if len(parts["train"]) else 0
    for key in ("classes", "class_names"):
        if key in arrays:
            names = arrays[key]
            if names.ndim != 1 or names.dtype.kind not in "US":
                raise DataProblem(f"{kind}: {url}: {key} must be a 1-D array of class names (strings)")
            names = tuple(str(n) if names.dtype.kind == "U" else n.decode("utf-8", "replace") for n in names)
            k = len(names)
            break
    else:
        names = tuple(str(i) for i in range(k))
    for split, part in parts.items():
        if len(part) and int(part.labels.max()) >= k:
            raise DataProblem(f"{kind}: {url}: y_{split} has label {int(part.labels.max())}, out of range: "
                              f"labels must be 0..{k - 1} ({k} classes"
                              + (")" if "classes" in arrays or "class_names" in arrays else ", from y_train)"))
    return names

"""From a user dataset's images to the run's uint8 arrays: splits, preprocessing, decoding.

A reader (:mod:`evo.data.imagefolder`, :mod:`evo.data.arrays`, :mod:`evo.data.huggingface`) describes a dataset as a
:class:`Source`: for each split it has (``train``, and ``val``/``test`` when the dataset has
them) the labels and the images, as encoded files (fetched and decoded here with Pillow,
through ``dna.portable_images``, the code every export carries) or as arrays already. Then:

1. :func:`carve`: a split the dataset lacks is cut from the training images, stratified by
   class, with the run's ``split_seed`` (so every worker and every later ``evo evaluate``
   cuts the same one);
2. :func:`resolve`: the automatic image size and colour come from a sample of the
   training images (never validation or test);
3. :func:`decode_source`: every image is decoded in parallel threads into a preallocated
   ``(N, C, S, S)`` uint8 array; images that cannot be decoded are skipped and counted,
   and the run fails (naming the first such file) when they are more than
   ``max_bad_fraction`` of all images;
4. the result is checked (two classes at least, labels in range, no empty split) and
   becomes an :class:`evo.data.base.HostDataset`.

Numpy, fsspec and Pillow; no torch.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dna.portable_images import ImageProblem, Preprocessing, image_facts, preprocess_image, preprocess_pil
from evo.data.settings import MIN_IMAGE_SIZE, DataSettings
from evo.data.base import SPLITS, available_host_memory, human_bytes
from evo.errors import DataError, one_line

log = logging.getLogger("evo.data.datasets")

SAMPLE_IMAGES = 256          # images whose headers decide the automatic size and colour
HEADER_BYTES = 64 * 1024     # enough of a file for Pillow to read its size (else the whole file)
CHUNK = 256                  # images fetched and decoded per batch
MAX_FILE_BYTES = 256 * 2**20  # an image file larger than this is counted as unreadable
MAX_BAD_LISTED = 10          # unreadable files named in the summary

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: called as decoding goes on."""


class DataProblem(DataError, ValueError):
    """Data that cannot become the run's arrays. One line naming the file and the problem;
    :mod:`evo.data.userdata` turns it into a ``DatasetError``."""


@dataclass
class Part:
    """The images of one split: ``labels`` (int64) and either ``files`` (names of encoded
    images, read with the source's ``fetch``) or ``arrays`` (uint8 ``(N, C, H, W)``)."""

    labels: np.ndarray
    files: list[str] | None = None
    arrays: np.ndarray | None = None
    blobs: list[bytes | None] | None = None   # encoded images already in memory (``files`` names them)

    def __len__(self) -> int:
        return int(len(self.labels))

    def take(self, index: np.ndarray) -> "Part":
        """The images at ``index``, in that order."""
        return Part(self.labels[index],
                    None if self.files is None else [self.files[i] for i in index],
                    None if self.arrays is None else self.arrays[index],
                    None if self.blobs is None else [self.blobs[i] for i in index])


@dataclass
class Source:
    """A dataset as its reader found it: ``parts`` by split (``train`` always), class names,
    what the spec names (for messages) and how to read an encoded file by its name
    (``fetch(name) -> bytes``, raising OSError; ``fetch_head`` reads a file's start)."""

    kind: str
    where: str
    parts: dict[str, Part]
    class_names: tuple[str, ...]
    fetch: Callable[[str], bytes] | None = None
    fetch_head: Callable[[str], bytes] | None = None
    facts: dict[str, Any] = field(default_factory=dict)   # what the reader wants in the summary


@dataclass
class Decoded:
    """The run's arrays: ``splits[name] = (x uint8 (N, C, H, W), y int64 (N,))`` for train,
    val and test (test may be empty), the classes, the preprocessing every image went
    through (None: arrays used as stored) and a summary for people."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    class_names: tuple[str, ...]
    preprocessing: Preprocessing | None
    summary: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ----- 1. splits ----------------------------------------------------------------------

def carve(labels: np.ndarray, fraction: float, seed: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, carved)`` indices of ``labels``: about ``fraction`` of each class carved,
    chosen with a generator seeded by ``(seed, salt)``; both sorted.

    Each class gives ``floor(fraction * n)`` images and the remainders are shared out by
    largest remainder, so the carved total is ``round(fraction * N)``; a class never gives
    its last image (training needs every class).
    """
    labels = np.asarray(labels)
    rng = np.random.Generator(np.random.PCG64([seed, salt]))
    classes = np.unique(labels)
    members = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    exact = {c: fraction * len(m) for c, m in members.items()}
    take = {c: int(np.floor(e)) for c, e in exact.items()}
    extra = int(round(fraction * len(labels))) - sum(take.values())
    by_remainder = sorted(classes, key=lambda c: (-(exact[c] - take[c]), rng.random()))
    for c in by_remainder[:max(0, extra)]:
        take[c] += 1
    carved = [m[:min(take[c], len(m) - 1)] for c, m in members.items()]
    out = np.sort(np.concatenate(carved)) if carved else np.zeros(0, dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), out)
    return kept, out


def complete_splits(source: Source, settings: DataSettings) -> dict[str, Part]:
    """The source's parts with validation and test carved from training where missing
    (test first, then validation from what is left; each a fraction of the training images
    the dataset has, so 0.1 and 0.1 give 80/10/10; see :func:`carve`)."""
    parts = dict(source.parts)
    train = parts["train"]
    whole = len(train)   # fractions are of the training images as the dataset has them
    for name, fraction, salt in (("test", settings.test_fraction, 2), ("val", settings.val_fraction, 1)):
        if name in parts:
            continue
        if fraction == 0 or len(train) == 0:
            parts[name] = train.take(np.zeros(0, dtype=np.int64))
            continue
        kept, cut = carve(train.labels, min(1.0, fraction * whole / len(train)), settings.split_seed, salt)
        parts[name], train = train.take(cut), train.take(kept)
    parts["train"] = train
    if len(parts["val"]) == 0:
        raise DataProblem(f"{source.kind}: {source.where}: no validation images: {len(train)} training images "
                          f"and --val-fraction {settings.val_fraction} leave none (add images, or a val/ split)")
    return parts


# ----- 2. preprocessing ---------------------------------------------------------------

def resolve(source: Source, train: Part, settings: DataSettings) -> tuple[Preprocessing | None, dict]:
    """The preprocessing of this run's images, from the settings and (for what they leave
    automatic) a seeded sample of up to :data:`SAMPLE_IMAGES` training images: the median
    shorter side, rounded, at most the settings' ``auto_size_cap`` (64 unless the run's search
    space supports more); grey when every
    sampled image is. Arrays keep their size unless a size is set (then None: as stored)."""
    how: dict[str, Any] = {}
    if train.arrays is not None:
        c = train.arrays.shape[1]
        if settings.image_size is None and settings.color == "auto":
            return None, {"size": "as stored", "color": "as stored"}
        color = {"auto": "rgb" if c == 3 else "grayscale"}.get(settings.color, settings.color)
        return Preprocessing(color, settings.image_size, settings.resize), how
    size, color = settings.image_size, settings.color
    if size is None or color == "auto":
        rng = np.random.Generator(np.random.PCG64([settings.split_seed, 3]))
        pick = np.sort(rng.permutation(len(train))[:SAMPLE_IMAGES])
        facts = []
        for i, got in zip(pick, _parallel(lambda i: _head_facts(source, train, int(i)), pick)):
            if got is not None:
                facts.append(got)
        if not facts:
            raise DataProblem(f"{source.kind}: {source.where}: none of {len(pick)} sampled training images "
                              f"can be decoded (first: {train.files[int(pick[0])]})")
        sides = [min(w, h) for w, h, _ in facts]
        if size is None:
            cap = settings.auto_size_cap
            size = min(cap, max(MIN_IMAGE_SIZE, int(round(statistics.median(sides)))))
            how["size"] = (f"median shorter side {statistics.median(sides):g} of {len(facts)} sampled images"
                           + (f", capped at {cap}" if statistics.median(sides) > cap else ""))
        if color == "auto":
            gray = all(g for _, _, g in facts)
            color = "grayscale" if gray else "rgb"
            how["color"] = f"{'all' if gray else 'not all'} of {len(facts)} sampled images are grey"
    return Preprocessing("rgb" if color == "rgb" else "grayscale", size, settings.resize), how


def _head_facts(source: Source, part: Part, i: int) -> tuple[int, int, bool] | None:
    name = part.files[i]
    data = part.blobs[i] if part.blobs is not None else None
    try:
        if data is None and source.fetch_head is not None:
            try:
                return image_facts(source.fetch_head(name))
            except ImageProblem:
                pass   # the header lies beyond the first bytes: read the whole file
        if data is None:
            data = source.fetch(name)
        return image_facts(data)
    except Exception:   # unreadable: the decoding counts it; the sample just lacks it
        return None


# ----- 3. decoding --------------------------------------------------------------------

def decode_source(source: Source, settings: DataSettings, progress: Progress | None = None) -> Decoded:
    """Decode ``source`` into the run's arrays (see the module's docstring). DataProblem
    (one line, naming a file) for data that cannot be used."""
    present = np.unique(source.parts["train"].labels)
    if len(present) < 2:
        only = source.class_names[int(present[0])] if len(present) and int(present[0]) < len(source.class_names) else "-"
        raise DataProblem(f"{source.kind}: {source.where}: only one class ({only}) has training images; "
                          "a classifier needs two or more")
    parts = complete_splits(source, settings)
    prep, how = resolve(source, parts["train"], settings)
    total = sum(len(p) for p in parts.values())
    budget = BadImages(total, settings.max_bad_fraction, source)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    done = 0
    for name in SPLITS:
        part = parts[name]
        x, keep = _decode_part(source, part, prep, budget, progress, done, total, name)
        done += len(part)
        splits[name] = (x[keep] if not keep.all() else x, part.labels[keep].astype(np.int64))
    if progress is not None:
        progress("decoded", total, total)
    decoded = Decoded(splits, source.class_names, prep, {})
    check_decoded(decoded, source)
    decoded.summary = summary(decoded, source, budget, how)
    return decoded


class BadImages:
    """Counts images that cannot be decoded; DataProblem once they are more than allowed."""

    def __init__(self, total: int, fraction: float, source: Source):
        self.total, self.allowed, self.source = total, int(np.floor(fraction * total + 1e-9)), source
        self.fraction = fraction
        self.files: list[tuple[str, str]] = []

    def add(self, name: str, reason: str) -> None:
        self.files.append((name, reason))
        if len(self.files) > self.allowed:
            first, why = self.files[0]
            raise DataProblem(f"{self.source.kind}: {first}: {why} ({len(self.files)} unreadable image(s) so far "
                              f"of {self.total}; --max-bad-fraction {self.fraction:g} allows {self.allowed}: fix "
                              "or remove them, or raise it to skip them)")


def _decode_part(source: Source, part: Part, prep: Preprocessing | None, bad: BadImages,
                 progress: Progress | None, done: int, total: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    n = len(part)
    if part.arrays is not None:
        return _convert_arrays(part.arrays, prep, source, split, progress, done, total)
    shape = (n, prep.channels, prep.size, prep.size)
    _check_host_memory(int(np.prod(shape, dtype=np.int64)), source)
    x = np.zeros(shape, dtype=np.uint8)
    keep = np.ones(n, dtype=bool)
    def load(i: int) -> Any:
        blob = part.blobs[i] if part.blobs is not None else None
        if blob is not None:
            return blob
        try:
            return source.fetch(part.files[i])
        except Exception as exc:   # permissions, network, missing: this image is unreadable
            return exc

    for lo in range(0, n, CHUNK):
        names = part.files[lo:lo + CHUNK]
        results = _parallel(lambda i: _decode_one(load(i), prep), range(lo, lo + len(names)))
        for k, (pixels, reason) in enumerate(results):
            if reason is not None:
                keep[lo + k] = False
                log.debug("skipping %s: %s", names[k], reason)   # the summary counts and names them
                bad.add(names[k], reason)
                continue
            x[lo + k] = np.frombuffer(pixels, dtype=np.uint8).reshape(
                prep.size, prep.size, prep.channels).transpose(2, 0, 1)
        if progress is not None:
            progress(split, done + min(n, lo + CHUNK), total)
    return x, keep


def _decode_one(data: Any, prep: Preprocessing) -> tuple[bytes | None, str | None]:
    if data is None:
        return None, "missing"
    if isinstance(data, BaseException):
        return None, f"cannot read: {one_line(data)}"
    if len(data) > MAX_FILE_BYTES:
        return None, f"larger than {MAX_FILE_BYTES // 2**20} MiB"
    if len(data) == 0:
        return None, "empty file"
    try:
        pixels, chw = preprocess_image(bytes(data), prep)
    except ImageProblem as exc:
        return None, str(exc)
    if chw != (prep.channels, prep.size, prep.size):  # cannot happen with a size set; a guard all the same
        return None, f"decoded to {chw}, not {(prep.channels, prep.size, prep.size)}"
    return pixels, None


def _convert_arrays(x: np.ndarray, prep: Preprocessing | None, source: Source, split: str,
                    progress: Progress | None, done: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    keep = np.ones(len(x), dtype=bool)
    if prep is None:
        return x, keep
    from PIL import Image

    h, w = (prep.size, prep.size) if prep.size is not None else x.shape[2:]
    out = np.zeros((len(x), prep.channels, h, w), dtype=np.uint8)
    _check_host_memory(out.nbytes, source)
    for i in range(len(x)):
        hwc = np.ascontiguousarray(x[i].transpose(1, 2, 0))
        img = Image.fromarray(hwc[:, :, 0]) if hwc.shape[2] == 1 else Image.fromarray(hwc)
        pixels, _ = preprocess_pil(img, prep)
        out[i] = np.frombuffer(pixels, dtype=np.uint8).reshape(h, w, prep.channels).transpose(2, 0, 1)
        if progress is not None and (i + 1) % CHUNK == 0:
            progress(split, done + i + 1, total)
    return out, keep


def _parallel(func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[func(i) for i in items]`` on threads (Pillow and network reads release the GIL)."""
    items = list(items)
    if len(items) <= 1:
        return [func(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(len(items), 2 * (os.cpu_count() or 2), 16)) as pool:
        return list(pool.map(func, items))


def _check_host_memory(nbytes: int, source: Source) -> None:
    free = available_host_memory()
    if free is not None and nbytes > free:
        raise DataProblem(f"{source.kind}: {source.where}: decoded, the images take {human_bytes(nbytes)} but this "
                          f"machine has {human_bytes(free)} of memory available; use a smaller --image-size, "
                          "--color grayscale, or fewer images")


# ----- 4. checks and summary ----------------------------------------------------------

def check_decoded(decoded: Decoded, source: Source) -> None:
    """DataProblem unless the arrays make a classification task: at least two classes with
    training images, every label a class, a non-empty validation split."""
    k = decoded.num_classes
    where = f"{source.kind}: {source.where}"
    if k < 2:
        raise DataProblem(f"{where}: only one class ({decoded.class_names[0] if k else '-'}); "
                          "a classifier needs two or more")
    for name, (x, y) in decoded.splits.items():
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise DataProblem(f"{where}: {name} label {bad} is out of range: labels must be 0..{k - 1} "
                              f"({k} classes)")
        if x.shape[0] != y.shape[0]:
            raise DataProblem(f"{where}: {name} has {x.shape[0]} images but {y.shape[0]} labels")
    train_y = decoded.splits["train"][1]
    present = np.unique(train_y)
    empty = [decoded.class_names[c] for c in range(k) if c not in set(present.tolist())]
    if empty and source.kind == "imagefolder":
        raise DataProblem(f"{where}: class {empty[0]} has no readable training images")
    if len(present) < 2:
        raise DataProblem(f"{where}: only one class ({decoded.class_names[int(present[0])] if len(present) else '-'}) "
                          "has readable training images; a classifier needs two or more")
    if len(decoded.splits["val"][1]) == 0:
        raise DataProblem(f"{where}: no readable validation images")


def summary(decoded: Decoded, source: Source, bad: BadImages | None, how: dict) -> dict[str, Any]:
    """Plain data for people (evo init, evo status): classes, images per split, shape, bytes,
    skipped files, and how automatic settings were chosen."""
    x = decoded.splits["train"][0]
    out: dict[str, Any] = {
        "kind": source.kind, "classes": decoded.num_classes,
        "class_names": list(decoded.class_names[:20]) + (["..."] if decoded.num_classes > 20 else []),
        "images": {name: int(len(y)) for name, (_, y) in decoded.splits.items()},
        "input_shape": [int(d) for d in x.shape[1:]],
        "bytes": int(sum(a.nbytes + b.nbytes for a, b in decoded.splits.values())),
        "preprocessing": decoded.preprocessing.to_dict() if decoded.preprocessing else "as stored",
        "chosen": how, **source.facts,
    }
    if bad is not None:
        out["unreadable"] = len(bad.files)
        out["unreadable_files"] = [f"{name}: {why}"[:300] for name, why in bad.files[:MAX_BAD_LISTED]]
    return out

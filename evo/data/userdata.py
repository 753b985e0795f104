"""The user's own datasets (``imagefolder=``, ``npz=``, ``hf=``) as :class:`evo.data.base.HostDataset`.

A user dataset is listed by its reader (:mod:`evo.data.imagefolder`, :mod:`evo.data.arrays`,
:mod:`evo.data.huggingface`),
decoded as the run's ``data`` settings say (:mod:`evo.data.decoding`) and, in a run, decoded once
into the population directory for every worker (:func:`prepare_data`, :mod:`evo.data.cache`);
outside a run it is decoded from its source (:func:`read_user`). Decoding problems come out
as one-line :class:`evo.data.base.DatasetError`. Every function takes the spec parsed
(:class:`evo.data.spec.DatasetSpec`); the public entry points :func:`prepare_data` and
:func:`ensure_cache` also take its text.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from evo.data.settings import DataSettings
from evo.data.arrays import read_npz
from evo.data.base import SEARCH_SPLITS, SPLITS, Augment, DatasetError, HostDataset, check_splits
from evo.data.cache import STALE_AFTER_S, open_or_decode
from evo.data.cacheformat import CacheDamaged
from evo.data.decoding import DataProblem, Decoded, Source, complete_splits, decode_source, resolve
from evo.data.huggingface import read_hf
from evo.data.imagefolder import scan
from evo.data.spec import DatasetSpec

log = logging.getLogger("evo.data.datasets")

# Generations prepare_data opens before it gives up: each damaged one is tried once (newest
# first) and a generation this process decodes is never damaged, so only a store that keeps
# gaining damaged generations while it reads gets this far.
MAX_OPENS = 256

if TYPE_CHECKING:
    from storage import DataCacheFacet


def read_source(spec: DatasetSpec, settings: DataSettings) -> Source:
    """The user dataset ``spec`` as an ``evo.data.decoding.Source`` (listed, labels known,
    nothing decoded). Raises ``evo.data.decoding.DataProblem``."""
    if spec.name == "imagefolder":
        return scan(spec.path)
    if spec.name == "npz":
        return read_npz(spec.path)
    if spec.name == "hf":
        return read_hf(spec.path, settings.image_column, settings.label_column)
    raise ValueError(f"not a user dataset: {str(spec)!r}")


def decode_user(spec: DatasetSpec, settings: DataSettings,
                progress: Callable[[str, int, int], None] | None = None) -> Decoded:
    """The user dataset ``spec`` decoded from its source (``evo.data.decoding.Decoded``).
    Raises ``evo.data.decoding.DataProblem``."""
    return decode_source(read_source(spec, settings), settings, progress)


def user_augment(input_shape: tuple[int, ...]) -> Augment:
    """Training augmentation of a user dataset: random crops padded by 1/8 of the side (4
    pixels at 32, as for CIFAR) and mirror images (``--no-augment`` turns both off)."""
    return Augment(crop_padding=max(1, int(input_shape[-1]) // 8), flip=True)


def read_user(spec: DatasetSpec, settings: DataSettings, splits: tuple[str, ...],
              progress: Callable[[str, int, int], None] | None = None) -> HostDataset:
    """The user dataset ``spec`` decoded from its source (no cache), ``splits`` kept (the
    others empty). DatasetError (one line) for bad data."""
    try:
        decoded = decode_user(spec, settings, progress)
    except DataProblem as exc:
        raise DatasetError(str(exc)) from None
    return _user_host(spec.name, decoded.splits, decoded.class_names,
                      decoded.preprocessing.to_dict() if decoded.preprocessing else None,
                      decoded.summary, None, splits)


def check_user(spec: DatasetSpec, settings: DataSettings) -> dict[str, Any]:
    """Check the user dataset ``spec`` without decoding an image: its source is listed and
    its splits carved as ``settings`` say. Returns ``{"name", "train_images", "classes",
    "images"}`` (images per split). DatasetError (one line) for bad data."""
    try:
        source = read_source(spec, settings)
        parts = complete_splits(source, settings)
    except DataProblem as exc:
        raise DatasetError(str(exc)) from None
    return {"name": spec.name, "train_images": len(parts["train"]),
            "classes": len(source.class_names), "images": {s: len(p) for s, p in parts.items()}}


def planned_input(spec: DatasetSpec, settings: DataSettings) -> dict[str, Any]:
    """What decoding the user dataset ``spec`` under ``settings`` will make, without decoding
    it: ``{"input_shape": (C, S, S) or as stored, "images": all splits' images}``, the size and
    colour resolved as decoding resolves them (for image files: from the headers of a seeded
    sample of training images). DatasetError (one line) for bad data."""
    try:
        source = read_source(spec, settings)
        parts = complete_splits(source, settings)
        prep, _ = resolve(source, parts["train"], settings)
    except DataProblem as exc:
        raise DatasetError(str(exc)) from None
    images = sum(len(p) for p in parts.values())
    stored = parts["train"].arrays
    if stored is not None and (prep is None or prep.size is None):
        c = stored.shape[1] if prep is None else prep.channels
        return {"input_shape": (int(c), int(stored.shape[2]), int(stored.shape[3])), "images": images}
    return {"input_shape": (prep.channels, prep.size, prep.size), "images": images}


def _user_host(name: str, arrays: dict[str, tuple[np.ndarray, np.ndarray]], class_names: tuple[str, ...],
               preprocessing: dict | None, summary: dict, data_id: str | None,
               splits: tuple[str, ...]) -> HostDataset:
    shape = arrays["train"][0].shape[1:]
    empty = (np.zeros((0, *shape), dtype=np.uint8), np.zeros(0, dtype=np.int64))
    part = {s: arrays[s] if s in splits and s in arrays else empty for s in SPLITS}
    return HostDataset(name, len(class_names), user_augment(shape),
                       part["train"][0], part["train"][1], part["val"][0], part["val"][1],
                       part["test"][0], part["test"][1], class_names=tuple(class_names),
                       preprocessing=preprocessing, summary=summary, data_id=data_id)


def prepare_data(spec: DatasetSpec | str, settings: DataSettings, cache: DataCacheFacet, *, splits: tuple[str, ...] = SEARCH_SPLITS,
                 worker: str | None = None, progress: Callable[[str], None] | None = None,
                 stale_after: float | None = None) -> HostDataset:
    """The run's user dataset through its decoded cache (``cache``: the store's ``datacache``
    facet; decoded once for the whole fleet: :mod:`evo.data.cache`), with ``splits`` read (a worker: train and val).

    ``data_id`` of the result is the SHA-256 identity of the cache every part of it was
    checked against. ``progress(line)`` gets progress lines (default: the ``evo.data.datasets``
    log). DatasetError (one line) for bad data, the decoder's included.
    """
    spec = DatasetSpec.of(spec)
    check_splits(splits)
    damaged: set[int] = set()
    for _ in range(MAX_OPENS):   # a generation found damaged while reading: the next newest, or a new one
        cached = None
        try:
            cached = open_or_decode(cache, spec, settings, lambda p: decode_user(spec, settings, p),
                                    worker=worker, progress=progress, damaged=damaged,
                                    stale_after=STALE_AFTER_S if stale_after is None else stale_after)
            arrays = cached.arrays(splits)
        except DataProblem as exc:
            raise DatasetError(str(exc)) from None
        except CacheDamaged as exc:
            log.warning("%s; trying the next generation", exc)
            if cached is not None:
                damaged.add(cached.generation)
            continue
        m = cached.manifest
        log.info(
            "dataset %s: %s split(s) of the run's decoded cache (data %s, generation %d%s)", spec,
            "+".join(splits), cached.data_id[:16], cached.generation, ", decoded here" if cached.decoded_here else "")
        return _user_host(spec.name, arrays, tuple(m["class_names"]), m.get("preprocessing"), m["summary"],
                          cached.data_id, splits)
    raise DatasetError(f"{spec.name}: {MAX_OPENS} generations of the run's decoded dataset in {cache.url}/data/ "
                       "were damaged; see `evo check`")


def ensure_cache(spec: DatasetSpec | str, settings: DataSettings, cache: DataCacheFacet, *,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Make sure the run's cache of a user dataset exists in ``cache`` (the store's
    ``datacache`` facet; decoding it here if
    nobody has), without loading it; returns its manifest (for ``evo init``'s summary)."""
    spec = DatasetSpec.of(spec)
    try:
        return open_or_decode(cache, spec, settings, lambda p: decode_user(spec, settings, p),
                              progress=progress).manifest
    except DataProblem as exc:
        raise DatasetError(str(exc)) from None

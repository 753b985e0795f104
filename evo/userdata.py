"""The user's own datasets (``imagefolder=``, ``npz=``, ``hf=``) as :class:`evo.data.HostDataset`.

A user dataset is listed by its reader (:mod:`evo.imagefolder`, :mod:`evo.arraysets`,
:mod:`evo.huggingface`),
decoded as the run's ``data`` settings say (:mod:`evo.decoding`) and, in a run, decoded once
into the population directory for every worker (:func:`prepare_data`, :mod:`evo.datacache`);
outside a run it is decoded from its source (:func:`read_user`). Decoding problems come out
as one-line :class:`evo.data.DatasetError`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .config import DataSettings
from .data import SEARCH_SPLITS, SPLITS, Augment, DatasetError, HostDataset, check_splits

if TYPE_CHECKING:
    from storage import DataCacheFacet


def read_source(spec: str, settings: DataSettings):
    """The user dataset ``spec`` as an ``evo.decoding.Source`` (listed, labels known,
    nothing decoded). Raises ``evo.decoding.DataProblem``."""
    name, _, path = spec.partition("=")
    if name == "imagefolder":
        from .imagefolder import scan

        return scan(path)
    if name == "npz":
        from .arraysets import read_npz

        return read_npz(path)
    if name == "hf":
        from .huggingface import read_hf

        return read_hf(path, settings.image_column, settings.label_column)
    raise ValueError(f"not a user dataset: {spec!r}")


def decode_user(spec: str, settings: DataSettings, progress: Callable[[str, int, int], None] | None = None):
    """The user dataset ``spec`` decoded from its source (``evo.decoding.Decoded``).
    Raises ``evo.decoding.DataProblem``."""
    from .decoding import decode_source

    return decode_source(read_source(spec, settings), settings, progress)


def user_augment(input_shape: tuple[int, ...]) -> Augment:
    """Training augmentation of a user dataset: random crops padded by 1/8 of the side (4
    pixels at 32, as for CIFAR) and mirror images (``--no-augment`` turns both off)."""
    return Augment(crop_padding=max(1, int(input_shape[-1]) // 8), flip=True)


def read_user(spec: str, settings: DataSettings, splits: tuple[str, ...],
              progress: Callable[[str, int, int], None] | None = None) -> HostDataset:
    """The user dataset ``spec`` decoded from its source (no cache), ``splits`` kept (the
    others empty). DatasetError (one line) for bad data."""
    from .decoding import DataProblem

    try:
        decoded = decode_user(spec, settings, progress)
    except DataProblem as exc:
        raise DatasetError(str(exc)) from None
    return _user_host(spec.partition("=")[0], decoded.splits, decoded.class_names,
                      decoded.preprocessing.to_dict() if decoded.preprocessing else None,
                      decoded.summary, None, splits)


def check_user(spec: str, settings: DataSettings) -> dict[str, Any]:
    """Check the user dataset ``spec`` without decoding an image: its source is listed and
    its splits carved as ``settings`` say. Returns ``{"name", "train_images", "classes",
    "images"}`` (images per split). DatasetError (one line) for bad data."""
    from .decoding import DataProblem, complete_splits

    try:
        source = read_source(spec, settings)
        parts = complete_splits(source, settings)
    except DataProblem as exc:
        raise DatasetError(str(exc)) from None
    return {"name": spec.partition("=")[0], "train_images": len(parts["train"]),
            "classes": len(source.class_names), "images": {s: len(p) for s, p in parts.items()}}


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


def prepare_data(spec: str, settings: DataSettings, cache: DataCacheFacet, *, splits: tuple[str, ...] = SEARCH_SPLITS,
                 worker: str | None = None, progress: Callable[[str], None] | None = None,
                 stale_after: float | None = None) -> HostDataset:
    """The run's user dataset through its decoded cache (``cache``: the store's ``datacache``
    facet; decoded once for the whole fleet: :mod:`evo.datacache`), with ``splits`` read (a
    worker: train and val).

    ``data_id`` of the result is the SHA-256 identity of the cache every part of it was
    checked against. ``progress(line)`` gets progress lines (default: the ``evo.data``
    log). DatasetError (one line) for bad data, the decoder's included.
    """
    from .cacheformat import CacheDamaged
    from .datacache import STALE_AFTER_S, open_or_decode
    from .decoding import DataProblem

    check_splits(splits)
    name = spec.partition("=")[0]
    damaged: set[int] = set()
    for _ in range(3):   # a part found damaged while reading: the next generation is decoded
        try:
            cached = open_or_decode(cache, spec, settings, lambda p: decode_user(spec, settings, p),
                                    worker=worker, progress=progress, damaged=damaged,
                                    stale_after=STALE_AFTER_S if stale_after is None else stale_after)
            arrays = cached.arrays(splits)
        except DataProblem as exc:
            raise DatasetError(str(exc)) from None
        except CacheDamaged as exc:
            logging.getLogger("evo.data").warning("%s; decoding the dataset again", exc)
            damaged.add(cached.generation)
            continue
        m = cached.manifest
        logging.getLogger("evo.data").info(
            "dataset %s: %s split(s) of the run's decoded cache (data %s, generation %d%s)", spec,
            "+".join(splits), cached.data_id[:16], cached.generation, ", decoded here" if cached.decoded_here else "")
        return _user_host(name, arrays, tuple(m["class_names"]), m.get("preprocessing"), m["summary"],
                          cached.data_id, splits)
    raise DatasetError(f"{name}: the run's decoded dataset in {cache.url}/data/ was damaged three times over; "
                       "see `evo check`")


def ensure_cache(spec: str, settings: DataSettings, cache: DataCacheFacet, *,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Make sure the run's cache of a user dataset exists in ``cache`` (the store's
    ``datacache`` facet; decoding it here if nobody has), without loading it; returns its
    manifest (for ``evo init``'s summary)."""
    from .datacache import open_or_decode
    from .decoding import DataProblem

    try:
        return open_or_decode(cache, spec, settings, lambda p: decode_user(spec, settings, p),
                              progress=progress).manifest
    except DataProblem as exc:
        raise DatasetError(str(exc)) from None

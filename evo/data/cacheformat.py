"""What a decoded-dataset cache is made of, and the checks every reader makes of it.

A cache generation is a manifest (JSON: format, key, generation, spec, classes, input
shape, and per split a part's object key, image count, size and SHA-256, plus
``data_sha256`` over them: :func:`content_id`) and one safetensors part per split (``x``
uint8 ``(N, C, H, W)``, ``y`` int64 ``(N,)``: :func:`safetensors_of`). The store is shared
and untrusted, so a manifest is checked before use (:func:`check_manifest`) and so is each
part's array (:func:`arrays_of`); what does not check out is :class:`CacheDamaged`. The
protocol that writes and finds them is :mod:`evo.data.cache`. Torch-free.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from evo.data.base import SPLITS
from evo.data.spec import DatasetSpec
from evo.errors import DataError

FORMAT = 1
MAX_CLASSES = 1_000_000
MAX_SIDE = 4096
# A part is its arrays (N images of C*H*W uint8 and N int64 labels) plus a safetensors
# header of a few hundred bytes: its stated size may exceed what the arrays need by no more.
MAX_HEADER_BYTES = 4096


class CacheDamaged(DataError, ValueError):
    """A committed cache generation whose manifest or parts do not check out."""


def content_id(parts: dict[str, Any]) -> str:
    """The identity of a cache's data: SHA-256 over its parts' SHA-256s (train, val, test)."""
    text = "\n".join(f"{name}={parts[name]['sha256']}" for name in SPLITS)
    return hashlib.sha256(text.encode()).hexdigest()


def safetensors_of(x: np.ndarray, y: np.ndarray) -> bytes:
    """One part's bytes: safetensors with ``x`` uint8 and ``y`` int64 (what :func:`arrays_of`
    reads back)."""
    from safetensors.numpy import save

    return save({"x": np.ascontiguousarray(x, dtype=np.uint8), "y": np.ascontiguousarray(y, dtype=np.int64)})


def arrays_of(blob: bytes, part: dict, manifest: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The checked arrays of one part: ``x`` uint8 ``(N, C, H, W)`` and ``y`` int64 ``(N,)``
    with N, C, H, W as the manifest says and every label a class."""
    from safetensors.numpy import load

    from storage import safetensors_problem

    where = part["key"]
    problem = safetensors_problem(blob)
    if problem:
        raise CacheDamaged(f"{where}: {problem}")
    try:
        arrays = load(blob)
    except Exception as exc:
        raise CacheDamaged(f"{where}: not readable safetensors ({exc})") from None
    if set(arrays) != {"x", "y"}:
        raise CacheDamaged(f"{where}: holds {sorted(arrays)}, not x and y")
    x, y = arrays["x"], arrays["y"]
    n = part["images"]
    want = (n, *manifest["input_shape"])
    if x.dtype != np.uint8 or tuple(x.shape) != want:
        raise CacheDamaged(f"{where}: x is {x.dtype} {tuple(x.shape)}, the manifest says uint8 {want}")
    if y.dtype != np.int64 or tuple(y.shape) != (n,):
        raise CacheDamaged(f"{where}: y is {y.dtype} {tuple(y.shape)}, the manifest says int64 ({n},)")
    k = manifest["num_classes"]
    if n and (int(y.min()) < 0 or int(y.max()) >= k):
        raise CacheDamaged(f"{where}: labels {int(y.min())}..{int(y.max())} are not all among the {k} classes")
    return x, y


def check_manifest(m: Any, key: str, g: int, spec: DatasetSpec, now: float | None = None) -> dict[str, Any]:
    """``m`` if it is a well-formed manifest of generation ``g`` of cache ``key`` for
    ``spec`` (with ``now``, the reader's clock: also decoded no later than a few minutes
    from now); CacheDamaged naming the first problem otherwise."""
    from storage import manifest_problem, time_problem

    where = f"data/{key}.g{g}.json"
    problem = manifest_problem(m, key, g)
    if problem:
        raise CacheDamaged(f"{where} {problem}")
    if now is not None and time_problem(m.get("decoded_at"), now):
        raise CacheDamaged(f"{where}: decoded_at {time_problem(m.get('decoded_at'), now)}")

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise CacheDamaged(f"{where}: {what}")

    def whole(v: Any, low: int, high: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

    need(isinstance(m, dict), "not a JSON object")
    need(m.get("format") == FORMAT, f"format is not {FORMAT}")
    need(m.get("key") == key and m.get("generation") == g, "names another cache")
    need(m.get("spec") == str(spec), "is for another dataset spec")
    k = m.get("num_classes")
    need(whole(k, 2, MAX_CLASSES), "num_classes must be 2 or more")
    names = m.get("class_names")
    need(isinstance(names, list) and len(names) == k and all(isinstance(n, str) and len(n) <= 1024 for n in names),
         "class_names must be one name per class")
    shape = m.get("input_shape")
    need(isinstance(shape, list) and len(shape) == 3 and shape[0] in (1, 3)
         and all(whole(d, 1, MAX_SIDE) for d in shape), "input_shape must be [C, H, W] with C 1 or 3")
    parts = m.get("parts")
    need(isinstance(parts, dict) and set(parts) == set(SPLITS), "parts must be train, val and test")
    per_image = shape[0] * shape[1] * shape[2] + 8
    for split in SPLITS:
        p = parts[split]
        need(isinstance(p, dict) and whole(p.get("images"), 0 if split == "test" else 1, 10**10),
             f"part {split} states no image count")
        need(whole(p.get("size"), p["images"] * per_image, p["images"] * per_image + MAX_HEADER_BYTES),
             f"part {split}: size does not fit {p['images']} images of {shape}")
        need(isinstance(p.get("key"), str) and p["key"].startswith(f"data/{key}.g{g}.{split}."),
             f"part {split} names an object of another cache")
        need(isinstance(p.get("sha256"), str) and len(p["sha256"]) == 64, f"part {split} states no SHA-256")
    need(m.get("data_sha256") == content_id(parts), "data_sha256 does not match its parts")
    need(m.get("preprocessing") is None or isinstance(m.get("preprocessing"), dict), "preprocessing is malformed")
    need(isinstance(m.get("summary"), dict), "summary is not an object")
    return m

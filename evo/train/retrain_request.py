"""What a final training is: the retrain request record (:func:`make_request`, its id
``{label}-{hash}``) and the model that a request names (:func:`build_model`, and the
``architecture`` object of its export). :mod:`evo.train.retrain` trains requests; the store keeps
them (:mod:`storage.retrain`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from evo.train.final_settings import FinalSettings

_LABEL = re.compile(r"[^A-Za-z0-9_.:+=@-]+")

# Absolute caps on what one request may make a trainer allocate (checked before anything is
# allocated; the request's cells and filters are capped by storage.retrain_format.MAX_CELLS
# and MAX_FILTERS already): the model's parameters, the layer outputs of one training batch
# (what backward keeps; 2**34 is 64 GiB in fp32) and the steps of the whole training (every
# step's loss is kept).
MAX_PARAMETERS = 500_000_000
MAX_BATCH_ACTIVATIONS = 2**34
MAX_TOTAL_STEPS = 20_000_000

class RefusedRequest(ValueError):
    """A request the runner will not train (too large, or data it may not read): one line,
    a per-request failure, never a traceback."""


# What a runner says of a request whose dataset it may not read: fixed, so that nothing about
# the named path (whether it exists, what it is) reaches the store or the log.
REFUSED_DATASET = ("refused: the request names a dataset other than the run's own (config.json) or one given "
                   "with --dataset; a request read from the store may not name other data")


# ----- requests -----

def make_request(*, label: str, source: dict[str, Any], dna: dict[str, Any], dna_hash: str, dataset: str,
                 settings: FinalSettings, size: dict[str, int] | None, init: str = "scratch") -> dict[str, Any]:
    """A retrain request record (plain data) with its id ``rid``.

    ``label``: an individual's id or an architecture's name (characters a store name cannot
    hold become ``_``); ``source``: where the DNA came from (``{"kind": "individual", "id",
    "fitness", "run"}``, ``{"kind": "arch", "name"}``, ``{"kind": "dna", "file"}``), plus for
    ``init="weights"`` the ``payload_sha256`` of the weights to continue from. The id's hash
    covers the DNA, size, dataset, settings, init and those weights, not the provenance.
    """
    if init not in ("scratch", "weights"):
        raise ValueError(f"init must be 'scratch' or 'weights', got {init!r}")
    what = {"dna_hash": dna_hash, "size": size, "dataset": dataset, "settings": settings.to_dict(), "init": init,
            "weights": source.get("payload_sha256") if init == "weights" else None}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    clean = _LABEL.sub("_", label).strip("_.-")[:100] or "model"
    if not clean[0].isalnum():
        clean = "m" + clean
    return {"schema": 1, "rid": f"{clean}-{digest}", "source": source, "kind": dna.get("kind", "large_scale"),
            "dna": dna, "dna_hash": dna_hash, "size": size, "dataset": dataset, "settings": settings.to_dict(),
            "init": init}


def dataset_allowed(text: Any, allowed: tuple[str, ...] | frozenset[str]) -> bool:
    """True when a request's dataset spec ``text`` may be read: a built-in dataset that names
    no path (``digits``), or exactly one of the ``allowed`` specs (the run's own dataset and
    those the user gave on the command line). Only the text is compared: nothing is opened or
    looked at on disk, so a refused path is never touched."""
    from evo.data.base import DatasetError
    from evo.data.spec import DatasetSpec

    try:
        spec = DatasetSpec.parse(text)
    except DatasetError:
        return False
    if not spec.path:
        return spec.name == "digits"
    canon = set()
    for a in allowed:
        try:
            canon.add(str(DatasetSpec.parse(a)))
        except DatasetError:
            continue
    return str(spec) in canon


def activations_per_image(request: dict[str, Any], input_shape: tuple[int, int, int]) -> int:
    """A generous estimate of the layer outputs one image makes the request's model hold
    (what backward keeps), from the DNA and size alone (no torch): NASNet ``64 * cells * filters
    * H * W * 1.75`` (three stacks of widths F, 2F, 4F at full, half and quarter resolution;
    64 tensors per cell and unit of width, measured on the meta device at 55); a large-scale
    DNA ``4 * (vertices + edges) * widest channel count * H * W``."""
    _, h, w = input_shape
    d = request["dna"]
    if d.get("kind") == "nasnet":
        size = request.get("size") or {}
        return int(64 * size.get("cells", 3) * size.get("filters", 24) * h * w * 1.75)
    edges = d.get("edges") if isinstance(d.get("edges"), list) else []
    vertices = d.get("vertices") if isinstance(d.get("vertices"), list) else []
    widths = [e.get("channels") for e in edges if isinstance(e, dict)]
    widest = max([c for c in widths if isinstance(c, int) and not isinstance(c, bool)] + [input_shape[0], 1])
    return 4 * (len(edges) + len(vertices)) * widest * h * w


def check_footprint(request: dict[str, Any], *, batch_size: int, epochs: int, train_images: int,
                    input_shape: tuple[int, int, int], num_classes: int, aux_head: bool, bounds: Any = None) -> int:
    """The number of parameters of the request's model, after checking that training it stays
    within :data:`MAX_TOTAL_STEPS`, :data:`MAX_BATCH_ACTIVATIONS` (:func:`activations_per_image`
    times ``batch_size``) and :data:`MAX_PARAMETERS`; :class:`RefusedRequest` (one line)
    otherwise. The parameters are counted on a model built on torch's ``meta`` device:
    nothing is allocated for its tensors."""
    import torch

    steps = epochs * -(-max(train_images, 1) // max(batch_size, 1))
    if steps > MAX_TOTAL_STEPS:
        raise RefusedRequest(f"refused: {epochs} epochs of {train_images} images in batches of {batch_size} are "
                             f"{steps:,} steps (at most {MAX_TOTAL_STEPS:,})")
    per_batch = activations_per_image(request, input_shape) * batch_size
    if per_batch > MAX_BATCH_ACTIVATIONS:
        raise RefusedRequest(f"refused: one batch of {batch_size} would hold about {per_batch:,} activations "
                             f"(at most {MAX_BATCH_ACTIVATIONS:,})")
    with torch.device("meta"):
        model, _ = build_model(request, input_shape, num_classes, aux_head=aux_head, bounds=bounds)
    params = sum(p.numel() for p in model.parameters())
    if params > MAX_PARAMETERS:
        raise RefusedRequest(f"refused: the request's model has {params:,} parameters (at most {MAX_PARAMETERS:,})")
    return params


# ----- models -----

def build_model(request: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int, *,
                aux_head: bool, bounds: Any = None) -> tuple[Any, bool]:
    """``(model, has_aux_head)`` for a request's DNA at its size, freshly initialised (the
    caller seeds torch). A NASNet request's size may name its ``stem`` (``cifar``,
    ``imagenet`` or ``auto``; absent: ``auto``, the NASNet space's default, which is CIFAR
    for every image of 64 px or less); a bad one is a one-line ValueError. NASNet models get
    the auxiliary head when asked
    (``build_nasnet(..., aux_head=True)``) and ScheduledDropPath (``model.drop_path_prob``);
    large-scale models have neither."""
    import dna as dna_lib

    d = request["dna"]
    if d.get("kind") == "nasnet":
        from dna.build_nasnet import build_nasnet
        from dna.nasnet import nasnet_from_dict

        size = request.get("size") or {}
        model = build_nasnet(nasnet_from_dict(d, bounds or _structure_only()), tuple(input_shape), num_classes,
                             cells_per_stack=size.get("cells", 3), filters=size.get("filters", 24),
                             aux_head=bool(aux_head), stem=size.get("stem", "auto"))
        return model, bool(aux_head)
    from dna.build import build

    genome = dna_lib.from_dict(d)
    return build(genome, tuple(input_shape), num_classes, bounds=bounds or _structure_only()), False


def _structure_only() -> Any:
    """Bounds that check a DNA's structure only: a request's DNA may come from outside the run."""
    import sys

    import dna as dna_lib

    return dna_lib.Bounds(max_vertices=10**6, max_edges=10**6, max_channels=10**9, max_filter_size=2**31 - 1,
                          max_stride=2**30, min_learning_rate=sys.float_info.min,
                          max_learning_rate=sys.float_info.max)


def export_architecture(request: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int) -> dict[str, Any]:
    """The ``architecture`` object of an export's model.json for a request's DNA and size."""
    d = request["dna"]
    if d.get("kind") == "nasnet":
        from dna.nasnet_network import choose_stem

        size = request.get("size") or {}
        filters = size.get("filters", 24)
        return {"kind": "nasnet", "input_shape": list(input_shape), "num_classes": num_classes,
                "cells_per_stack": size.get("cells", 3), "filters": filters,
                "stem": choose_stem(size.get("stem", "auto"), tuple(input_shape), filters)}
    import dna as dna_lib
    from dna.portable_plan import architecture

    return architecture(dna_lib.from_dict(d), tuple(input_shape), num_classes)

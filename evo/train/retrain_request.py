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

"""Search spaces: how a run makes, mutates, parses and builds its DNA.

``large_scale`` is the 2017 paper's DAG genome; ``nasnet`` the 2019 paper's cell space.
Everything here is torch-free except :meth:`SearchSpace.build`, which imports the model
builder (and so torch) only when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import dna as dna_pkg
from dna.bounds import Bounds


@dataclass(frozen=True)
class SearchSpace:
    """The operations the worker needs from a genome kind."""

    name: str
    initial: Callable[[np.random.Generator], Any]
    random: Callable[[np.random.Generator], Any]
    mutate: Callable[[Any, np.random.Generator], Any]
    parse: Callable[[Any], Any]            # dict from the store -> validated DNA (raises DNAError)
    build: Callable[..., Any]              # (dna, input_shape, num_classes) -> torch module


def large_scale(bounds: Bounds) -> SearchSpace:
    """The 2017 genome within ``bounds``."""
    import mutations

    def build(dna, input_shape, num_classes):
        from dna.build import build as build_model
        return build_model(dna, input_shape, num_classes, bounds=bounds)

    return SearchSpace(
        name="large_scale",
        initial=lambda rng: dna_pkg.initial(),
        random=lambda rng: mutations.random_dna(rng, bounds),
        mutate=lambda d, rng: mutations.mutate(d, rng, bounds),
        parse=lambda obj: dna_pkg.validate(dna_pkg.from_dict(obj), bounds),
        build=build,
    )


def nasnet(cells_per_stack: int, filters: int, bounds: Bounds) -> SearchSpace:
    """The NASNet cell space; models have ``cells_per_stack`` (N) and ``filters`` (F)."""
    from dna import nasnet as nas
    from mutations import nasnet as nas_mut

    def build(dna, input_shape, num_classes):
        from dna.build_nasnet import build_nasnet
        return build_nasnet(dna, input_shape, num_classes, cells_per_stack=cells_per_stack, filters=filters)

    return SearchSpace(
        name="nasnet",
        initial=nas.initial_nasnet,
        random=nas.random_nasnet,
        mutate=lambda d, rng: nas_mut.mutate_nasnet(d, rng, bounds=bounds),
        parse=lambda obj: nas.nasnet_from_dict(obj, bounds),
        build=build,
    )


def for_config(config) -> SearchSpace:
    """The search space a run config names."""
    if config.search_space == "nasnet":
        return nasnet(config.nasnet.cells_per_stack, config.nasnet.filters, config.bounds)
    return large_scale(config.bounds)


def parse_any(obj: Any, bounds: Bounds, nasnet_ok: bool = True) -> Any:
    """Parse a stored DNA dict of any known kind; raises only DNAError."""
    if isinstance(obj, dict) and obj.get("kind") == "nasnet" and nasnet_ok:
        from dna import nasnet as nas
        return nas.nasnet_from_dict(obj, bounds)
    return dna_pkg.validate(dna_pkg.from_dict(obj), bounds)

"""A toy search space, written as a newcomer would add one (docs/design.md walks through it).

The genome is a learning rate and the widths of a small MLP's hidden layers; its two
mutations widen or narrow one layer and add or drop one. It has one setting of its own,
``initial_width`` (the width of the individual a run starts from): ``evo init`` checks it,
config.json keeps it under ``"toy"``, ``evo init --help`` lists it, and the space receives
it as ``self.settings``. Importing this module registers the space ``toy`` and its mutations
``toy/resize`` and ``toy/depth``: nothing else in evo changes, and the worker, the config,
the store and the mutation contract suite take it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

import mutations
from dna import DNAError
from dna.genome import content_hash_of
from evo.config_checks import require_int
from evo.spaces import SearchSpace, register_space

MAX_LAYERS, MAX_WIDTH = 4, 64


@dataclass(frozen=True)
class ToyDNA:
    """Plain data: what the store keeps (``to_dict``) and what the hash covers."""

    learning_rate: float
    widths: tuple[int, ...]
    mutation: str = "initial"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "toy", "schema": 1, "learning_rate": self.learning_rate,
                "widths": list(self.widths), "mutation": self.mutation}

    def content_hash(self) -> str:
        return content_hash_of(self.to_dict())

    def replace(self, **changes: Any) -> "ToyDNA":
        return replace(self, **changes)


def validate_toy(d: ToyDNA, bounds: Any = None) -> ToyDNA:
    """The genome's invariants (raises DNAError): 1..MAX_LAYERS layers of 1..MAX_WIDTH."""
    if not 1 <= len(d.widths) <= MAX_LAYERS or not all(1 <= w <= MAX_WIDTH for w in d.widths):
        raise DNAError(f"toy DNA needs 1..{MAX_LAYERS} layers of width 1..{MAX_WIDTH}")
    if not 0 < d.learning_rate < 10:
        raise DNAError("toy DNA learning rate out of range")
    return d


def parse_toy(obj: Any) -> ToyDNA:
    """Untrusted JSON -> a validated ToyDNA (raises DNAError only)."""
    if not isinstance(obj, dict) or obj.get("kind") != "toy" or set(obj) != set(ToyDNA(1, (1,)).to_dict()):
        raise DNAError("not a toy DNA")
    widths, lr = obj["widths"], obj["learning_rate"]
    if not isinstance(widths, list) or not all(isinstance(w, int) and not isinstance(w, bool) for w in widths) \
            or isinstance(lr, bool) or not isinstance(lr, (int, float)) or not isinstance(obj["mutation"], str):
        raise DNAError("toy DNA has fields of the wrong type")
    return validate_toy(ToyDNA(float(lr), tuple(widths), obj["mutation"]))


# The mutations: declared for the space, then registered one by one.
mutations.declare_space("toy", ("resize", "depth"), validate_toy)
register = partial(mutations.register, space="toy")


@register("resize", candidates=lambda d, bounds: range(len(d.widths)))
def resize(d: ToyDNA, layer: int, rng: np.random.Generator, bounds: Any) -> ToyDNA:
    """Double or halve one layer's width (within 1..MAX_WIDTH)."""
    w = d.widths[layer]
    new = min(MAX_WIDTH, w * 2) if (rng.random() < 0.5 or w == 1) and w < MAX_WIDTH else max(1, w // 2)
    return d.replace(widths=d.widths[:layer] + (new,) + d.widths[layer + 1:])


@register("depth", candidates=lambda d, bounds: ("add",) * (len(d.widths) < MAX_LAYERS)
          + ("drop",) * (len(d.widths) > 1))
def depth(d: ToyDNA, how: str, rng: np.random.Generator, bounds: Any) -> ToyDNA:
    """Add a layer as wide as the last one, or drop the last one."""
    return d.replace(widths=d.widths + d.widths[-1:] if how == "add" else d.widths[:-1])


@dataclass(frozen=True)
class ToySettings:
    """The toy space's own settings (config.json: ``"toy": {"initial_width": 8}``)."""

    initial_width: int = field(default=8, metadata={"help": f"width of the first individual's layer, 1..{MAX_WIDTH}"})

    def __post_init__(self) -> None:
        require_int("toy.initial_width", self.initial_width, 1, MAX_WIDTH)


@register_space
class ToySpace(SearchSpace):
    """An MLP over the flattened image: the smallest space that still learns."""

    name = "toy"
    inherits_weights = False
    settings_class = ToySettings
    settings: ToySettings

    def parse(self, obj: Any) -> ToyDNA:
        return parse_toy(obj)

    def initial(self, rng: np.random.Generator) -> ToyDNA:
        return ToyDNA(0.1, (self.settings.initial_width,))

    def random(self, rng: np.random.Generator) -> ToyDNA:
        layers = int(rng.integers(1, MAX_LAYERS + 1))
        return ToyDNA(float(10 ** rng.uniform(-3, 0)), tuple(int(2 ** rng.integers(0, 7)) for _ in range(layers)))

    def build(self, dna: ToyDNA, input_shape: tuple[int, int, int], num_classes: int) -> Any:
        import torch

        sizes = [int(np.prod(input_shape)), *dna.widths]
        layers: list[Any] = [torch.nn.Flatten()]
        for a, b in zip(sizes, sizes[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], num_classes))

    @staticmethod
    def synthetic_fitness(dna: ToyDNA) -> float:
        return sum(dna.widths) / (MAX_LAYERS * MAX_WIDTH)

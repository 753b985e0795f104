"""The eleven mutations of Real et al. 2017, as pure functions over DNA, and a registry.

A mutation is ``(dna, rng: numpy.random.Generator, bounds) -> DNA | None``: a new, validated
child (the parent is never modified) or None when it does not apply. Whether it applies
depends on the DNA and the bounds only, never on the generator. :func:`mutate` picks one
uniformly among those that apply. Torch-free.
"""

from . import _conv_params, _structure, _training  # noqa: F401  (importing registers them)
from ._channels import symbolic_channels
from ._mutate import MUTATION_NAMES, NoMutationApplies, applicable, mutate
from ._random import STRUCTURAL_MUTATIONS, random_dna, random_learning_rate
from ._registry import REGISTRY, Mutation, register

if set(REGISTRY) != set(MUTATION_NAMES):  # a mutation module and the fixed order disagree
    raise ImportError(f"mutations registry {sorted(REGISTRY)} does not match MUTATION_NAMES")

__all__ = [
    "REGISTRY", "MUTATION_NAMES", "STRUCTURAL_MUTATIONS", "Mutation", "NoMutationApplies", "register",
    "mutate", "applicable", "random_dna", "random_learning_rate", "symbolic_channels",
]

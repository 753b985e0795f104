"""Mutations of every search space as pure functions over DNA, in one namespaced registry.

A mutation is ``(dna, rng: numpy.random.Generator, bounds) -> DNA | None``: a new, validated
child (the parent is never modified) or None when it does not apply. Whether it applies
depends on the DNA and the bounds only, never on the generator. ``REGISTRY`` maps
``"{space}/{name}"`` (``large_scale/insert_convolution``, ``nasnet/op``) to it;
:func:`mutate` picks one of a space's uniformly among those that apply. Torch-free.

The eleven of Real et al. 2017 are ``large_scale/*``; the three of Real et al. 2019 are
``nasnet/*`` (:mod:`mutations.nasnet`); NAS-Bench-201's one (change an edge's op) is
``nasbench201/op`` (:mod:`mutations.nasbench201`). A new space declares its names and validator with
:func:`declare_space` and registers each mutation with :func:`register`.
"""

from . import _conv_params, _structure, _training  # noqa: F401  (importing registers them)
from . import nasnet  # noqa: F401  (registers nasnet/*)
from . import nasbench201  # noqa: F401  (registers nasbench201/*)
from ._channels import symbolic_channels
from ._mutate import MUTATION_NAMES, NoMutationApplies, applicable, mutate
from ._random import STRUCTURAL_MUTATIONS, random_dna, random_learning_rate
from ._registry import ORDER, REGISTRY, Mutation, check_complete, declare_space, mutations_of, register

check_complete()  # every declared mutation has its module

__all__ = [
    "REGISTRY", "ORDER", "MUTATION_NAMES", "STRUCTURAL_MUTATIONS", "Mutation", "NoMutationApplies",
    "register", "declare_space", "mutations_of", "mutate", "applicable", "random_dna",
    "random_learning_rate", "symbolic_channels",
]

"""One contract for every registered mutation of every registered search space (the toy
space of tests/toy_space.py included, as any newly added space would be): a mutation is a
pure function that leaves its parent alone, applies or not independently of the generator,
is deterministic under a seed, names itself, and gives a child that survives the space's
own parse of its JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mutations
import toy_space  # noqa: F401  (registers the toy space and its mutations)
from evo.config import RunConfig
from evo.spaces import make_space, space_names


def _space(name: str):
    return make_space(RunConfig(search_space=name, dataset="synthetic"))


def _parents(space, count: int = 6) -> list:
    """Initial, random, and mutated individuals of the space (a short chain from each)."""
    out = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        start = space.initial(rng) if seed == 0 else space.random(rng)
        out.append(start)
        child = start
        for _ in range(3):
            child = space.mutate(child, rng)
            out.append(child)
    return out


MUTATIONS = sorted(mutations.REGISTRY)


def test_every_space_has_declared_and_registered_mutations():
    assert set(space_names()) >= {"large_scale", "nasnet", "nasbench201", "toy"}
    for name in space_names():
        assert mutations.ORDER[name], name
        assert [m.key for m in mutations.mutations_of(name)] == [f"{name}/{n}" for n in mutations.ORDER[name]]


@pytest.mark.parametrize("key", MUTATIONS)
def test_mutation_contract(key):
    mutation = mutations.REGISTRY[key]
    space = _space(mutation.space)
    bounds = space.bounds
    applied = 0
    for parent in _parents(space):
        before = json.dumps(parent.to_dict(), sort_keys=True)
        children = [mutation(parent, np.random.default_rng(seed), bounds) for seed in range(4)]
        assert json.dumps(parent.to_dict(), sort_keys=True) == before, "the parent was modified"
        applies = mutation.applies(parent, bounds)
        assert all((c is not None) == applies for c in children), "applying depended on the generator"
        for seed, child in enumerate(children if applies else []):
            applied += 1
            assert child.mutation == mutation.name
            assert space.parse(json.loads(json.dumps(child.to_dict()))) == child, "JSON round trip"
            assert mutation(parent, np.random.default_rng(seed), bounds) == child, "not deterministic"
    assert applied, f"{key} never applied to any parent of its space"


@pytest.mark.parametrize("name", ["large_scale", "nasnet", "nasbench201", "toy"])
def test_mutate_picks_only_mutations_that_apply(name):
    space = _space(name)
    rng = np.random.default_rng(0)
    for parent in _parents(space, 3):
        child = space.mutate(parent, rng)
        assert mutations.REGISTRY[f"{name}/{child.mutation}"].applies(parent, space.bounds)

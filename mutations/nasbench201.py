"""The mutation of the NAS-Bench-201 cell space: change one edge's op.

This is the mutation of the regularized-evolution baseline that NAS-Bench-201 and NATS-Bench
run (Dong & Yang 2020; Dong et al. 2021): one of the six edges uniformly, then a different op
uniformly among the other four, so a child always differs from its parent in exactly one edge.
Registered as ``nasbench201/op`` in the one registry. No torch.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from dna.bounds import Bounds
from dna.nasbench201 import NUM_EDGES, OPS, Nb201DNA, validate_nb201

from ._registry import declare_space
from ._registry import register as _register

NASBENCH201 = "nasbench201"

declare_space(NASBENCH201, ("op",), validate_nb201)
register = partial(_register, space=NASBENCH201)

_EDGES = tuple(range(NUM_EDGES))


def _edges(dna: Nb201DNA, bounds: Bounds) -> tuple[int, ...]:
    return _EDGES


@register("op", candidates=_edges)
def op(dna: Nb201DNA, edge: int, rng: np.random.Generator, bounds: Bounds) -> Nb201DNA:
    """Replace the op of one edge by a different op, uniform over the other four."""
    choices = [o for o in OPS if o != dna.ops[edge]]
    new = choices[int(rng.integers(len(choices)))]
    return dna.replace(ops=dna.ops[:edge] + (new,) + dna.ops[edge + 1:])

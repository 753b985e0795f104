"""The 2017 paper's space in the mutation registry: its eleven names, in the paper's order,
and the validator every child passes (``dna.validate``)."""

from __future__ import annotations

from functools import partial

from dna import validate

from ._mutate import LARGE_SCALE, MUTATION_NAMES
from ._registry import declare_space
from ._registry import register as _register

declare_space(LARGE_SCALE, MUTATION_NAMES, validate)

register = partial(_register, space=LARGE_SCALE)
"""``@register(name, candidates=...)`` for a large-scale mutation."""

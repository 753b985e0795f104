"""What makes a record of the store valid beyond its fields: its DNA and its weights. Pure.

Every DNA read from the store goes through :func:`check_dna` (with the run's bounds when the
reader has them, else structure only), and every payload through :func:`verify_weights`.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from typing import Any

import dna as dna_lib

from .records import CorruptRecord
from .safetensors_check import safetensors_problem

DnaValidator = Callable[[dict], object]
"""Checks a DNA JSON object of a kind storage does not know; raises ValueError if invalid."""

# Structural validation only: used when the caller gives no run bounds, so that a run with
# wider bounds never has valid individuals quarantined by a reader that lacks its config.
STRUCTURE_ONLY = dna_lib.Bounds(
    max_vertices=10**6, max_edges=10**6, max_channels=10**9, max_filter_size=2**31 - 1,
    max_stride=2**30, min_learning_rate=sys.float_info.min, max_learning_rate=sys.float_info.max)


def check_dna(d: dict[str, Any], bounds: dna_lib.Bounds | None,
              validator: DnaValidator | None) -> None:
    """Raise CorruptRecord unless ``d`` is a valid DNA: through ``validator`` when given
    (the run's search space), else by its kind (``large_scale`` or ``nasnet``)."""
    try:
        if validator is not None and d.get("kind") != "large_scale":
            validator(d)
        elif d.get("kind") == "nasnet":
            from dna.nasnet import nasnet_from_dict
            nasnet_from_dict(d, bounds or STRUCTURE_ONLY)
        else:
            dna_lib.validate(dna_lib.from_dict(d), bounds or STRUCTURE_ONLY)
    except CorruptRecord:
        raise
    except ValueError as exc:
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CorruptRecord(f"DNA does not validate: {text}") from None


def weights_size_problem(size: int | None, expected: int) -> str | None:
    """Why weights of ``size`` bytes (None: absent) are not the ``expected`` ones, or None."""
    if size is None:
        return "weights are missing"
    if size < expected:
        return f"weights are truncated ({size} of {expected} bytes)"
    if size > expected:
        return f"weights have {size} bytes, the commit says {expected}"
    return None


def verify_weights(commit: dict[str, Any], weights: bytes) -> None:
    """Raise CorruptRecord unless ``weights`` are the payload the commit describes, whole."""
    problem = weights_size_problem(len(weights), commit["payload_size"])
    if problem:
        raise CorruptRecord(problem)
    if hashlib.sha256(weights).hexdigest() != commit["payload_sha256"]:
        raise CorruptRecord("weights do not match their sha256")
    problem = safetensors_problem(weights)
    if problem:
        raise CorruptRecord(f"weights are not valid safetensors: {problem}")

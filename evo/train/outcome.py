"""What evaluating a child produces (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """Fitness (validation accuracy in [0, 1]), safetensors weight bytes, and metrics.

    ``metrics`` holds at least ``train_s``, ``eval_s``, ``build_s``, ``inherit_s`` and
    ``inherited_fraction`` so the overhead benchmark can break a child's time down.
    """

    fitness: float
    weights: bytes
    metrics: dict[str, Any] = field(default_factory=dict)

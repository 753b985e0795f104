"""Bounds on a DNA: what a run allows, and what an untrusted DNA may not exceed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Bounds:
    """Limits every DNA of a run must respect; mutations never step outside them.

    Filter sizes are odd, from 1 to ``max_filter_size``; strides are powers of two from 1
    to ``max_stride``; output channels from 1 to ``max_channels``.
    """

    max_vertices: int = 32
    max_edges: int = 64
    max_channels: int = 256
    max_filter_size: int = 7
    max_stride: int = 4
    min_learning_rate: float = 1e-4
    max_learning_rate: float = 1.0

    def __post_init__(self) -> None:
        if self.max_vertices < 2 or self.max_edges < 1:
            raise ValueError("bounds: need at least 2 vertices and 1 edge")
        if self.max_channels < 1 or self.max_filter_size < 1 or self.max_stride < 1:
            raise ValueError("bounds: max_channels, max_filter_size, max_stride must be >= 1")
        if self.max_filter_size % 2 == 0:
            raise ValueError("bounds: max_filter_size must be odd")
        if self.max_stride & (self.max_stride - 1):
            raise ValueError("bounds: max_stride must be a power of two")
        if not 0 < self.min_learning_rate <= self.max_learning_rate:
            raise ValueError("bounds: need 0 < min_learning_rate <= max_learning_rate")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Bounds":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"bounds: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**d)


DEFAULT_BOUNDS = Bounds()

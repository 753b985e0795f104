"""Bounds on a DNA: what a run allows, and what an untrusted DNA may not exceed."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .numbers import is_finite_number


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
        check_int("bounds.max_vertices", self.max_vertices, 2)
        check_int("bounds.max_edges", self.max_edges, 1)
        check_int("bounds.max_channels", self.max_channels, 1)
        check_int("bounds.max_filter_size", self.max_filter_size, 1)
        if self.max_filter_size % 2 == 0:
            raise ValueError(f"bounds.max_filter_size must be odd (1, 3, 5, ...), got {self.max_filter_size}")
        check_int("bounds.max_stride", self.max_stride, 1)
        if self.max_stride & (self.max_stride - 1):
            raise ValueError(f"bounds.max_stride must be a power of two (1, 2, 4, ...), got {self.max_stride}")
        check_number("bounds.min_learning_rate", self.min_learning_rate, 0, math.inf, low_open=True)
        check_number("bounds.max_learning_rate", self.max_learning_rate, 0, math.inf, low_open=True)
        if self.min_learning_rate > self.max_learning_rate:
            raise ValueError(f"bounds.min_learning_rate must be at most max_learning_rate "
                             f"({self.max_learning_rate:g}), got {self.min_learning_rate:g}")

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


def check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Raise ValueError (one line: the name, the valid range, the value) unless ``value`` is an
    int (not a bool) in ``low..high`` (no upper limit when ``high`` is None)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        valid = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {valid}, got {value!r}")


def check_number(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False) -> None:
    """Raise ValueError (one line) unless ``value`` is a finite int or float in the interval
    ``[low, high]`` (open at an end where ``low_open`` / ``high_open``; ``high`` may be
    ``math.inf``). NaN and infinities never pass."""
    ok = is_finite_number(value)
    if ok:
        ok = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not ok:
        if math.isinf(high):
            valid = f"{'>' if low_open else '>='} {low:g}"
        else:
            valid = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number {valid}, got {value!r}")


DEFAULT_BOUNDS = Bounds()

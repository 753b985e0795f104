"""Numeric draws "around the current value, within about a factor of two" (Real et al. 2017).

Each draw is guaranteed to return a value different from the current one, in one pass (no
retry loop), provided the caller checked that such a value exists within the bounds.
"""

from __future__ import annotations

import numpy as np


def _nonzero_exponent(rng: np.random.Generator) -> float:
    """U(-1, 1) without 0: a random sign times a magnitude in (0, 1]."""
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return sign * (1.0 - rng.random())


def new_learning_rate(lr: float, rng: np.random.Generator, low: float, high: float) -> float:
    """``lr * 2**u`` with u ~ U(-1, 1), clipped to [low, high], different from ``lr``.

    If clipping makes it equal to ``lr`` (``lr`` sits on a bound and u points outwards), the
    opposite exponent is used instead. Needs ``low < high``.
    """
    u = _nonzero_exponent(rng)
    for exponent in (u, -u):
        value = float(min(max(lr * 2.0**exponent, low), high))
        if value != lr:
            return value
    raise ValueError(f"learning rate {lr:g} cannot change within [{low:g}, {high:g}]")


def new_channels(c: int, rng: np.random.Generator, high: int) -> int:
    """``round(c * 2**u)`` with u ~ U(-1, 1), clipped to [1, high], different from ``c``.

    If rounding or clipping gives back ``c``, the value steps to the neighbour on u's side
    (or the other neighbour at a bound); both lie within a factor of two. Needs ``high >= 2``.
    """
    u = float(rng.uniform(-1.0, 1.0))
    value = min(max(round(c * 2.0**u), 1), high)
    if value != c:
        return value
    up, down = c + 1, c - 1
    if u >= 0:
        return up if up <= high else down
    return down if down >= 1 else up


def odd_sizes_near(size: int, high: int) -> list[int]:
    """Odd filter sizes in [1, high] other than ``size``, within a factor of two of it.

    The neighbouring odd sizes ``size +- 2`` always count as near, so 1 can grow to 3.
    """
    return [g for g in range(1, high + 1, 2)
            if g != size and (size / 2 <= g <= 2 * size or abs(g - size) == 2)]


def stride_options(stride: int, high: int) -> list[int]:
    """The strides one step away: doubled (if <= high) and halved (if >= 1)."""
    options = []
    if stride * 2 <= high:
        options.append(stride * 2)
    if stride > 1:
        options.append(stride // 2)
    return options

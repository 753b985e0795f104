"""What counts as a number in evo's JSON (DNA, records, settings): one test for all readers."""

from __future__ import annotations

import math
import sys
from typing import Any

_LARGEST = sys.float_info.max


def is_finite_number(value: Any) -> bool:
    """True if ``value`` is an int or float (never a bool) that is a finite float: not NaN,
    not an infinity, and no int too large for a float (JSON may hold a 400-digit integer;
    ``math.isfinite`` raises OverflowError on it, and ``float()`` would too)."""
    cls = value.__class__
    if cls is float:
        return math.isfinite(value)
    if cls is int or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return -_LARGEST <= value <= _LARGEST and math.isfinite(float(value))
    return False

"""One bounded, total parser for untrusted JSON: the store's records and user-given files.

It lives at the bottom of the house (``dna`` imports nothing of evo's) because every layer
reads untrusted JSON: DNA files, the store's records, policy versions, manifests, requests,
``config.json``. :func:`parse_json` never raises anything but :class:`UntrustedJSONError`
(a ``ValueError`` with a one-line reason), whatever the bytes:

- the size is bounded before anything is decoded;
- the nesting depth is measured before the decoder runs (so no ``RecursionError``, in the
  decoder or in any code that later walks the value), by a linear scan that stops at the
  first bracket past the limit;
- ``NaN``/``Infinity`` are refused, a float that overflows (``1e999``) is refused, and an
  integer may have at most :data:`MAX_INT_DIGITS` digits (no 4,300-digit numbers, no
  quadratic int conversion);
- strings and object keys are bounded in length only by the size bound.

Range checks that depend on the record kind (times near now, versions near the chain's
head, metrics bounded in count) are the record parsers' job; this is the common floor.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32             # deeper than any record evo writes (a DNA is ~5 levels)
MAX_INT_DIGITS = 20        # 2**64 has 20 digits; sizes, seeds and versions fit
MAX_JSON_BYTES = 2**24     # the default bound; callers pass their own, tighter ones


class UntrustedJSONError(ValueError):
    """Untrusted bytes that are not bounded, strict JSON; the message is the one-line reason."""


# A JSON string with its escapes (the unrolled form: no backtracking per character).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")


def _outside_strings(raw: bytes) -> bytes:
    """``raw`` without its JSON strings (so brackets inside them do not count). On malformed
    input (an unterminated string) the result may be off, which is harmless: the decoder
    then refuses the text."""
    if b"\\" not in raw:      # no escapes: every quote opens or closes a string
        return b"".join(raw.split(b'"')[::2])
    return _STRING.sub(b"", raw)


def nesting_depth(raw: bytes, limit: int = MAX_DEPTH) -> int:
    """The nesting depth of ``[``/``{`` in JSON bytes when it is over ``limit`` (then
    ``limit + 1``); otherwise some number no larger than ``limit``. Linear in C-level passes
    (strings removed, brackets kept, innermost pairs removed once per level), no recursion
    and no Python step per character."""
    opened = raw.count(b"[") + raw.count(b"{")
    if opened <= limit:          # most records: nothing to scan
        return opened
    brackets = _outside_strings(raw).translate(_ONE_KIND, _NOT_BRACKETS)
    for level in range(limit + 1):
        if not brackets:
            return level
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return 0             # unbalanced: not JSON, which the decoder will say
        brackets = shorter
    return limit + 1             # limit + 1 levels removed: at least that deep


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:24]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text)} digits is out of range")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


_CHECKED = json.JSONDecoder(parse_float=_float, parse_int=_int, parse_constant=_no_constant)
_FAST = json.JSONDecoder(parse_constant=_no_constant)
# Only a number whose integer part has 21+ digits or whose exponent has 3 can be out of
# range; text without one is decoded with no Python call per number (several times faster
# on records of many floats). A number starts the text or follows ':', '[' or ','; matches
# inside strings merely send the text the checked way.
_MAYBE_OUT_OF_RANGE = re.compile(rb"(?:^|[:\[,])\s*-?(?:\d{21}|\d+(?:\.\d*)?[eE][+-]?\d{3})")


def parse_json(raw: bytes | str, what: str, *, max_bytes: int = MAX_JSON_BYTES,
               max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in ``raw``, or :class:`UntrustedJSONError` naming ``what`` and the
    problem in one line (too large, too deep, not UTF-8, not JSON, a number out of range).
    Never raises anything else, never recurses deeper than ``max_depth``."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeError:
            raise UntrustedJSONError(f"{what} is not valid JSON: not UTF-8") from None
    if len(raw) > max_bytes:
        raise UntrustedJSONError(f"{what} is too large ({len(raw)} bytes, at most {max_bytes})")
    if nesting_depth(raw, max_depth) > max_depth:
        raise UntrustedJSONError(f"{what} is not valid JSON: nested deeper than {max_depth} levels")
    decoder = _CHECKED if _MAYBE_OUT_OF_RANGE.search(raw) else _FAST
    try:
        return decoder.decode(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UntrustedJSONError(f"{what} is not valid JSON: not UTF-8") from None
    except (ValueError, RecursionError, OverflowError, TypeError) as exc:
        text = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise UntrustedJSONError(f"{what} is not valid JSON: {text}") from None

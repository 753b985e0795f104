"""A pure-Python structural check of a safetensors blob, so truncated or garbled weights are
caught without torch (workers that only select and kill never import it).

Format: 8 bytes little-endian header length N, then N bytes of JSON header (an object:
tensor name -> {dtype, shape, data_offsets: [begin, end]}, plus an optional
``__metadata__`` of strings), then the byte buffer. The tensors must tile the buffer exactly,
in order, with no gap, overlap or slack, as the safetensors library itself demands.
"""

from __future__ import annotations

import math
from typing import Any

from dna.strict_json import UntrustedJSONError, parse_json

MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit

# Bits per element of each dtype the safetensors format defines (an unknown dtype is refused,
# as the library refuses it).
_ITEM_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


def safetensors_problem(blob: bytes) -> str | None:
    """None if ``blob`` is a structurally whole safetensors file, else a one-line reason.

    Checks the header length, the header JSON, each tensor's dtype/shape/offsets, that each
    tensor's byte size matches its dtype and shape, and that the tensors cover the
    data buffer exactly. It does not look at the tensor values.
    """
    if len(blob) < 8:
        return f"too short for a safetensors file ({len(blob)} bytes)"
    n = int.from_bytes(blob[:8], "little")
    if n > MAX_HEADER_BYTES:
        return f"header length {n} is too large"
    if 8 + n > len(blob):
        return f"truncated: header needs {8 + n} bytes, file has {len(blob)}"
    try:
        header = parse_json(bytes(blob[8:8 + n]), "header", max_bytes=n)
    except UntrustedJSONError:
        return "header is not valid JSON"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    buffer_len = len(blob) - 8 - n
    spans = []
    for name, spec in header.items():
        if name == "__metadata__":
            if not isinstance(spec, dict) or not all(isinstance(v, str) for v in spec.values()):
                return "__metadata__ must map names to strings"
            continue
        reason = _tensor_problem(spec)
        if reason:
            return f"tensor {name[:60]!r}: {reason}"
        spans.append((spec["data_offsets"][0], spec["data_offsets"][1], name))
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin != position:
            return f"tensor {name[:60]!r} starts at {begin}, expected {position} (gap or overlap)"
        position = end
    if position != buffer_len:
        if position > buffer_len:
            return f"truncated: tensors need {position} data bytes, file has {buffer_len}"
        return f"{buffer_len - position} trailing bytes after the last tensor"
    return None


def safetensors_header_ok(blob: bytes) -> bool:
    """True iff :func:`safetensors_problem` finds nothing wrong with ``blob``."""
    return safetensors_problem(blob) is None


def _tensor_problem(spec: Any) -> str | None:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        return "entry must have exactly dtype, shape, data_offsets"
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str):
        return "dtype is not a string"
    if not isinstance(shape, list) or not all(_nonneg_int(d) for d in shape):
        return "shape is not a list of non-negative integers"
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_nonneg_int(o) for o in offsets)
            or offsets[0] > offsets[1]):
        return "data_offsets is not [begin, end] with 0 <= begin <= end"
    bits = _ITEM_BITS.get(dtype)
    if bits is None:
        return f"unknown dtype {dtype[:20]!r}"
    needed_bits = math.prod(shape) * bits
    if needed_bits % 8 or needed_bits // 8 != offsets[1] - offsets[0]:
        return f"{offsets[1] - offsets[0]} bytes do not hold a {dtype} tensor of shape {shape}"
    return None


def _nonneg_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

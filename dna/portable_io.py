"""The files of an evo export, read with PyTorch and the Python standard library alone.

Part of evo's portable model code (see ``dna.portable``): ``evo best --export`` copies this
module verbatim into every export, so nothing here may import anything but torch, the
standard library and its ``portable_*`` siblings.

- JSON files (``model.json``, ``dna.json``): :func:`read_json_file`;
- safetensors weights: :func:`read_safetensors` (an 8-byte header length, a JSON header, raw
  little-endian tensor data; never pickle);
- NumPy ``.npz`` data (numeric arrays only): :func:`read_npz`.

Every problem is an :class:`ExportError` whose one-line message names the file.
"""

from __future__ import annotations

import ast
import json
import math
import struct
import zipfile
from typing import Any

import torch

MAX_HEADER_BYTES = 100 * 2**20


class ExportError(ValueError):
    """An export directory, weights file or data file that cannot be used. One line."""


def read_json_file(path: str) -> Any:
    """A JSON file, or ExportError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ExportError(f"{path}: no such file (is this an evo export directory?)") from None
    except RecursionError:   # json's own limit on nesting (the standard library is all we have)
        raise ExportError(f"{path}: not readable JSON: nested too deeply") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ExportError(f"{path}: not readable JSON: {str(exc).splitlines()[0][:160]}") from None


# ----- safetensors with torch alone -----

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(source: str | bytes) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (path) or blob (bytes), parsed with torch alone.

    Layout: u64 little-endian header length N, N bytes of JSON header mapping each name to
    ``dtype``, ``shape`` and ``data_offsets`` (relative to the end of the header), then the
    data. Every offset and size is checked; ExportError names the problem.
    """
    where = source if isinstance(source, str) else "weights"
    if isinstance(source, str):
        try:
            with open(source, "rb") as f:
                blob = f.read()
        except OSError as exc:
            raise ExportError(f"{source}: {exc.strerror or exc}") from None
    else:
        blob = bytes(source)
    if len(blob) < 8:
        raise ExportError(f"{where}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > min(MAX_HEADER_BYTES, len(blob) - 8):
        raise ExportError(f"{where}: safetensors header length {n} is impossible")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ExportError(f"{where}: safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise ExportError(f"{where}: safetensors header is not an object")
    data = memoryview(blob)[8 + n:]
    out: dict[str, torch.Tensor] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[meta["dtype"]]
            shape = [int(d) for d in meta["shape"]]
            begin, end = (int(o) for o in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ExportError(f"{where}: tensor {name!r} has a bad header entry") from None
        count = math.prod(shape)
        size = count * torch.empty((), dtype=dtype).element_size()
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= len(data) or end - begin != size:
            raise ExportError(f"{where}: tensor {name!r} has bad offsets or size")
        if count == 0:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            out[name] = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).reshape(shape)
    return out


# ----- data (.npz / .npy) with the standard library -----

_NPY_DTYPES = {
    "u1": torch.uint8, "i1": torch.int8, "i2": torch.int16, "i4": torch.int32, "i8": torch.int64,
    "f2": torch.float16, "f4": torch.float32, "f8": torch.float64, "b1": torch.bool,
}


def read_npz(path: str) -> dict[str, torch.Tensor]:
    """Arrays of a NumPy ``.npz`` file (numeric dtypes only; object arrays are refused)."""
    try:
        with zipfile.ZipFile(path) as z:
            return {name[:-4]: _npy(z.read(name), f"{path}:{name}") for name in z.namelist()
                    if name.endswith(".npy")}
    except FileNotFoundError:
        raise ExportError(f"{path}: no such file") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise ExportError(f"{path}: not a .npz file ({exc})") from None


def _npy(raw: bytes, where: str) -> torch.Tensor:
    if raw[:6] != b"\x93NUMPY":
        raise ExportError(f"{where}: not a .npy array")
    major = raw[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", raw[8:10]), 10
    else:
        (hlen,), start = struct.unpack("<I", raw[8:12]), 12
    try:
        header = ast.literal_eval(raw[start:start + hlen].decode("latin1"))
        descr, fortran, shape = header["descr"], header["fortran_order"], tuple(header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError):
        raise ExportError(f"{where}: bad .npy header") from None
    if not isinstance(descr, str) or descr[1:] not in _NPY_DTYPES or descr[0] not in "<|=":
        raise ExportError(f"{where}: unsupported dtype {descr!r} (numeric little-endian only)")
    dtype = _NPY_DTYPES[descr[1:]]
    body = raw[start + hlen:]
    count = math.prod(shape)
    size = count * torch.empty((), dtype=dtype).element_size()
    if len(body) < size:
        raise ExportError(f"{where}: truncated array data")
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    t = torch.frombuffer(bytearray(body[:size]), dtype=dtype)
    if fortran:
        return t.reshape(tuple(reversed(shape))).permute(*reversed(range(len(shape)))).contiguous()
    return t.reshape(shape)

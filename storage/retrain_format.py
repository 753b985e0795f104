"""The names and records of ``retrain/`` (docs/layout.md): retrain ids, keys, the file-name
patterns of claims, heartbeats and checkpoints, and the structural checks of a request and
a result. The store operations on them are :mod:`storage.retrain`; the audit of the folder
is :mod:`storage.check_retrain`. Torch-free.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .records import MAX_PAYLOAD_BYTES, CorruptRecord, dna_hash
from .verify import check_dna


RETRAIN = "retrain"
RETRAIN_SCHEMA = 1
_RID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+=@-]{0,110}-[0-9a-f]{12}")
CLAIM_NAME = re.compile(r"claim-(\d{6})\.json")
BEAT_NAME = re.compile(r"beat-(\d{6})\.json")
CKPT_NAME = re.compile(r"ckpt-(\d{10})\.json")
CKPT_BLOB_NAME = re.compile(r"ckpt-(\d{10})\.([0-9a-f]{16})\.safetensors")
EXPORT_FILE_NAME = re.compile(r"(evo_model/)?[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
FIXED_NAMES = ("metrics.json", "result.json")
MIN_LEASE, MAX_LEASE = 5.0, 24 * 3600.0
# How far a claim's or heartbeat's time may be ahead of the reader's clock (clocks of the
# machines of one run differ by seconds): one dated later is foreign and is ignored.
CLOCK_SKEW = 300.0
MAX_CLAIMS = 999_999
MAX_EXPORT_FILES = 64
# A NASNet request's size: at most MAX_CELLS cells per stack and MAX_FILTERS filters (the
# papers' largest final models are N=6, F=448); evo.train.retrain_request bounds the model's
# parameters and activations further before anything is allocated.
MAX_CELLS, MAX_FILTERS = 16, 1024


def is_retrain_id(text: Any) -> bool:
    """True if ``text`` has the form of a retrain id (``{label}-{12 hex}``)."""
    return isinstance(text, str) and _RID.fullmatch(text) is not None


def check_retrain_id(text: Any) -> str:
    """``text`` if it is a retrain id, else ValueError naming it."""
    if not is_retrain_id(text):
        raise ValueError(f"not a retrain id: {str(text)[:80]!r}")
    return text


def request_key(rid: str) -> str:
    """Key of a retrain's request."""
    return f"{RETRAIN}/{check_retrain_id(rid)}.json"


def retrain_key(rid: str, name: str) -> str:
    """Key of the file ``name`` in a retrain's folder."""
    return f"{RETRAIN}/{check_retrain_id(rid)}/{name}"


def check_request(obj: Any, rid: str | None) -> dict[str, Any]:
    """A retrain request after checking its structure and DNA; CorruptRecord otherwise.

    The DNA is checked by its own kind, structurally (a request may name an architecture
    from outside the run, e.g. a published cell in a large-scale run's directory, so the
    run's search space and bounds do not apply); the training settings inside are checked
    by their owner, ``evo.train.final_settings``.
    """
    if not isinstance(obj, dict):
        raise CorruptRecord("retrain request is not a JSON object")
    if obj.get("schema") != RETRAIN_SCHEMA or isinstance(obj.get("schema"), bool):
        raise CorruptRecord(f"unknown retrain request schema {repr(obj.get('schema'))[:40]}")
    if rid is not None and obj.get("rid") != rid:
        raise CorruptRecord("retrain request's rid does not match its name")
    for name, kind in (("dna", dict), ("settings", dict), ("source", dict), ("dataset", str), ("init", str)):
        if not isinstance(obj.get(name), kind):
            raise CorruptRecord(f"retrain request field {name!r} is missing or of the wrong type")
    size = obj.get("size")
    if size is not None and not (isinstance(size, dict) and all(
            isinstance(size.get(k), int) and not isinstance(size.get(k), bool) and 1 <= size[k] <= cap
            for k, cap in (("cells", MAX_CELLS), ("filters", MAX_FILTERS)))):
        raise CorruptRecord(f"retrain request field 'size' must be null or {{cells: 1..{MAX_CELLS}, "
                            f"filters: 1..{MAX_FILTERS}}}")
    if obj["init"] not in ("scratch", "weights"):
        raise CorruptRecord("retrain request field 'init' must be 'scratch' or 'weights'")
    if obj.get("dna_hash") != dna_hash(obj["dna"]):
        raise CorruptRecord("retrain request's dna_hash does not match its DNA")
    check_dna(obj["dna"], None, None)
    return obj


def claim_problem(obj: Any, rid: str, n: int, now: float) -> str | None:
    """Why ``obj`` (read from ``claim-{n}.json``) is not a claim of ``rid`` a reader can judge
    by its own clock (None when it is one): a claim numbered otherwise, of another retrain,
    with a lease out of bounds, or dated more than :data:`CLOCK_SKEW` seconds in the future."""
    if not isinstance(obj, dict) or obj.get("schema") != RETRAIN_SCHEMA or isinstance(obj.get("schema"), bool):
        return "is not a retrain claim"
    if obj.get("rid") != rid or obj.get("n") != n or isinstance(obj.get("n"), bool):
        return "is not this retrain's claim of that number"
    lease, t = obj.get("lease"), obj.get("time")
    if not _number(lease) or not MIN_LEASE <= lease <= MAX_LEASE:
        return "has no lease in bounds"
    if not _number(t) or t > now + CLOCK_SKEW:
        return "is dated in the future" if _number(t) else "has no time"
    return None


def beat_problem(obj: Any, n: int, now: float) -> str | None:
    """Why ``obj`` (read from ``beat-{n}.json``) is not a heartbeat of claim ``n`` dated at
    most :data:`CLOCK_SKEW` seconds ahead of the reader's clock; None when it is one."""
    if not isinstance(obj, dict) or obj.get("n") != n or isinstance(obj.get("n"), bool):
        return "is not a heartbeat of its claim"
    t = obj.get("time")
    if not _number(t) or t > now + CLOCK_SKEW:
        return "is dated in the future" if _number(t) else "has no time"
    if "info" in obj and not isinstance(obj["info"], dict):
        return "has no info object"
    return None


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_result(obj: Any, rid: str) -> dict[str, Any]:
    """A retrain result after checking its fields; CorruptRecord otherwise."""
    if not isinstance(obj, dict) or obj.get("schema") != RETRAIN_SCHEMA or obj.get("rid") != rid:
        raise CorruptRecord("retrain result is not a result of this retrain")
    acc = obj.get("test_accuracy")
    if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0 <= acc <= 1:
        raise CorruptRecord("retrain result has no test accuracy in [0, 1]")
    files = obj.get("files")
    if not isinstance(files, dict) or not files or len(files) > MAX_EXPORT_FILES:
        raise CorruptRecord("retrain result has no list of exported files")
    for name, spec in files.items():
        if not (isinstance(name, str) and EXPORT_FILE_NAME.fullmatch(name) and isinstance(spec, dict)
                and isinstance(spec.get("sha256"), str) and _HEX64.fullmatch(spec["sha256"])
                and isinstance(spec.get("size"), int) and not isinstance(spec.get("size"), bool)
                and 0 <= spec["size"] <= MAX_PAYLOAD_BYTES):
            raise CorruptRecord(f"retrain result names a bad exported file {str(name)[:60]!r}")
    return obj

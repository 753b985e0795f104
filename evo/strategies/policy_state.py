"""The format of a learned strategy's policy version: plain JSON, arrays as base64 float32.

One version is everything a worker needs to sample from the policy and to advance it: the
controller's parameters, the optimizer's moments (Adam's, so that updates made by different
workers continue one optimization), the reward baseline, how many updates it holds, and the
most recent updates (child, reward, advantage, the version that proposed it) for ``evo
status`` and the consistency checks. It is read from a shared, untrusted store, so parsing
checks everything against what the run expects (strategy, decisions, every array's name and
shape, finite values, bounded lists) and raises :class:`PolicyError` (one line) otherwise.
Never pickle.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from dna.numbers import is_finite_number
from dna.strict_json import UntrustedJSONError, parse_json
from evo.errors import StoreFailure

SCHEMA = 1
KIND = "evo-policy"
MAX_POLICY_BYTES = 4 * 2**20   # as storage.policy reads them
MAX_RECENT = 64      # updates kept in a version for status and audits


class PolicyError(StoreFailure, ValueError):
    """A policy version that cannot be used (corrupt, foreign, another run's). One line."""


@dataclass(frozen=True)
class Update:
    """One child a version learned from."""

    child: str
    reward: float
    advantage: float
    sampled: int        # the version that proposed the child
    worker: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"child": self.child, "reward": self.reward, "advantage": self.advantage,
                "sampled": self.sampled, "worker": self.worker, "time": self.time}


@dataclass(frozen=True)
class PolicyVersion:
    """One immutable version of a learned policy.

    ``params`` and ``moments`` (Adam's first and second moments, ``m:NAME`` and ``v:NAME``)
    map array names to float32 arrays. ``steps``: optimizer steps so far. The baseline is an
    exponential moving average kept as numerator and denominator (unbiased from the first
    reward on, as NAS-Bench-201's REINFORCE keeps it). ``parent``/``parent_id``: the number
    and id of the version this one was made from (None for the first). The id tells two
    versions of one number apart: a writer that was slow enough for the number it meant to
    take to be created and pruned in between re-creates that number (see
    :mod:`evo.strategies.learned`); children name their parent by id, so such an orphan is
    recognisable.
    """

    strategy: str
    version: int
    parent: int | None
    decisions: tuple[int, ...]
    params: Mapping[str, np.ndarray]
    id: str = ""              # random, unique per version: a version number can be reused after a prune
    parent_id: str | None = None
    moments: Mapping[str, np.ndarray] = field(default_factory=dict)
    steps: int = 0
    updates: int = 0
    baseline_num: float = 0.0
    baseline_den: float = 0.0
    recent: tuple[Update, ...] = ()

    @property
    def baseline(self) -> float | None:
        """The reward baseline, or None before the first reward."""
        return self.baseline_num / self.baseline_den if self.baseline_den > 0 else None

    def with_baseline(self, reward: float, decay: float) -> "PolicyVersion":
        """This version with ``reward`` folded into the moving average (decay ``decay``)."""
        return replace(self, baseline_num=decay * self.baseline_num + (1 - decay) * reward,
                       baseline_den=decay * self.baseline_den + (1 - decay))

    def to_bytes(self) -> bytes:
        """The JSON bytes stored as ``policy/v{version}.json``."""
        return json.dumps({
            "schema": SCHEMA, "kind": KIND, "strategy": self.strategy, "version": self.version,
            "id": self.id, "parent": self.parent, "parent_id": self.parent_id, "decisions": list(self.decisions), "steps": self.steps,
            "updates": self.updates, "baseline_num": self.baseline_num, "baseline_den": self.baseline_den,
            "recent": [u.to_dict() for u in self.recent],
            "params": {k: _encode(a) for k, a in sorted(self.params.items())},
            "moments": {k: _encode(a) for k, a in sorted(self.moments.items())},
        }, separators=(",", ":")).encode()


def _encode(array: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(a.shape), "f32": base64.b64encode(a.tobytes()).decode("ascii")}


def _decode(obj: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(obj, dict) or set(obj) != {"shape", "f32"} or obj["shape"] != list(shape) \
            or not isinstance(obj["f32"], str):
        raise PolicyError(f"array {name!r} is not a float32 array of shape {shape}")
    try:
        raw = base64.b64decode(obj["f32"].encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise PolicyError(f"array {name!r} is not valid base64") from None
    if len(raw) != 4 * math.prod(shape):
        raise PolicyError(f"array {name!r} holds {len(raw)} bytes, not {4 * math.prod(shape)}")
    a = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    if not np.isfinite(a).all():
        raise PolicyError(f"array {name!r} has non-finite values")
    return a


def _number(d: dict, key: str, low: float = -math.inf, high: float = math.inf) -> float:
    v = d.get(key)
    if not is_finite_number(v) or not low <= v <= high:
        raise PolicyError(f"{key} must be a finite number in [{low}, {high}], got {v!r}"[:200])
    return float(v)


def _count(d: dict, key: str, high: int = 10**10) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < high:
        raise PolicyError(f"{key} must be an integer in 0..{high - 1}, got {v!r}"[:200])
    return v


def new_id() -> str:
    """A fresh version id."""
    return secrets.token_hex(16)


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def _update(obj: Any) -> Update:
    if not isinstance(obj, dict) or set(obj) != {"child", "reward", "advantage", "sampled", "worker", "time"}:
        raise PolicyError("recent updates must be objects with child, reward, advantage, sampled, worker, time")
    for key in ("child", "worker"):
        if not isinstance(obj[key], str) or not 0 < len(obj[key]) <= 200 or not obj[key].isprintable():
            raise PolicyError(f"recent update's {key} must be a short printable string")
    return Update(obj["child"], _number(obj, "reward"), _number(obj, "advantage"), _count(obj, "sampled"),
                  obj["worker"], _number(obj, "time", 0))


def parse_policy(data: bytes, *, strategy: str, decisions: tuple[int, ...],
                 shapes: Mapping[str, tuple[int, ...]], version: int) -> PolicyVersion:
    """The policy version in ``data`` (the object named for ``version``), checked against
    what this run expects; :class:`PolicyError` (one line) for anything else."""
    try:
        d = parse_json(data, "policy version", max_bytes=MAX_POLICY_BYTES)
    except UntrustedJSONError as exc:
        raise PolicyError(str(exc)) from None
    if not isinstance(d, dict) or d.get("kind") != KIND:
        raise PolicyError("not a policy version")
    if d.get("schema") != SCHEMA:
        raise PolicyError(f"unknown policy schema {d.get('schema')!r} (this evo reads {SCHEMA})"[:200])
    known = {"schema", "kind", "strategy", "version", "id", "parent", "parent_id", "decisions", "steps", "updates",
             "baseline_num", "baseline_den", "recent", "params", "moments"}
    if set(d) != known:
        raise PolicyError(f"policy version has keys {sorted(set(d) ^ known)} it should not or lacks"[:200])
    if d["strategy"] != strategy:
        raise PolicyError(f"a policy of strategy {str(d['strategy'])[:40]!r}, this run's is {strategy!r}")
    if d["decisions"] != list(decisions):
        raise PolicyError("its decisions are not this run's search space's")
    if _count(d, "version") != version:
        raise PolicyError(f"it says version {d['version']} but is stored as version {version}")
    parent = d["parent"]
    if parent is not None and (_count(d, "parent") >= version):
        raise PolicyError(f"its parent {parent} is not an earlier version")
    for key in ("id", "parent_id"):
        if not (key == "parent_id" and d[key] is None and parent is None) and not _is_token(d[key]):
            raise PolicyError(f"{key} must be a 32-digit hex token")
    recent = d["recent"]
    if not isinstance(recent, list) or len(recent) > MAX_RECENT:
        raise PolicyError(f"recent must be a list of at most {MAX_RECENT} updates")
    params, moments = d["params"], d["moments"]
    if not isinstance(params, dict) or set(params) != set(shapes):
        raise PolicyError(f"its parameters are not this controller's ({sorted(shapes)})"[:200])
    moment_names = {f"{m}:{k}" for k in shapes for m in "mv"}
    if not isinstance(moments, dict) or set(moments) not in (set(), moment_names):
        raise PolicyError("its optimizer moments are not this controller's")
    baseline_den = _number(d, "baseline_den", 0, 1)
    return PolicyVersion(
        strategy=strategy, version=version, parent=parent, id=d["id"], parent_id=d["parent_id"],
        decisions=tuple(decisions),
        params={k: _decode(params[k], k, shapes[k]) for k in shapes},
        moments={k: _decode(moments[k], k, shapes[k.split(":", 1)[1]]) for k in moments},
        steps=_count(d, "steps"), updates=_count(d, "updates"),
        baseline_num=_number(d, "baseline_num"), baseline_den=baseline_den,
        recent=tuple(_update(u) for u in recent))

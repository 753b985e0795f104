"""The format of a learned strategy's policy version, and of one intake record (a child taken
in on top of a version, not learned from yet): plain JSON, arrays as base64 float32.

One version is everything a worker needs to sample from the policy and to advance it: the
controller's parameters, the optimizer's moments (Adam's, so that updates made by different
workers continue one optimization), the reward baseline, how many updates it holds, and the
most recent updates (child, reward, advantage, the version that proposed it; at least the
whole minibatch the version learned from) for ``evo status`` and the consistency checks.
Versions written before intake records existed may also hold ``pending`` children (taken in,
not learned from yet); they are read, and learned from first in the next update.

An intake record (:class:`Intake`, ``policy/v{n}-{k}.json``) holds one child's recorded
choices, sampling log-probability and version, its reward, the worker and the time, and the
id of the version it was taken in on top of (so a record left on a number that was pruned
and made again is not mistaken for one of the new version's). It is read from a shared, untrusted store, so parsing
checks everything against what the run expects (strategy, decisions, every array's name and
shape, finite values, bounded lists) and raises :class:`PolicyError` (one line) otherwise.
Never pickle.

Bounds (:func:`check_bounds`; a version outside them is unusable, and a writer never creates
one): every parameter within +-``MAX_PARAM``; Adam's second moments in [0, ``MAX_MOMENT``]
and each first moment with ``m**2 <= 64 v`` (Adam's own invariant is ``m**2 <= 53 v`` for its
betas 0.9/0.999, so any update from a version in bounds moves each parameter by at most
8 learning rates); the baseline's denominator in [0, 1] and ``|numerator| <= MAX_REWARD *
denominator`` (so the baseline lies within the range fitness can have, ``storage``'s
``MAX_FITNESS``); rewards within ``MAX_REWARD``, advantages within twice that; ``parent``
at most ``MAX_VERSION_GAP`` below the version (a writer skips at most that many taken
numbers); at most ``MAX_BATCH - 1`` pending children, each with one choice in range per
decision, a log-probability in [-``MAX_LOGP``, 0] and a sampling version not above the
version; ``updates <= MAX_BATCH * version`` and ``steps <= 100 * updates`` (PPO's epochs are at most
100); update times not more than ``MAX_FUTURE_SECONDS`` past the reader's clock.
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
MAX_RECENT = 256     # updates kept in a version for status and audits: at least its whole minibatch
MAX_PARAM = 1e4            # |parameter|: far past where a softmax saturates
MAX_MOMENT = 1e30          # Adam's second moments (float32 holds up to 3.4e38)
MOMENT_RATIO = 64.0        # m**2 <= MOMENT_RATIO * v (+ MOMENT_FLOOR): Adam keeps m**2 <= 53 v
MOMENT_FLOOR = 1e-30
MAX_REWARD = 1e9           # as storage.population.MAX_FITNESS: |fitness| < 1e9
MAX_VERSION_GAP = 64       # a version is at most this many numbers above its parent
MAX_STEPS_PER_UPDATE = 100   # controller.ppo_epochs is 1..100
MAX_BATCH = 256            # controller.batch_size is 1..256: a version holds at most 255 pending children
MAX_LOGP = 1e4             # -log-probability of a recorded sample (40 decisions of float32 softmaxes stay far below)
MAX_FUTURE_SECONDS = 600.0   # an update stamped later than this past the reader's clock is refused
INTAKE_KIND = "evo-policy-intake"
MAX_INTAKE_BYTES = 64 * 2**10   # as storage.policy reads them


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
class Sample:
    """A child taken into the chain and not learned from yet: what its record says the
    policy did (``choices``, their log-probability ``logp`` under version ``sampled``) and
    its ``advantage`` (its reward less the baseline of the rewards before it)."""

    child: str
    choices: tuple[int, ...]
    logp: float
    sampled: int
    advantage: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"child": self.child, "choices": list(self.choices), "logp": self.logp, "sampled": self.sampled,
                "advantage": self.advantage}


@dataclass(frozen=True)
class Intake:
    """A child taken in on top of a version, waiting in that version's intake for the update
    that learns from it: what its record says the policy did (``choices``, their
    log-probability ``logp`` under version ``sampled``), its ``reward``, and who took it in
    when. Its advantage is taken when the update is made (against the baseline of the rewards
    before it, in slot order)."""

    child: str
    choices: tuple[int, ...]
    logp: float
    sampled: int
    reward: float
    worker: str
    time: float

    def to_bytes(self, strategy: str, version: int, slot: int, base_id: str) -> bytes:
        """The JSON bytes stored as slot ``slot`` of the intake of version ``version`` (whose
        id is ``base_id``)."""
        return json.dumps({
            "schema": SCHEMA, "kind": INTAKE_KIND, "strategy": strategy, "version": version, "slot": slot,
            "base_id": base_id, "child": self.child, "choices": list(self.choices), "logp": self.logp,
            "sampled": self.sampled, "reward": self.reward, "worker": self.worker, "time": self.time,
        }, separators=(",", ":")).encode()


def parse_intake(data: bytes, *, strategy: str, decisions: tuple[int, ...], version: int, slot: int,
                 base_id: str, now: float | None = None) -> Intake:
    """The intake record in ``data`` (the object named for slot ``slot`` of version
    ``version``), checked against the run and the version (``base_id``) it must have been taken
    in on, and within bounds; :class:`PolicyError` (one line) for anything else."""
    try:
        d = parse_json(data, "policy intake record", max_bytes=MAX_INTAKE_BYTES)
    except UntrustedJSONError as exc:
        raise PolicyError(str(exc)) from None
    known = {"schema", "kind", "strategy", "version", "slot", "base_id", "child", "choices", "logp", "sampled",
             "reward", "worker", "time"}
    if not isinstance(d, dict) or d.get("kind") != INTAKE_KIND:
        raise PolicyError("not a policy intake record")
    if d.get("schema") != SCHEMA or set(d) != known:
        raise PolicyError(f"intake record of unknown schema or keys (this evo reads schema {SCHEMA})")
    if d["strategy"] != strategy:
        raise PolicyError(f"an intake record of strategy {str(d['strategy'])[:40]!r}, this run's is {strategy!r}")
    if d["version"] != version or d["slot"] != slot:
        raise PolicyError(f"it says version {str(d['version'])[:20]} slot {str(d['slot'])[:20]} but is stored as "
                          f"version {version} slot {slot}")
    if d["base_id"] != base_id:
        raise PolicyError(f"it was taken in on another version {version} (a number made again after a prune)")
    for key in ("child", "worker"):
        if not isinstance(d[key], str) or not 0 < len(d[key]) <= 200 or not d[key].isprintable():
            raise PolicyError(f"its {key} must be a short printable string")
    choices = d["choices"]
    if not isinstance(choices, list) or len(choices) != len(decisions) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < n for c, n in zip(choices, decisions)):
        raise PolicyError(f"child {d['child'][:40]!r}'s choices are not one per decision, in range")
    high = math.inf if now is None else now + MAX_FUTURE_SECONDS
    return Intake(d["child"], tuple(choices), _number(d, "logp", -MAX_LOGP, 0), _count(d, "sampled", version + 1),
                  _number(d, "reward", -MAX_REWARD, MAX_REWARD), d["worker"], _number(d, "time", 0, high))


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
    pending: tuple[Sample, ...] = ()

    @property
    def baseline(self) -> float | None:
        """The reward baseline: the moving average of the rewards taken in so far (None before
        the first). A child's advantage is taken against it before its own reward is folded in."""
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
            "recent": [u.to_dict() for u in self.recent], "pending": [p.to_dict() for p in self.pending],
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


def _update(obj: Any, version: int, now: float | None) -> Update:
    if not isinstance(obj, dict) or set(obj) != {"child", "reward", "advantage", "sampled", "worker", "time"}:
        raise PolicyError("recent updates must be objects with child, reward, advantage, sampled, worker, time")
    for key in ("child", "worker"):
        if not isinstance(obj[key], str) or not 0 < len(obj[key]) <= 200 or not obj[key].isprintable():
            raise PolicyError(f"recent update's {key} must be a short printable string")
    high = math.inf if now is None else now + MAX_FUTURE_SECONDS
    return Update(obj["child"], _number(obj, "reward", -MAX_REWARD, MAX_REWARD),
                  _number(obj, "advantage", -2 * MAX_REWARD, 2 * MAX_REWARD), _count(obj, "sampled", version + 1),
                  obj["worker"], _number(obj, "time", 0, high))


def _sample(obj: Any, version: int, decisions: tuple[int, ...]) -> Sample:
    if not isinstance(obj, dict) or set(obj) != {"child", "choices", "logp", "sampled", "advantage"}:
        raise PolicyError("pending children must be objects with child, choices, logp, sampled, advantage")
    child, choices = obj["child"], obj["choices"]
    if not isinstance(child, str) or not 0 < len(child) <= 200 or not child.isprintable():
        raise PolicyError("a pending child's id must be a short printable string")
    if not isinstance(choices, list) or len(choices) != len(decisions) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < d for c, d in zip(choices, decisions)):
        raise PolicyError(f"pending child {child[:40]!r}'s choices are not one per decision, in range")
    return Sample(child, tuple(choices), _number(obj, "logp", -MAX_LOGP, 0), _count(obj, "sampled", version + 1),
                  _number(obj, "advantage", -2 * MAX_REWARD, 2 * MAX_REWARD))


def check_bounds(policy: PolicyVersion, now: float | None = None) -> None:
    """:class:`PolicyError` (one line) unless ``policy`` is within this module's bounds (see
    its docstring): what a reader requires of a version, and a writer of its own update
    before it creates it. ``now``: the reader's clock, for the update times."""
    for name, a in policy.params.items():
        if not np.isfinite(a).all() or (a.size and float(np.abs(a).max()) > MAX_PARAM):
            raise PolicyError(f"parameter {name!r} is non-finite or beyond +-{MAX_PARAM:g}")
    for name, a in policy.moments.items():
        if not np.isfinite(a).all():
            raise PolicyError(f"moment {name!r} has non-finite values")
        if name.startswith("v:") and a.size and not (float(a.min()) >= 0 and float(a.max()) <= MAX_MOMENT):
            raise PolicyError(f"moment {name!r} is outside [0, {MAX_MOMENT:g}]")
        if name.startswith("m:"):
            v = policy.moments.get("v:" + name[2:])
            m = a.astype(np.float64)
            if v is None or not (m * m <= MOMENT_RATIO * v.astype(np.float64) + MOMENT_FLOOR).all():
                raise PolicyError(f"moment {name!r} is out of proportion to its second moment")
    num, den = policy.baseline_num, policy.baseline_den
    if not (is_finite_number(num) and is_finite_number(den) and 0 <= den <= 1 and abs(num) <= MAX_REWARD * den):
        raise PolicyError(f"reward baseline {num!r}/{den!r} is outside the range of fitness (+-{MAX_REWARD:g})"[:200])
    if policy.parent is not None and not policy.version - MAX_VERSION_GAP <= policy.parent < policy.version:
        raise PolicyError(f"its parent {policy.parent} is not one of the {MAX_VERSION_GAP} versions before it")
    if not 0 <= policy.updates <= MAX_BATCH * policy.version or not 0 <= policy.steps <= MAX_STEPS_PER_UPDATE * policy.updates:
        raise PolicyError(f"{policy.updates} updates and {policy.steps} steps are implausible for version "
                          f"{policy.version}")
    if len(policy.pending) >= MAX_BATCH:
        raise PolicyError(f"it holds {len(policy.pending)} pending children (at most {MAX_BATCH - 1})")
    for p in policy.pending:
        if not (math.isfinite(p.logp) and -MAX_LOGP <= p.logp <= 0 and abs(p.advantage) <= 2 * MAX_REWARD
                and 0 <= p.sampled <= policy.version and len(p.choices) == len(policy.decisions)
                and all(0 <= c < d for c, d in zip(p.choices, policy.decisions))):
            raise PolicyError(f"its pending child {p.child[:40]!r} is out of bounds (choices, log-probability, "
                              "advantage or version)")
    high = math.inf if now is None else now + MAX_FUTURE_SECONDS
    for u in policy.recent:
        if not (abs(u.reward) <= MAX_REWARD and abs(u.advantage) <= 2 * MAX_REWARD and 0 <= u.time <= high
                and 0 <= u.sampled <= policy.version):
            raise PolicyError(f"its update for {u.child[:40]!r} is out of bounds (reward, advantage, time "
                              "or version)")


def parse_policy(data: bytes, *, strategy: str, decisions: tuple[int, ...],
                 shapes: Mapping[str, tuple[int, ...]], version: int, now: float | None = None) -> PolicyVersion:
    """The policy version in ``data`` (the object named for ``version``), checked against
    what this run expects and within :func:`check_bounds` (``now``: the reader's clock, for
    update times); :class:`PolicyError` (one line) for anything else."""
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
    keys = set(d) - {"pending"}   # optional: versions written before minibatches hold none
    if keys != known:
        raise PolicyError(f"policy version has keys {sorted(keys ^ known)} it should not or lacks"[:200])
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
    recent, pending = d["recent"], d.get("pending", [])
    if not isinstance(recent, list) or len(recent) > MAX_RECENT:
        raise PolicyError(f"recent must be a list of at most {MAX_RECENT} updates")
    if not isinstance(pending, list) or len(pending) >= MAX_BATCH:
        raise PolicyError(f"pending must be a list of at most {MAX_BATCH - 1} children")
    params, moments = d["params"], d["moments"]
    if not isinstance(params, dict) or set(params) != set(shapes):
        raise PolicyError(f"its parameters are not this controller's ({sorted(shapes)})"[:200])
    moment_names = {f"{m}:{k}" for k in shapes for m in "mv"}
    if not isinstance(moments, dict) or set(moments) not in (set(), moment_names):
        raise PolicyError("its optimizer moments are not this controller's")
    baseline_den = _number(d, "baseline_den", 0, 1)
    policy = PolicyVersion(
        strategy=strategy, version=version, parent=parent, id=d["id"], parent_id=d["parent_id"],
        decisions=tuple(decisions),
        params={k: _decode(params[k], k, shapes[k]) for k in shapes},
        moments={k: _decode(moments[k], k, shapes[k.split(":", 1)[1]]) for k in moments},
        steps=_count(d, "steps"), updates=_count(d, "updates"),
        baseline_num=_number(d, "baseline_num"), baseline_den=baseline_den,
        recent=tuple(_update(u, version, now) for u in recent),
        pending=tuple(_sample(p, version, tuple(decisions)) for p in pending))
    check_bounds(policy, now)
    return policy

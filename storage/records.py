"""Names, ids and records of a population directory (see docs/layout.md). Pure, no I/O.

Everything parsed here comes from a shared store and is untrusted: parsers check types,
sizes and formats strictly and raise :class:`CorruptRecord` with a one-line reason.
"""

from __future__ import annotations

import calendar
import functools
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from dna.genome import content_hash_of
from dna.numbers import is_finite_number
from dna.strict_json import MAX_DEPTH, UntrustedJSONError, parse_json

from .backend import MAX_RECORD_BYTES

COMMIT_SCHEMA = 1
MAX_CONFIG_BYTES = 2**20
MAX_HEARTBEAT_BYTES = 2**16
# Weights are read with the size their commit states as the bound; a commit may not state
# more than this (far above any network the DNA bounds allow), so no commit can make a
# reader allocate without limit.
MAX_PAYLOAD_BYTES = 8 * 2**30

ALIVE, PAYLOAD, HISTORY, QUARANTINE, WORKERS, KEPT, STATE = (
    "alive", "payload", "history", "quarantine", "workers", "kept", "state")
LAUNCHES = "launches"  # launchers' records of scheduler jobs (evo launch slurm), read by evo status
CONFIG_KEY = "config.json"
DIRECTORIES = (ALIVE, PAYLOAD, HISTORY, QUARANTINE, WORKERS, KEPT, STATE, LAUNCHES)

ID_PATTERN = r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}"
_ID = re.compile(ID_PATTERN)
_FITNESS = r"-?\d{1,9}\.\d{6}"
_ALIVE_NAME = re.compile(rf"({ID_PATTERN})~({_FITNESS})\.json")  # also the form of kept/ names
_PAYLOAD_NAME = re.compile(rf"({ID_PATTERN})\.([0-9a-f]{{16}})\.safetensors")
_RECORD_NAME = re.compile(rf"({ID_PATTERN})\.json")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@:+=-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class CorruptRecord(ValueError):
    """A stored record that does not parse or check out; the message is the reason."""


@dataclass(frozen=True)
class IndividualInfo:
    """What a listing of ``alive/`` tells about an individual, without reading anything.

    ``fitness`` is the committed fitness rounded to 6 decimals (as in the object's name);
    ``birth`` is unix seconds parsed from the id; ``key`` is the commit object's key.
    """

    id: str
    fitness: float
    birth: float
    key: str


@dataclass(frozen=True)
class Individual:
    """A whole, verified individual: its DNA (as a JSON object), provenance and weights."""

    id: str
    parent: str | None
    mutation: str
    dna: dict[str, Any]
    dna_hash: str
    fitness: float
    birth: float
    worker: str
    metrics: dict[str, Any] = field(default_factory=dict)
    weights: bytes = b""


# ----- ids and names -----

def new_id(now: float) -> tuple[str, float]:
    """A fresh id for an individual born at ``now`` and its birth time parsed back from it.

    Ids sort by birth (to the microsecond); 32 random bits separate births in the same
    microsecond. The randomness is from the OS on purpose: workers started with the same
    seed must still never collide.
    """
    stamp = datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    ident = f"{stamp}Z-{secrets.token_hex(4)}"
    return ident, birth_of(ident)


def is_id(text: Any) -> bool:
    """True if ``text`` is an individual's id: its form, and a date and time of day that
    exist (month 13, February 30 or 25:00 are not ids). Total: never raises."""
    return isinstance(text, str) and _ID.fullmatch(text) is not None and _real_time(text)


def _real_time(ident: str) -> bool:
    """True if the date and time of day an id (of the right form) states exist."""
    return (int(ident[9:11]) < 24 and int(ident[11:13]) < 60 and int(ident[13:15]) < 60
            and _day_exists(ident[0:8]))


@functools.lru_cache(maxsize=4096)
def _day_exists(ymd: str) -> bool:
    year, month, day = int(ymd[0:4]), int(ymd[4:6]), int(ymd[6:8])
    return 1 <= year and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def check_id(text: Any) -> str:
    """``text`` if it is an id, else ValueError naming it."""
    if not is_id(text):
        raise ValueError(f"not an individual id: {str(text)[:80]!r}")
    return text


def birth_of(ident: str) -> float:
    """Unix time of birth encoded in an id (microsecond precision); ValueError for a date
    or time of day that does not exist (e.g. month 13): see :func:`is_id`."""
    if not _real_time(ident):
        raise ValueError(f"not an individual id (no such date or time): {ident[:40]!r}")
    # calendar.timegm is linear in the time of day, so only the date needs the calendar:
    # it is looked up once per day (a listing of thousands of ids spans a few days).
    t = (_day_start(ident[0:8]) + int(ident[9:11]) * 3600 + int(ident[11:13]) * 60
         + int(ident[13:15]))
    return t + int(ident[16:22]) / 1e6


@functools.lru_cache(maxsize=4096)
def _day_start(ymd: str) -> int:
    """Unix seconds at 00:00 UTC of the date ``YYYYMMDD`` (ValueError if there is none)."""
    return calendar.timegm((int(ymd[0:4]), int(ymd[4:6]), int(ymd[6:8]), 0, 0, 0, 0, 0, 0))


def fitness_text(fitness: float) -> str:
    """The fitness as it appears in object names (6 decimals)."""
    return f"{fitness:.6f}"


def alive_key(ident: str, fitness: float) -> str:
    """Key of an individual's commit object (its fitness is in the name)."""
    return f"{ALIVE}/{ident}~{fitness_text(fitness)}.json"


def kept_key(ident: str, fitness: float) -> str:
    """Key of the marker that keeps a dead individual's weights."""
    return f"{KEPT}/{ident}~{fitness_text(fitness)}.json"


def payload_key(ident: str, nonce: str) -> str:
    """Key of an individual's weights; the nonce makes it unique to one publish attempt."""
    return f"{PAYLOAD}/{ident}.{nonce}.safetensors"


def history_key(ident: str) -> str:
    """Key of an individual's kill marker and history record."""
    return f"{HISTORY}/{ident}.json"


def quarantine_key(ident: str) -> str:
    """Key of an individual's quarantine record."""
    return f"{QUARANTINE}/{ident}.json"


def parse_alive_name(name: str) -> IndividualInfo | None:
    """The info an ``alive/`` name carries, or None for any other name."""
    m = _ALIVE_NAME.fullmatch(name)
    if m is None:
        return None
    ident = m.group(1)
    try:
        birth = birth_of(ident)
    except ValueError:  # e.g. month 13
        return None
    return IndividualInfo(ident, float(m.group(2)), birth, f"{ALIVE}/{name}")


def parse_kept_name(name: str) -> IndividualInfo | None:
    """The info a ``kept/`` name carries (``key`` under ``kept/``), or None."""
    info = parse_alive_name(name)
    return None if info is None else IndividualInfo(info.id, info.fitness, info.birth, f"{KEPT}/{name}")


def parse_payload_name(name: str) -> str | None:
    """The id a ``payload/`` name belongs to, or None for any other name."""
    m = _PAYLOAD_NAME.fullmatch(name)
    return m.group(1) if m and _real_time(m.group(1)) else None


def parse_record_name(name: str) -> str | None:
    """The id of a ``history/`` or ``quarantine/`` name (``{id}.json``), or None (also for a
    name of that form whose date does not exist: see :func:`is_id`)."""
    m = _RECORD_NAME.fullmatch(name)
    return m.group(1) if m and _real_time(m.group(1)) else None


def looks_like_record_name(name: str) -> bool:
    """True if ``name`` has the form ``{id}.json`` whether or not its date exists: a name in
    ``history/`` or ``quarantine/`` that has it but is no record (month 13) is a broken entry,
    not a stray file."""
    return _RECORD_NAME.fullmatch(name) is not None


def id_of_key(key: str) -> str | None:
    """The id of the individual an entry of ``alive/``, ``kept/``, ``payload/``, ``history/``
    or ``quarantine/`` belongs to, from its name alone; None for any other key."""
    dirname, _, name = key.rpartition("/")
    if dirname in (ALIVE, KEPT):
        info = parse_alive_name(name)
        return info.id if info else None
    if dirname == PAYLOAD:
        return parse_payload_name(name)
    if dirname in (HISTORY, QUARANTINE):
        return parse_record_name(name)
    if "#" in key:   # a record inside a segment: segments/{name}#{id}
        ident = key.rsplit("#", 1)[1]
        return ident if is_id(ident) else None
    return None


def is_safe_name(text: Any) -> bool:
    """True if ``text`` may name a worker or a marker (and so an object)."""
    return isinstance(text, str) and _SAFE_NAME.fullmatch(text) is not None


def check_safe_name(text: Any, what: str) -> str:
    """A worker id or marker name usable as an object name; ValueError otherwise."""
    if not is_safe_name(text):
        raise ValueError(f"bad {what} {str(text)[:80]!r}: use 1-128 of [A-Za-z0-9_.@:+=-], "
                         "not starting with '.' or '-'")
    return text


# ----- JSON -----

def dumps(obj: Any) -> bytes:
    """Canonical compact JSON bytes; NaN/Infinity refused (ValueError)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def loads_many(lines: list[bytes], what: str) -> list[Any]:
    """Parse many untrusted JSON lines (each already bounded) in one call, as :func:`loads`
    would one by one; CorruptRecord if any does not parse (or they do not make one value
    each: a line may not open or close what another started)."""
    joined = b"[" + b",".join(lines) + b"]"
    try:
        values = parse_json(joined, what, max_bytes=len(joined), max_depth=MAX_DEPTH + 1)
    except UntrustedJSONError as exc:
        raise CorruptRecord(str(exc)) from None
    if not isinstance(values, list) or len(values) != len(lines):
        raise CorruptRecord(f"{what}s are not one JSON value each")
    return values


def loads(raw: bytes, what: str, max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """Parse untrusted JSON bytes with :func:`dna.strict_json.parse_json` (bounded in size,
    depth and numbers); CorruptRecord('<what> is ...: reason') on failure."""
    try:
        return parse_json(raw, what, max_bytes=max_bytes)
    except UntrustedJSONError as exc:
        raise CorruptRecord(str(exc)) from None


def dna_hash(dna: dict[str, Any]) -> str:
    """SHA-256 of the DNA's canonical JSON without ``mutation`` (== ``DNA.content_hash()``)."""
    return content_hash_of(dna)


# ----- the commit object -----

_COMMIT_FIELDS: dict[str, tuple[type, ...]] = {
    "schema": (int,), "id": (str,), "parent": (str, type(None)), "mutation": (str,),
    "dna": (dict,), "dna_hash": (str,), "fitness": (int, float), "birth": (int, float),
    "worker": (str,), "metrics": (dict,), "payload": (str,), "payload_sha256": (str,),
    "payload_size": (int,),
}
HISTORY_EXTRA = ("death", "killer", "reason")
_FIELDS_WITH_DNA = tuple(_COMMIT_FIELDS.items())
_FIELDS_WITHOUT_DNA = tuple((k, v) for k, v in _COMMIT_FIELDS.items() if k != "dna")
_ALLOWED: dict[tuple[str, ...], frozenset[str]] = {}
_MISSING = object()


def _finite(value: Any) -> bool:
    return is_finite_number(value)


# What a commit's ``metrics`` may hold (the workers write a few dozen numbers and short
# strings, and a controller's choices as a list of ints): at most MAX_METRICS keys of at most
# MAX_METRIC_KEY characters; each value null, a bool, a finite number, a string of at most
# MAX_METRIC_TEXT characters, or a list / one-level object of such scalars; at most
# MAX_METRIC_SCALARS scalars and MAX_METRIC_CHARS characters of keys and strings in all. So
# no record can make a reader of thousands of them hold more than a few KB each.
MAX_METRICS = 64
MAX_METRIC_KEY = 64
MAX_METRIC_TEXT = 1024
MAX_METRIC_SCALARS = 256
MAX_METRIC_CHARS = 8192


def _scalar_problem(value: Any) -> str | None:
    cls = value.__class__
    if value is None or cls is bool:
        return None
    if cls is int or cls is float:
        return None if is_finite_number(value) else "is not a finite number"
    if cls is str:
        return None if len(value) <= MAX_METRIC_TEXT else f"is a string over {MAX_METRIC_TEXT} characters"
    return "is not null, a bool, a finite number or a short string"


def metrics_problem(metrics: Any) -> str | None:
    """Why ``metrics`` is not within the bounds a commit's metrics must keep (see the
    constants above), or None if it is. Total: never raises."""
    if metrics.__class__ is not dict:
        return "metrics is not a JSON object"
    if len(metrics) > MAX_METRICS:
        return f"metrics has more than {MAX_METRICS} keys"
    scalars = chars = 0
    for key, value in metrics.items():
        if key.__class__ is not str or len(key) > MAX_METRIC_KEY:
            return f"metrics has a key over {MAX_METRIC_KEY} characters"
        chars += len(key)
        cls = value.__class__
        if (cls is list or cls is dict) and len(value) > MAX_METRIC_SCALARS:
            return f"metrics {key[:40]!r} holds more than {MAX_METRIC_SCALARS} values"
        items = value if cls is list else value.values() if cls is dict else (value,)
        if cls is dict and any(k.__class__ is not str or len(k) > MAX_METRIC_KEY for k in value):
            return f"metrics {key[:40]!r} has a key over {MAX_METRIC_KEY} characters"
        for item in items:
            problem = _scalar_problem(item)
            if problem:
                return f"metrics {key[:40]!r} {problem}"
            if item.__class__ is str:
                chars += len(item)
        scalars += len(value) if cls is list or cls is dict else 1
        if cls is dict:
            chars += sum(len(k) for k in value)
        if scalars > MAX_METRIC_SCALARS or chars > MAX_METRIC_CHARS:
            return (f"metrics hold more than {MAX_METRIC_SCALARS} values or {MAX_METRIC_CHARS} "
                    "characters")
    return None


def bounded_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` made to fit :func:`metrics_problem`'s bounds where it can be without loss
    of meaning (over-long strings shortened, with "..."); ValueError naming the problem if it
    still does not fit (what a publisher calls before it writes a commit)."""
    def cut(v: Any) -> Any:
        return v[:MAX_METRIC_TEXT - 3] + "..." if isinstance(v, str) and len(v) > MAX_METRIC_TEXT else v
    fitted = {k: [cut(x) for x in v] if isinstance(v, list)
              else {kk: cut(x) for kk, x in v.items()} if isinstance(v, dict) else cut(v)
              for k, v in metrics.items()}
    problem = metrics_problem(fitted)
    if problem:
        raise ValueError(problem)
    return fitted


def check_commit(obj: Any, info: IndividualInfo | None = None,
                 extra: tuple[str, ...] = (), *, with_dna: bool = True) -> dict[str, Any]:
    """Return a commit object (from ``alive/``) after checking it field by field.

    With ``info`` (from the object's name) the id and fitness must agree with the name.
    ``extra`` names fields allowed besides the commit's (history records add some).
    ``with_dna=False``: everything but the DNA is checked, and the result has no ``dna``
    (a reader that never uses the DNA need not pay for checking it; nothing unchecked is
    passed on). Raises CorruptRecord naming the first problem.
    """
    if not isinstance(obj, dict):
        raise CorruptRecord("commit is not a JSON object")
    schema = obj.get("schema")
    if schema != COMMIT_SCHEMA or isinstance(schema, bool):
        raise CorruptRecord(f"unknown commit schema {repr(schema)[:40]} (this evo reads {COMMIT_SCHEMA})")
    allowed = _ALLOWED.get(extra) or _ALLOWED.setdefault(extra, frozenset(_COMMIT_FIELDS) | frozenset(extra))
    if not obj.keys() <= allowed:
        unknown = set(obj) - allowed
        raise CorruptRecord(f"commit has unknown field(s): {', '.join(sorted(unknown))[:120]}")
    if not with_dna and "dna" in obj:
        obj = {k: v for k, v in obj.items() if k != "dna"}
    for name, types in (_FIELDS_WITH_DNA if with_dna else _FIELDS_WITHOUT_DNA):
        value = obj.get(name, _MISSING)
        if value.__class__ not in types:   # exact types: bool (an int subclass) never passes
            if value is _MISSING:
                raise CorruptRecord(f"commit is missing field {name!r}")
            if isinstance(value, bool) or not isinstance(value, types):
                raise CorruptRecord(f"commit field {name!r} has the wrong type ({type(value).__name__})")
    ident = obj["id"]
    if not is_id(ident):
        raise CorruptRecord(f"commit has a malformed id {ident[:60]!r}")
    if obj["parent"] is not None and not is_id(obj["parent"]):
        raise CorruptRecord(f"commit has a malformed parent id {obj['parent'][:60]!r}")
    for name in ("fitness", "birth"):
        if not _finite(obj[name]):
            raise CorruptRecord(f"commit field {name!r} is not a finite number")
    if info is not None:
        if ident != info.id:
            raise CorruptRecord(f"commit id {ident} does not match its name ({info.id})")
        if fitness_text(obj["fitness"]) != fitness_text(info.fitness):
            raise CorruptRecord(f"commit fitness {obj['fitness']!r} does not match its name")
    if not _HEX64.fullmatch(obj["dna_hash"]) or not _HEX64.fullmatch(obj["payload_sha256"]):
        raise CorruptRecord("commit has a malformed sha256")
    if not 0 <= obj["payload_size"] <= MAX_PAYLOAD_BYTES:
        raise CorruptRecord("commit has an impossible payload size")
    if parse_payload_name(obj["payload"].removeprefix(PAYLOAD + "/")) != ident \
            or not obj["payload"].startswith(PAYLOAD + "/"):
        raise CorruptRecord(f"commit names a bad payload key {obj['payload'][:80]!r}")
    if len(obj["mutation"]) > 64 or len(obj["worker"]) > 256:
        raise CorruptRecord("commit has an over-long mutation or worker field")
    problem = metrics_problem(obj["metrics"])
    if problem:
        raise CorruptRecord(f"commit {problem}")
    if with_dna and obj["dna_hash"] != dna_hash(obj["dna"]):
        raise CorruptRecord("dna_hash does not match the DNA")
    return obj


# The fast path of check_history for a record without its DNA (a history segment's line):
# one key-set comparison, exact types, and one regex over the id, parent, digests and
# payload key. Anything it does not accept goes through the full checks, which name the
# problem; so it decides nothing the full checks would decide otherwise.
_HEAD_KEYS = frozenset(_COMMIT_FIELDS) - {"dna"} | frozenset(HISTORY_EXTRA)
_HEAD_STRINGS = re.compile(rf"({ID_PATTERN})\n{ID_PATTERN}\n[0-9a-f]{{64}}\n[0-9a-f]{{64}}\n"
                           rf"{PAYLOAD}/\1\.[0-9a-f]{{16}}\.safetensors")
_NO_PARENT = "00000000T000000.000000Z-00000000"   # stands for None in that regex's input


def _plainly_valid_head(obj: Any, ident: str | None) -> bool:
    if obj.__class__ is not dict or obj.keys() != _HEAD_KEYS:
        return False
    parent = obj["parent"]
    fitness, birth, death = obj["fitness"], obj["birth"], obj["death"]
    mutation, worker, killer, reason = obj["mutation"], obj["worker"], obj["killer"], obj["reason"]
    strings = (obj["id"], _NO_PARENT if parent is None else parent, obj["dna_hash"],
               obj["payload_sha256"], obj["payload"], mutation, worker, killer, reason)
    if any(v.__class__ is not str for v in strings):
        return False
    size = obj["payload_size"]
    return (obj["schema"].__class__ is int and obj["schema"] == COMMIT_SCHEMA
            and metrics_problem(obj["metrics"]) is None and size.__class__ is int and 0 <= size <= MAX_PAYLOAD_BYTES
            and is_finite_number(fitness) and is_finite_number(birth) and is_finite_number(death)
            and len(mutation) <= 64 and len(worker) <= 256 and len(killer) <= 256 and len(reason) <= 64
            and (ident is None or obj["id"] == ident)
            and _HEAD_STRINGS.fullmatch("\n".join(strings[:5])) is not None
            and _real_time(obj["id"]) and (parent is None or _real_time(parent)))


def check_history(obj: Any, ident: str | None = None, *, with_dna: bool = True) -> dict[str, Any]:
    """Return a history record after checking it like a commit plus its death fields.

    With ``ident`` (from the record's name) the record must be that individual's.
    ``with_dna=False``: as in :func:`check_commit` (no ``dna`` in the result).
    Raises CorruptRecord naming the first problem. (The DNA is checked by the caller, who
    knows the run's bounds.)
    """
    if not with_dna and _plainly_valid_head(obj, ident):
        return obj
    if not isinstance(obj, dict):
        raise CorruptRecord("history record is not a JSON object")
    rec = check_commit(obj, extra=HISTORY_EXTRA, with_dna=with_dna)
    if ident is not None and rec["id"] != ident:
        raise CorruptRecord(f"history record of {rec['id']} is stored under {ident}")
    if not _finite(rec.get("death")):
        raise CorruptRecord("history record has no finite death time")
    if not isinstance(rec.get("killer"), str) or not isinstance(rec.get("reason"), str) \
            or len(rec["killer"]) > 256 or len(rec["reason"]) > 64:
        raise CorruptRecord("history record has a bad killer or reason")
    return rec


_SAME_FIELDS = tuple(k for k in _COMMIT_FIELDS if k not in ("dna", "schema"))


def same_individual(record: dict[str, Any], commit: dict[str, Any]) -> bool:
    """True if a (checked) history record holds this very (checked) commit, as a kill writes
    it (the commit plus its death): every field but the DNA (which either may lack) equal."""
    return all(record.get(k) == commit.get(k) for k in _SAME_FIELDS)


def individual_from(commit: dict[str, Any], weights: bytes) -> Individual:
    """The :class:`Individual` of a checked commit object and its verified weights."""
    return Individual(
        id=commit["id"], parent=commit["parent"], mutation=commit["mutation"],
        dna=commit["dna"], dna_hash=commit["dna_hash"], fitness=float(commit["fitness"]),
        birth=float(commit["birth"]), worker=commit["worker"], metrics=commit["metrics"],
        weights=weights)

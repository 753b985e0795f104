"""The records of a run besides its individuals (docs/layout.md): workers' heartbeats,
launchers' records, the ``state/`` markers and the seal of ``config.json``. Pure, no I/O.

Everything here comes from a shared store and is untrusted. A record is either whole and
within bounds, or :class:`~storage.records.CorruptRecord` with a one-line reason:

- every time is a finite number no earlier than :data:`EARLIEST_TIME` and no later than the
  reader's clock plus :data:`MAX_CLOCK_SKEW` (a heartbeat dated in the future is foreign,
  never a worker that stays active forever);
- every count is an integer in ``[0, MAX_COUNT]``, every other number finite and bounded,
  every string bounded (so no status column shows a 300-digit number);
- a record's own name (worker id, launch name) is the one its file has.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from dna.numbers import is_finite_number

from .records import STATE, CorruptRecord, is_safe_name

# A reader accepts times this far ahead of its own clock (hosts' clocks differ a little).
MAX_CLOCK_SKEW = 300.0
EARLIEST_TIME = 946_684_800.0          # 2000-01-01: no record of evo is older
LATEST_TIME = 4_102_444_800.0          # 2100-01-01: a bound for times no reader compares with now
MAX_COUNT = 10**12                     # children, kills, races, failures of one worker
MAX_FITNESS = 1e9                      # |fitness| (an alive/ name holds at most 9 digits)
MAX_PID = 2**32
MAX_INTERVAL = 3600.0                  # a heartbeat interval (WorkerOptions allows (0, 3600])
MAX_TEXT = 4096                        # characters of a string field (host, log, reason, ...)
MAX_SCHEDULER_ITEMS = 16
MAX_SCHEDULER_TEXT = 128               # scheduler_identity writes at most 128 characters a value
MAX_LAUNCH_TASKS = 10**6
MAX_COMMAND_WORDS = 1024

# The seal of config.json: its SHA-256, recorded by `evo init` (create-once; `evo init
# --force-new-config` over a missing config.json rewrites it).
CONFIG_SEAL = "config.sha256"
CONFIG_SEAL_KEY = f"{STATE}/{CONFIG_SEAL}"
MAX_SEAL_BYTES = 4096
SEEDED_MARK = "selection_started"
_SEED_MARK = re.compile(r"seed-\d{6}")
_HEX64 = re.compile(r"[0-9a-f]{64}")

_HEARTBEAT_COUNTS = ("individuals", "kills", "race_losses", "failures", "step_errors")
_HEARTBEAT_TEXTS = ("worker", "host", "state", "device", "log", "stopped_by", "reason")


def config_digest(text: str) -> str:
    """SHA-256 (hex) of ``config.json``'s bytes (UTF-8 of ``text``)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal_record(text: str, now: float) -> dict[str, Any]:
    """The record ``state/config.sha256`` holds for ``config.json`` = ``text``."""
    return {"schema": 1, "sha256": config_digest(text), "size": len(text.encode("utf-8")), "time": now}


def check_seal(obj: Any) -> str:
    """The SHA-256 a seal record states; CorruptRecord if it is not one."""
    if not isinstance(obj, dict) or obj.get("schema") != 1:
        raise CorruptRecord(f"{CONFIG_SEAL_KEY} is not a config seal (schema 1)")
    digest = obj.get("sha256")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise CorruptRecord(f"{CONFIG_SEAL_KEY} holds no SHA-256 (64 lowercase hex digits)")
    return digest


def is_mark_name(name: str) -> bool:
    """True if ``state/{name}`` is a name evo writes: ``selection_started``, ``seed-NNNNNN``
    (a seeding slot) or the config seal."""
    return name in (SEEDED_MARK, CONFIG_SEAL) or _SEED_MARK.fullmatch(name) is not None


def check_time(value: Any, what: str, now: float) -> float:
    """``value`` as a time: finite, >= EARLIEST_TIME, <= ``now`` + MAX_CLOCK_SKEW (``now``:
    the reader's clock); CorruptRecord naming ``what`` otherwise."""
    if not is_finite_number(value):
        raise CorruptRecord(f"{what} is not a finite number")
    value = float(value)
    if value < EARLIEST_TIME:
        raise CorruptRecord(f"{what} is dated before 2000")
    if value > now + MAX_CLOCK_SKEW:
        raise CorruptRecord(f"{what} is dated {_seconds(value - now)} in the future "
                            f"(more than {MAX_CLOCK_SKEW:.0f} s of clock skew)")
    return value


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 1e7 else "more than 100 days"


def _count(value: Any, what: str, most: int = MAX_COUNT) -> None:
    if value is None:
        return
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most):
        raise CorruptRecord(f"{what} is not a whole number in 0..{most}")


def _number(value: Any, what: str, low: float, high: float) -> None:
    if value is None:
        return
    if not (is_finite_number(value) and low <= value <= high):
        raise CorruptRecord(f"{what} is not a number in [{low:g}, {high:g}]")


def _text(value: Any, what: str) -> None:
    if value is not None and not (isinstance(value, str) and len(value) <= MAX_TEXT):
        raise CorruptRecord(f"{what} is not a string of at most {MAX_TEXT} characters")


def _name_of(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return name[:-len(".json")] if name.endswith(".json") else name


def check_heartbeat(key: str, beat: Any, now: float) -> dict[str, Any]:
    """The heartbeat at ``key`` (``workers/{worker}.json``), checked against the reader's
    clock ``now``: ``worker`` is the file's name, ``time`` within the window, counts and
    numbers bounded, strings bounded (the fields :class:`evo.search.worker.Worker` writes;
    others are left as they are, within the heartbeat's 64 KiB). Returns it; CorruptRecord
    otherwise."""
    if not isinstance(beat, dict):
        raise CorruptRecord("heartbeat is not a JSON object")
    worker = beat.get("worker")
    if not is_safe_name(worker) or worker != _name_of(key):
        raise CorruptRecord("heartbeat's worker is not the one its name says")
    check_time(beat.get("time"), "heartbeat", now)
    info = beat.get("info", {})
    if not isinstance(info, dict):
        raise CorruptRecord("heartbeat's info is not a JSON object")
    # times of the worker's own clock (tests give it a fake one): bounded, never compared with now
    for name in ("started", "last_seen"):
        _number(info.get(name), f"heartbeat's {name}", EARLIEST_TIME, LATEST_TIME)
    for name in _HEARTBEAT_COUNTS:
        _count(info.get(name), f"heartbeat's {name}")
    _count(info.get("pid"), "heartbeat's pid", MAX_PID)
    _number(info.get("interval"), "heartbeat's interval", 0.0, MAX_INTERVAL)
    if info.get("interval") == 0:
        raise CorruptRecord("heartbeat's interval is 0")
    _number(info.get("best_fitness"), "heartbeat's best_fitness", -MAX_FITNESS, MAX_FITNESS)
    for name in _HEARTBEAT_TEXTS:
        _text(info.get(name), f"heartbeat's {name}")
    sched = info.get("scheduler")
    if sched is not None:
        if not isinstance(sched, dict) or len(sched) > MAX_SCHEDULER_ITEMS:
            raise CorruptRecord(f"heartbeat's scheduler is not a JSON object of at most {MAX_SCHEDULER_ITEMS} items")
        for k, v in sched.items():
            if not (len(k) <= MAX_SCHEDULER_TEXT and isinstance(v, str) and len(v) <= MAX_SCHEDULER_TEXT):
                raise CorruptRecord(f"heartbeat's scheduler holds more than {MAX_SCHEDULER_TEXT} characters in a field")
    return beat


def check_launch(key: str, rec: Any, now: float) -> dict[str, Any]:
    """The launch record at ``key`` (``launches/{name}.json``), checked like a heartbeat:
    ``name`` is the file's, ``time`` within the window, ``info`` a JSON object whose
    ``kind``, ``job_id``, ``log_dir`` are bounded strings, ``tasks`` a bounded count and
    ``command`` a bounded list of strings. CorruptRecord otherwise."""
    if not isinstance(rec, dict):
        raise CorruptRecord("launch record is not a JSON object")
    name = rec.get("name")
    if not is_safe_name(name) or name != _name_of(key):
        raise CorruptRecord("launch record's name is not the one its file has")
    check_time(rec.get("time"), "launch record", now)
    info = rec.get("info")
    if not isinstance(info, dict):
        raise CorruptRecord("launch record's info is not a JSON object")
    for field in ("kind", "log_dir"):
        _text(info.get(field), f"launch record's {field}")
    job = info.get("job_id")
    if job is not None and not (isinstance(job, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", job)):
        raise CorruptRecord("launch record's job_id is not a job id")
    _count(info.get("tasks"), "launch record's tasks", MAX_LAUNCH_TASKS)
    command = info.get("command")
    if command is not None and not (isinstance(command, list) and len(command) <= MAX_COMMAND_WORDS
                                    and all(isinstance(w, str) and len(w) <= MAX_TEXT for w in command)):
        _text(command, "launch record's command")
    return rec

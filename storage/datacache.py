"""The run's decoded dataset in the store (``data/``): claimed once, written whole, committed last.

A user dataset (``imagefolder``, ``npz``, ``hf``) is decoded once per run and kept as
arrays in the population directory, so that hundreds of workers load it instead of each
decoding it. The objects of one cache (``KEY``: 16 hex digits that name the dataset spec and
settings; ``G``: a generation, 0 first, a new one only when an earlier one was abandoned or
damaged) are::

    data/KEY.gG.claim.json                  who decodes generation G (created only if absent)
    data/KEY.gG.progress.json               the decoder's progress, overwritten as it goes
    data/KEY.gG.PART.NONCE.safetensors      the arrays of one split (PART: train, val, test)
    data/KEY.gG.json                        the manifest: created only if absent, last

As with an individual's publish, the parts are written under names unique to the attempt
and the small manifest, naming each part with its size and SHA-256, is created last: a
cache exists exactly when its manifest does, and a reader that finds one finds whole parts
(and checks them). Storage treats manifests, claims and progress as bounded JSON objects
and parts as opaque bytes read with the size the manifest states and checked against its
SHA-256 while streaming, before they are held in memory (:meth:`Backend.read_verified`);
what they mean is ``evo.data.cache``'s business. Nothing here unpickles anything.

The store is untrusted, so generation numbers come from a *verified chain*, never from the
largest name present: a generation belongs to the chain when its claim is a regular file
whose fields check out (:func:`claim_problem`: a worker name, a time no later than a few
minutes past the reader's clock) and it is at most ``MAX_SKIP`` beyond the newest generation
already in the chain (counting from 0). Manifests, progress records and parts of a
generation outside the chain are foreign: readers ignore them and ``evo check`` reports
them. The next generation a writer claims is the first free number after the chain's
newest (:meth:`DataCache.claim_next`); a foreign entry at that name (a symlink, a folder, a
FIFO, a planted claim) is moved aside by the writer when the store lets it, else skipped.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from .backend import UnreadableEntry
from .core import StoreCore
from .records import CorruptRecord, dumps, loads

DATA = "data"
PARTS = ("train", "val", "test")
MAX_MANIFEST_BYTES = 2**20
MAX_PROGRESS_BYTES = 2**16
# The largest split the store holds (decoded uint8 images); a manifest may not state more,
# so no manifest can make a reader allocate without limit.
MAX_PART_BYTES = 256 * 2**30
MAX_GENERATION = 10**6
# A valid claim more than this many generations beyond the chain's newest is foreign; a
# writer skips at most this many foreign names when it claims the next generation.
MAX_SKIP = 16
# Times in claims and progress records: no earlier than 2000-01-01, no later than this many
# seconds past the reader's clock (clocks of a fleet differ by seconds, not minutes).
EARLIEST_TIME = 946684800.0
FUTURE_SKEW_S = 300.0
MAX_TEXT = 256

log = logging.getLogger("storage.datacache")

_KEY = re.compile(r"[0-9a-f]{16}")
_NAME = re.compile(r"([0-9a-f]{16})\.g(\d{1,7})\.(?:(claim|progress)\.json|json|"
                   r"(train|val|test)\.([0-9a-f]{16})\.safetensors)")


@dataclass(frozen=True)
class DataState:
    """What one listing of ``data/`` says about the cache ``key``: the generations that have
    a manifest, a claim (a regular file), a progress record, the key of every part by
    generation, and the verified chain (this module's docstring): ``chain`` holds the
    generations whose claims check out and follow on from 0 (:func:`chain_of`), ``blocked``
    the generations within its reach whose claim does not check out."""

    key: str
    manifests: frozenset[int] = frozenset()
    claims: frozenset[int] = frozenset()
    progress: frozenset[int] = frozenset()
    parts: dict[int, tuple[str, ...]] = field(default_factory=dict)
    chain: frozenset[int] = frozenset()
    blocked: frozenset[int] = frozenset()

    @property
    def newest(self) -> int:
        """The newest generation of the verified chain (-1: none yet)."""
        return max(self.chain, default=-1)

    @property
    def committed(self) -> frozenset[int]:
        """Generations of the chain that have a manifest (the only ones a reader opens)."""
        return self.manifests & self.chain


def _text(v: Any, low: int = 0) -> bool:
    return isinstance(v, str) and low <= len(v) <= MAX_TEXT


def _whole(v: Any, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def time_problem(when: Any, now: float) -> str | None:
    """None if ``when`` is a time a record of this store may hold (a finite number of unix
    seconds from 2000 on, at most ``FUTURE_SKEW_S`` past ``now``); else the problem, in words."""
    if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when):
        return "states no time"
    if when < EARLIEST_TIME:
        return "is dated before 2000"
    if when > now + FUTURE_SKEW_S:
        return f"is dated {when - now:.0f} s in the future"
    return None


_WHO = {"worker": lambda v: _text(v, 1), "host": _text, "pid": lambda v: _whole(v, 0, 2**31)}
_PROGRESS = {**_WHO, "phase": lambda v: _text(v) and len(v) <= 40, "done": lambda v: _whole(v, 0, 10**10),
             "total": lambda v: _whole(v, 0, 10**10), "beat": lambda v: _whole(v, 0, 10**12),
             "failed": lambda v: isinstance(v, str) and len(v) <= 4000, "abandoned": lambda v: isinstance(v, bool)}


def _fields_problem(obj: Any, fields: dict, now: float) -> str | None:
    if not isinstance(obj, dict):
        return "is not a JSON object"
    problem = time_problem(obj.get("time"), now)
    if problem:
        return problem
    for name, value in obj.items():
        if name == "time":
            continue
        ok = fields.get(name)
        if ok is None:
            return f"has an unknown field {str(name)[:40]!r}"
        if not ok(value):
            return f"field {name!r} is out of bounds"
    if "worker" not in obj:
        return "names no worker"
    return None


def claim_problem(obj: Any, now: float) -> str | None:
    """None if ``obj`` is a claim record as :meth:`DataCache.claim_data` writes it (worker,
    host, pid, time, each in bounds; ``now``: the reader's clock); else the problem."""
    return _fields_problem(obj, _WHO, now)


def progress_problem(obj: Any, now: float) -> str | None:
    """None if ``obj`` is a progress record as a decoder writes it (who, time, phase,
    done/total images, beat, failed or abandoned; each in bounds); else the problem."""
    return _fields_problem(obj, _PROGRESS, now)


def chain_of(valid: list[int]) -> frozenset[int]:
    """The verified chain made of the generations ``valid`` whose claims check out: from 0
    on, each at most ``MAX_SKIP`` beyond the one before (the first at most ``MAX_SKIP``)."""
    chain, newest = set(), -1
    for g in sorted(valid):
        if g > newest + 1 + MAX_SKIP:
            break
        chain.add(g)
        newest = g
    return frozenset(chain)


def manifest_problem(m: Any, key: str, g: int) -> str | None:
    """None if ``m`` has the shape storage relies on for the manifest of generation ``g``
    of cache ``key`` (its key and generation, and three parts of this generation, each with
    an image count, a size within ``MAX_PART_BYTES`` and a SHA-256); else the problem. What
    the arrays mean is checked by ``evo.data.cacheformat``."""
    if not isinstance(m, dict):
        return "is not a JSON object"
    if m.get("key") != key or m.get("generation") != g:
        return "names another cache or generation"
    parts = m.get("parts")
    if not isinstance(parts, dict) or set(parts) != set(PARTS):
        return "parts must be train, val and test"
    for split in PARTS:
        p = parts[split]
        if not isinstance(p, dict) or not isinstance(p.get("key"), str):
            return f"part {split} names no object"
        parsed = parse_data_name(p["key"][len(DATA) + 1:]) if p["key"].startswith(DATA + "/") else None
        if parsed is None or parsed[:2] != (key, g) or parsed[2] != "part" \
                or not p["key"].startswith(f"{DATA}/{key}.g{g}.{split}."):
            return f"part {split} names an object of another cache, generation or split"
        if not _whole(p.get("size"), 0, MAX_PART_BYTES):
            return f"part {split} states an impossible size"
        if not _whole(p.get("images"), 0, 10**10):
            return f"part {split} states no image count"
        if not isinstance(p.get("sha256"), str) or not re.fullmatch(r"[0-9a-f]{64}", p["sha256"]):
            return f"part {split} states no SHA-256"
    return None


def check_data_key(key: str) -> str:
    """``key`` if it is 16 lowercase hex digits; ValueError otherwise."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"bad data cache key {key!r}")
    return key


def _generation(g: int) -> int:
    if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g <= MAX_GENERATION:
        raise ValueError(f"bad data cache generation {g!r}")
    return g


def parse_data_name(name: str) -> tuple[str, int, str] | None:
    """``(key, generation, what)`` of a name under ``data/`` (what: ``manifest``, ``claim``,
    ``progress`` or ``part``), or None for a name that is not part of the layout."""
    m = _NAME.fullmatch(name)
    if m is None or int(m.group(2)) > MAX_GENERATION:
        return None
    what = m.group(3) or ("part" if m.group(4) else "manifest")
    return m.group(1), int(m.group(2)), what


class DataCache:
    """The run's decoded datasets in ``data/`` (the store's ``datacache`` facet; this module's
    docstring has the protocol).

    Contract: exactly one caller wins the claim of a generation and decodes it; a generation
    exists exactly when its manifest does, and the manifest names only parts already whole;
    every part is read bounded by its stated size and checked against its SHA-256.
    """

    def __init__(self, core: StoreCore):
        self._core = core
        self._backend = core.backend
        self._good_claims: set[str] = set()

    @property
    def url(self) -> str:
        """The store's URL (no credentials), for messages about its cache."""
        return self._core.url

    def now(self) -> float:
        """The store's clock (unix seconds): what claims and progress records are stamped with."""
        return self._core.now()

    def data_state(self, key: str) -> DataState:
        """Generations of cache ``key`` that have a manifest, a claim or progress, and its
        verified chain (one listing of ``data/``, plus a read of each claim within the
        chain's reach not yet known good; a claim, once good, stays good for this object)."""
        check_data_key(key)
        manifests, claims, progress, parts = set(), set(), set(), {}
        for name in self._backend.list(DATA):
            parsed = parse_data_name(name)
            if parsed is None or parsed[0] != key:
                continue
            _, g, what = parsed
            {"manifest": manifests, "claim": claims, "progress": progress}.get(what, set()).add(g)
            if what == "part":
                parts.setdefault(g, ())
                parts[g] += (f"{DATA}/{name}",)
        chain, blocked, newest = set(), set(), -1
        for g in sorted(claims):   # claims past the chain's reach are never read
            if g > newest + 1 + MAX_SKIP:
                break
            if self.claim_verdict(key, g) is None:
                chain.add(g)
                newest = g
            else:
                blocked.add(g)
        return DataState(key, frozenset(manifests), frozenset(claims), frozenset(progress), parts,
                         frozenset(chain), frozenset(blocked))

    def claim_verdict(self, key: str, generation: int) -> str | None:
        """None if the claim of a generation is a regular file whose fields check out
        (:func:`claim_problem`); else the problem, in words ("is absent" if nothing is there)."""
        name = f"{DATA}/{check_data_key(key)}.g{_generation(generation)}.claim.json"
        if name in self._good_claims:
            return None
        try:
            obj = loads(self._backend.read(name, MAX_PROGRESS_BYTES), name)
        except FileNotFoundError:
            return "is absent"
        except UnreadableEntry as exc:
            return exc.problem
        except CorruptRecord as exc:
            return str(exc).removeprefix(f"{name}: ")[:200]
        problem = claim_problem(obj, self._core.now())
        if problem is None and len(self._good_claims) < 4096:
            self._good_claims.add(name)
        return problem

    def claim_data(self, key: str, generation: int, info: dict[str, Any]) -> bool:
        """Create the claim on generation ``generation`` of cache ``key`` if nobody has; True
        iff this call did (then this caller decodes it)."""
        key = f"{DATA}/{check_data_key(key)}.g{_generation(generation)}.claim.json"
        won = self._backend.create(key, dumps({**info, "time": self._core.now()}))
        if won:
            self._core.fault("data:after_claim")
        return won

    def claim_next(self, key: str, state: DataState, info: dict[str, Any]) -> int | None:
        """Claim the generation after the newest of ``state``'s verified chain; return the
        generation this call won, or None when another caller's valid claim is there (wait
        on it). A foreign entry at a claim name (a non-file, or a claim that does not check
        out) is moved aside when the store allows it and that number claimed again, else
        skipped past (at most ``MAX_SKIP`` of them)."""
        first = state.newest + 1
        for g in range(first, min(first + MAX_SKIP + 1, MAX_GENERATION + 1)):
            if self.claim_data(key, g, info):
                return g
            problem = self.claim_verdict(key, g)
            if problem is None:
                return None      # lost a fair race: the winner decodes it
            name = f"{check_data_key(key)}.g{g}.claim.json"
            try:
                moved = self._backend.move_aside(DATA, name)
            except FileNotFoundError:
                moved = "(gone)"
            except (OSError, UnreadableEntry, ValueError) as exc:
                log.warning("%s/%s %s and cannot be moved aside (%s); skipping generation %d",
                            DATA, name, problem, str(exc)[:120], g)
                continue
            log.warning("%s/%s %s: moved aside to %s", DATA, name, problem, moved)
            if self.claim_data(key, g, info):
                return g
            if self.claim_verdict(key, g) is None:
                return None
        return None

    def read_data_claim(self, key: str, generation: int) -> dict[str, Any] | None:
        """The claim of a generation if it checks out (:func:`claim_problem`); None if absent,
        unreadable or foreign (it is only shown)."""
        obj = self._small_json(f"{DATA}/{check_data_key(key)}.g{_generation(generation)}.claim.json",
                               "data claim", MAX_PROGRESS_BYTES)
        return obj if obj is not None and claim_problem(obj, self._core.now()) is None else None

    def write_data_progress(self, key: str, generation: int, info: dict[str, Any]) -> None:
        """Overwrite the decoder's progress record of a generation (``info`` + ``time``)."""
        self._backend.write(f"{DATA}/{check_data_key(key)}.g{_generation(generation)}.progress.json",
                           dumps({**info, "time": self._core.now()}))

    def read_data_progress(self, key: str, generation: int) -> dict[str, Any] | None:
        """The latest progress record of a generation; None if absent. A record that exists
        but is unreadable, not JSON or out of bounds (:func:`progress_problem`: a time in
        the future, a field too large, ...) comes back as ``{"foreign": PROBLEM}``: it is
        nobody's progress (readers treat the generation as abandoned)."""
        name = f"{DATA}/{check_data_key(key)}.g{_generation(generation)}.progress.json"
        try:
            obj = loads(self._backend.read(name, MAX_PROGRESS_BYTES), name)
        except FileNotFoundError:
            return None
        except UnreadableEntry as exc:
            return {"foreign": f"{name}: {exc.problem}"}
        except CorruptRecord as exc:
            return {"foreign": str(exc)[:300]}
        problem = progress_problem(obj, self._core.now())
        return {"foreign": f"{name} {problem}"} if problem else obj

    def write_data_part(self, key: str, generation: int, part: str, blob: bytes) -> dict[str, Any]:
        """Write one split's arrays under a name unique to this attempt; returns what the
        manifest records of it: ``{"key", "size", "sha256"}``."""
        if part not in PARTS:
            raise ValueError(f"bad data part {part!r} (one of {', '.join(PARTS)})")
        if len(blob) > MAX_PART_BYTES:
            raise ValueError(f"data part of {len(blob)} bytes is larger than the store takes ({MAX_PART_BYTES})")
        name = f"{DATA}/{check_data_key(key)}.g{_generation(generation)}.{part}.{secrets.token_hex(8)}.safetensors"
        self._backend.write(name, blob)
        self._core.fault("data:after_part")
        return {"key": name, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}

    def commit_data(self, key: str, generation: int, manifest: dict[str, Any]) -> bool:
        """Create the manifest of a generation (only if absent): the cache exists from now
        on. True iff this call created it."""
        self._core.fault("data:before_commit")
        text = dumps(manifest)
        if len(text) > MAX_MANIFEST_BYTES:
            raise ValueError(f"data manifest of {len(text)} bytes is larger than {MAX_MANIFEST_BYTES}")
        return self._backend.create(f"{DATA}/{check_data_key(key)}.g{_generation(generation)}.json", text)

    def read_data_manifest(self, key: str, generation: int) -> dict[str, Any] | None:
        """The manifest of a generation as a JSON object; None if absent. CorruptRecord (one
        line) when it exists but is unreadable, oversized, not JSON or not an object."""
        name = f"{DATA}/{check_data_key(key)}.g{_generation(generation)}.json"
        try:
            raw = self._backend.read(name, MAX_MANIFEST_BYTES)
        except FileNotFoundError:
            return None
        except UnreadableEntry as exc:
            raise CorruptRecord(f"{name}: {exc.problem}") from None
        obj = loads(raw, f"{name}")
        if not isinstance(obj, dict):
            raise CorruptRecord(f"{name} is not a JSON object")
        return obj

    def read_data_part(self, part: dict[str, Any]) -> bytes:
        """The bytes of one part as a manifest describes it (``key``, ``size``, ``sha256``),
        read with its size as the bound and its SHA-256 checked while streaming, before the
        bytes are held (:meth:`Backend.read_verified`: a planted size costs no memory).
        CorruptRecord (one line naming the key)
        when the description is malformed or the object is missing, unreadable, of another
        size or another SHA-256."""
        name, size, digest = part.get("key"), part.get("size"), part.get("sha256")
        parsed = parse_data_name(name.split("/", 1)[1]) if isinstance(name, str) and name.startswith(DATA + "/") \
            else None
        if parsed is None or parsed[2] != "part":
            raise CorruptRecord(f"data manifest names a bad part {str(name)[:80]!r}")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_PART_BYTES:
            raise CorruptRecord(f"{name}: the manifest states an impossible size {size!r}")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise CorruptRecord(f"{name}: the manifest states no SHA-256")
        try:
            return self._backend.read_verified(name, size, digest)
        except FileNotFoundError:
            raise CorruptRecord(f"{name} is missing") from None
        except UnreadableEntry as exc:
            raise CorruptRecord(f"{name}: {exc.problem}") from None

    def delete_data_part(self, part_key: str) -> None:
        """Remove a part this caller wrote and did not commit (missing is fine)."""
        parsed = parse_data_name(part_key.split("/", 1)[1]) if part_key.startswith(DATA + "/") else None
        if parsed is None or parsed[2] != "part":
            raise ValueError(f"not a data part: {part_key!r}")
        self._backend.delete(part_key)

    def _small_json(self, name: str, what: str, bound: int) -> dict[str, Any] | None:
        try:
            obj = loads(self._backend.read(name, bound), what)
        except (FileNotFoundError, UnreadableEntry, CorruptRecord):
            return None
        return obj if isinstance(obj, dict) else None

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
and parts as opaque bytes read with the size the manifest states; what they mean is
``evo.data.cache``'s business. Nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
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

_KEY = re.compile(r"[0-9a-f]{16}")
_NAME = re.compile(r"([0-9a-f]{16})\.g(\d{1,7})\.(?:(claim|progress)\.json|json|"
                   r"(train|val|test)\.([0-9a-f]{16})\.safetensors)")


@dataclass(frozen=True)
class DataState:
    """What one listing of ``data/`` says about the cache ``key``: the generations that have
    a manifest, a claim, a progress record, and the key of every part by generation."""

    key: str
    manifests: frozenset[int] = frozenset()
    claims: frozenset[int] = frozenset()
    progress: frozenset[int] = frozenset()
    parts: dict[int, tuple[str, ...]] = field(default_factory=dict)

    @property
    def latest(self) -> int:
        """The highest generation anything exists for (-1: none)."""
        return max(self.manifests | self.claims | self.progress | set(self.parts), default=-1)


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

    @property
    def url(self) -> str:
        """The store's URL (no credentials), for messages about its cache."""
        return self._core.url

    def now(self) -> float:
        """The store's clock (unix seconds): what claims and progress records are stamped with."""
        return self._core.now()

    def data_state(self, key: str) -> DataState:
        """Generations of cache ``key`` that have a manifest, a claim or progress (one listing)."""
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
        return DataState(key, frozenset(manifests), frozenset(claims), frozenset(progress), parts)

    def claim_data(self, key: str, generation: int, info: dict[str, Any]) -> bool:
        """Create the claim on generation ``generation`` of cache ``key`` if nobody has; True
        iff this call did (then this caller decodes it)."""
        key = f"{DATA}/{check_data_key(key)}.g{_generation(generation)}.claim.json"
        won = self._backend.create(key, dumps({**info, "time": self._core.now()}))
        if won:
            self._core.fault("data:after_claim")
        return won

    def read_data_claim(self, key: str, generation: int) -> dict[str, Any] | None:
        """The claim of a generation (None if absent or unreadable: it is only shown)."""
        return self._small_json(f"{DATA}/{check_data_key(key)}.g{_generation(generation)}.claim.json",
                                "data claim", MAX_PROGRESS_BYTES)

    def write_data_progress(self, key: str, generation: int, info: dict[str, Any]) -> None:
        """Overwrite the decoder's progress record of a generation (``info`` + ``time``)."""
        self._backend.write(f"{DATA}/{check_data_key(key)}.g{_generation(generation)}.progress.json",
                           dumps({**info, "time": self._core.now()}))

    def read_data_progress(self, key: str, generation: int) -> dict[str, Any] | None:
        """The latest progress record of a generation, or None (absent, unreadable, not a
        JSON object): progress is advisory."""
        return self._small_json(f"{DATA}/{check_data_key(key)}.g{_generation(generation)}.progress.json",
                                "data progress", MAX_PROGRESS_BYTES)

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
        read with its size as the bound and checked. CorruptRecord (one line naming the key)
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
            blob = self._backend.read(name, size)
        except FileNotFoundError:
            raise CorruptRecord(f"{name} is missing") from None
        except UnreadableEntry as exc:
            raise CorruptRecord(f"{name}: {exc.problem}") from None
        if len(blob) != size:
            raise CorruptRecord(f"{name} has {len(blob)} bytes, the manifest says {size}")
        if hashlib.sha256(blob).hexdigest() != digest:
            raise CorruptRecord(f"{name}: SHA-256 does not match the manifest (damaged)")
        return blob

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

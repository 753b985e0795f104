"""A learned strategy's shared state: numbered, immutable versions under ``policy/``.

A controller (``--selection rl`` or ``reinforce``) keeps its policy in the store, since the
store is all workers share. Version ``n`` is the object ``policy/v{n:010d}.json``; it is
written once, with create-if-absent, and never changed. A worker that learned from its child
makes the next version (the first free number above the latest one it could read, see
:mod:`evo.strategies.policy_chain`) from it; if another worker created that name first, it
reads the winner's version and tries again from there (a rebase). So
the versions form one chain, each made from one earlier version, each update applied once,
without a coordinator or a lock. A worker killed at any point leaves every version either
absent or whole. Old versions are pruned (the newest few are kept for readers that are
still on them).

A name that is not a regular object (a symlink, folder or FIFO planted where a version
belongs) is never read; a writer that needs its number moves it aside into
``quarantine/moved/`` (or, where the store does not allow that, is told so and skips past
the number).

A version's *intake*: the children taken into the chain on top of version ``n`` and not
learned from yet, one object each, ``policy/v{n:010d}-{k:03d}.json`` for slot ``k`` (see
:mod:`evo.strategies.learned`). Slots are written once with create-if-absent, like versions,
so each slot holds exactly one child; they are pruned with their version.

The store knows the versions as bytes: their format (and its validation) belongs to the
strategy (:mod:`evo.strategies.policy_state`).
"""

from __future__ import annotations

import logging
import re

from .backend import UnreadableEntry
from .core import StoreCore

POLICY = "policy"
_VERSION_NAME = re.compile(r"v(\d{10})\.json")
_INTAKE_NAME = re.compile(r"v(\d{10})-(\d{3})\.json")
MAX_POLICY_BYTES = 4 * 2**20
MAX_INTAKE_BYTES = 64 * 2**10   # one child's record: its choices (a few hundred decisions at most) and numbers
MAX_SLOT = 999
log = logging.getLogger("evo.storage")


def policy_key(version: int) -> str:
    """The key of policy version ``version``."""
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version < 10**10:
        raise ValueError(f"bad policy version {version!r}")
    return f"{POLICY}/v{version:010d}.json"


def parse_policy_name(name: str) -> int | None:
    """The version a ``policy/`` file name holds, or None for any other name."""
    m = _VERSION_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def intake_key(version: int, slot: int) -> str:
    """The key of slot ``slot`` of version ``version``'s intake."""
    if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot <= MAX_SLOT:
        raise ValueError(f"bad intake slot {slot!r}")
    return policy_key(version)[:-len(".json")] + f"-{slot:03d}.json"


def parse_intake_name(name: str) -> tuple[int, int] | None:
    """The (version, slot) an intake object's ``policy/`` file name holds, or None for any other name."""
    m = _INTAKE_NAME.fullmatch(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


class PolicyVersions:
    """The learned strategy's policy versions, ``policy/v{n}.json`` (the store's ``policy``
    facet).

    Contract: a version number is created by exactly one of many racing writers and never
    changes after; versions are read bounded; pruning removes only older versions.
    """

    def __init__(self, core: StoreCore):
        self._core = core
        self._backend = core.backend

    @property
    def url(self) -> str:
        """The store's URL (no credentials), for messages about its versions."""
        return self._core.url

    def now(self) -> float:
        """The store's clock (unix seconds): what a writer stamps the updates of a version with."""
        return self._core.now()

    def policy_versions(self) -> list[int]:
        """The policy versions present, ascending (one listing; names of other forms are
        ignored; ``evo check`` reports them)."""
        return sorted(v for v in (parse_policy_name(n) for n in self._backend.list(POLICY)) if v is not None)

    def intake(self) -> dict[int, list[int]]:
        """The intake slots present: version -> its slots, ascending (one listing)."""
        slots: dict[int, list[int]] = {}
        for name in self._backend.list(POLICY):
            parsed = parse_intake_name(name)
            if parsed is not None:
                slots.setdefault(parsed[0], []).append(parsed[1])
        return {v: sorted(s) for v, s in sorted(slots.items())}

    def read_intake(self, version: int, slot: int) -> bytes | None:
        """Slot ``slot`` of version ``version``'s intake, or None if it is absent.

        :class:`storage.UnreadableEntry` if the name is not a readable object of at most
        ``MAX_INTAKE_BYTES`` (the caller skips that slot)."""
        try:
            return self._backend.read(intake_key(version, slot), MAX_INTAKE_BYTES)
        except FileNotFoundError:
            return None

    def create_intake(self, version: int, slot: int, data: bytes) -> bool:
        """Create slot ``slot`` of version ``version``'s intake if it is free; True iff this
        call created it (exactly one of many racing callers does). A foreign entry at the name
        is moved aside first; :class:`storage.UnreadableEntry` if the store does not allow
        that (the caller takes the slot as taken)."""
        if len(data) > MAX_INTAKE_BYTES:
            raise ValueError(f"intake record of {len(data)} bytes is over the {MAX_INTAKE_BYTES}-byte limit")
        self._core.fault("policy:before_intake")
        key = intake_key(version, slot)
        created = self._backend.create(key, data)
        if not created and self._clear_foreign(key):
            created = self._backend.create(key, data)
        if created:
            self._core.fault("policy:after_intake")
        return created

    def delete_intake(self, version: int, slot: int) -> None:
        """Remove one intake slot (a writer withdrawing a slot it created on a pruned version)."""
        try:
            self._backend.delete(intake_key(version, slot))
        except (OSError, UnreadableEntry):
            pass

    def move_intake_aside(self, version: int, slot: int) -> str:
        """Move an unusable intake slot as it is into ``quarantine/moved/`` (``evo check
        --repair``); its new key. OSError if the store does not allow it."""
        return self._backend.move_aside(POLICY, intake_key(version, slot).split("/", 1)[1])

    def read_policy(self, version: int) -> bytes | None:
        """Version ``version``'s bytes, or None if it is absent (never created, or pruned).

        :class:`storage.UnreadableEntry` if the name is not a readable object of at most
        ``MAX_POLICY_BYTES`` (the caller skips that version).
        """
        try:
            return self._backend.read(policy_key(version), MAX_POLICY_BYTES)
        except FileNotFoundError:
            return None

    def create_policy(self, version: int, data: bytes) -> bool:
        """Create version ``version`` if no version of that number exists; True iff this call
        created it (exactly one of many racing callers does).

        A foreign entry (not a regular object) at that name is moved aside first;
        :class:`storage.UnreadableEntry` if the store does not allow that (the caller skips
        past the number)."""
        if len(data) > MAX_POLICY_BYTES:
            raise ValueError(f"policy version of {len(data)} bytes is over the {MAX_POLICY_BYTES}-byte limit")
        self._core.fault("policy:before_create")
        key = policy_key(version)
        created = self._backend.create(key, data)
        if not created and self._clear_foreign(key):
            created = self._backend.create(key, data)
        if created:
            self._core.fault("policy:after_create")
        return created

    def _clear_foreign(self, key: str) -> bool:
        """Move a foreign entry at ``key`` aside; True if it did (False: a regular object)."""
        try:
            self._backend.stat(key)
            return False
        except UnreadableEntry as exc:
            problem = exc.problem
        try:
            moved = self._backend.move_aside(POLICY, key.split("/", 1)[1])
        except FileNotFoundError:
            return True
        except (OSError, UnreadableEntry) as exc:
            raise UnreadableEntry(key, f"{problem}, and it could not be moved aside "
                                       f"({getattr(exc, 'strerror', None) or exc})") from None
        log.warning("%s: %s %s; moved aside to %s", self.url, key, problem, moved)
        return True

    def delete_policy(self, version: int) -> None:
        """Remove version ``version`` (a writer withdrawing an orphan it just created)."""
        try:
            self._backend.delete(policy_key(version))
        except (OSError, UnreadableEntry):
            pass

    def move_policy_aside(self, version: int) -> str:
        """Move an unusable version (corrupt, foreign, planted) as it is into
        ``quarantine/moved/`` (``evo check --repair``); its new key. OSError if the store does
        not allow it."""
        return self._backend.move_aside(POLICY, policy_key(version).split("/", 1)[1])

    def prune_policies(self, below: int) -> int:
        """Delete the versions numbered below ``below`` and their intake slots (the caller
        keeps the newest few); the number of versions deleted. Entries that cannot be deleted
        stay, for ``evo check``."""
        deleted = 0
        for name in sorted(self._backend.list(POLICY)):
            version = parse_policy_name(name)
            slot = parse_intake_name(name)
            number = version if version is not None else slot[0] if slot is not None else None
            if number is None or number >= below:
                continue
            try:
                gone = bool(self._backend.delete(f"{POLICY}/{name}"))
                deleted += gone and version is not None
            except (OSError, UnreadableEntry):
                pass
        return deleted

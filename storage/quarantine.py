"""Quarantine: how an individual that does not check out leaves the live population.

The reason goes into ``quarantine/{id}.json``, created only if absent (so it is logged once
across all workers); then the commit leaves ``alive/``. A commit that is a JSON object is
kept in the record; any other (unreadable, oversized, not JSON) is moved aside as it is,
never copied, so nothing is lost and no bytes from outside the store enter a record.
"""

from __future__ import annotations

import logging

from .backend import MOVED_DIR, UnreadableEntry, is_key, moved_key
from .core import StoreCore
from .records import ALIVE, CorruptRecord, IndividualInfo, dumps, loads, quarantine_key

log = logging.getLogger("evo.storage")


def quarantine(core: StoreCore, info: IndividualInfo, reason: str, raw: bytes | None = None,
               unusable: bool = False) -> bool:
    """Move a live individual to ``quarantine/``: record ``reason`` in
    ``quarantine/{id}.json``, then take the commit off ``alive/`` (see the module
    docstring); True iff this call created the record."""
    if raw is None and not unusable:
        try:
            raw = core.backend.read(info.key)
        except FileNotFoundError:
            return False
        except UnreadableEntry:
            unusable = True
    commit = None
    if raw is not None:
        try:
            parsed = loads(raw, "commit")
        except CorruptRecord:
            parsed = None
        commit = parsed if isinstance(parsed, dict) else None
    name = info.key.split("/", 1)[1]
    moved_to = None if commit is not None else moved_key(ALIVE, name)
    record = {
        "schema": 1, "id": info.id, "reason": reason[:500], "time": core.now(),
        "alive_key": info.key, "commit": commit, "moved_to": moved_to,
    }
    try:
        created = core.backend.create(quarantine_key(info.id), dumps(record))
    except (OSError, UnreadableEntry) as exc:
        # A reader without write access (or a damaged quarantine/ folder): the entry stays
        # where it is, unused; evo check names it. Never a reason to stop the reader.
        log.warning("%s: could not quarantine individual %s (%s): %s", core.url, info.id, reason,
                    getattr(exc, "strerror", None) or exc)
        return False
    core.fault("quarantine:after_record")
    if not created and moved_to is not None:  # finish a quarantine whose writer died
        moved_to = _recorded_move(core, info.id) or moved_to
    try:
        if moved_to is None:
            core.backend.delete(info.key)
        else:
            core.backend.move_aside(ALIVE, name, moved_to)
    except FileNotFoundError:
        pass  # someone else finished it
    except (OSError, UnreadableEntry) as exc:
        log.warning("%s: could not take %s off the live listing: %s", core.url, info.key,
                    getattr(exc, "strerror", None) or exc)
    if created:
        log.warning("%s: quarantined individual %s: %s", core.url, info.id, reason)
    else:
        log.debug("%s: individual %s was already quarantined", core.url, info.id)
    return created

def _recorded_move(core: StoreCore, ident: str) -> str | None:
    """Where an existing quarantine record says the entry was moved, if it says so."""
    try:
        rec = loads(core.backend.read(quarantine_key(ident)), "quarantine record")
    except (FileNotFoundError, UnreadableEntry, CorruptRecord):
        return None
    where = rec.get("moved_to") if isinstance(rec, dict) else None
    return where if isinstance(where, str) and where.startswith(MOVED_DIR + "/") and is_key(where) else None

"""Keeping the weights of the best dead individuals (``keep_best = K``): a marker in
``kept/`` pins the payload a dead individual already had; each kill prunes the rest."""

from __future__ import annotations

from typing import Any

from .backend import UnreadableEntry
from .core import StoreCore
from .records import (
    KEPT, PAYLOAD, CorruptRecord, IndividualInfo, dumps, kept_key, loads, parse_kept_name, parse_payload_name,
)


def keep_weights_if_best(core: StoreCore, record: dict[str, Any]) -> bool:
    """Mark a dead individual's weights as kept if it is among the best K; prune the rest.

    Concurrent prunes may briefly leave more than K, never fewer: an entry is pruned
    only by someone who sees K better ones, and the best K are never outranked.
    """
    mine = parse_kept_name(kept_key(record["id"], record["fitness"]).split("/", 1)[1])
    assert mine is not None
    kept = [i for i in (parse_kept_name(n) for n in core.backend.list(KEPT)) if i is not None]
    ranked = sorted({i.id: i for i in kept + [mine]}.values(),
                    key=lambda i: (i.fitness, i.id), reverse=True)
    best = {i.id for i in ranked[:core.keep_best]}
    if mine.id not in best:
        return False
    marker = {"schema": 1, "id": record["id"], "fitness": record["fitness"],
              "payload": record["payload"], "payload_sha256": record["payload_sha256"],
              "payload_size": record["payload_size"]}
    core.backend.create(mine.key, dumps(marker))
    for loser in ranked[core.keep_best:]:
        _unkeep(core, loser)
    return True

def _unkeep(core: StoreCore, info: IndividualInfo) -> None:
    try:
        marker = loads(core.backend.read(info.key), "kept marker")
    except FileNotFoundError:
        return
    except (CorruptRecord, UnreadableEntry):
        marker = None
    core.backend.delete(info.key)  # marker first: weights are never pinned but absent
    payload = marker.get("payload") if isinstance(marker, dict) else None
    if isinstance(payload, str) and payload.startswith(PAYLOAD + "/") \
            and parse_payload_name(payload[len(PAYLOAD) + 1:]) == info.id:
        core.backend.delete(payload)

"""An individual's ancestry as plain data (`evo lineage` prints it, `evo report` draws it).

Every commit and history record names its parent and the mutation that made it, so the
chain can be followed for live and dead individuals alike.
"""

from __future__ import annotations

from typing import Any

from .snapshot import Snapshot, find_record


def lineage(snap: Snapshot, ident: str) -> dict[str, Any]:
    """The chain from the initial individual (first) to ``ident`` (last), with each step's
    mutation, fitness, birth and death; ``complete`` is False when an ancestor's record is
    missing (e.g. it was quarantined), and ``missing`` then names it."""
    rec = find_record(snap, ident)
    chain = [rec]
    seen = {rec.id}
    missing = None
    while chain[-1].parent is not None:
        parent = snap.records.get(chain[-1].parent)
        if parent is None or parent.id in seen:
            missing = chain[-1].parent
            break
        chain.append(parent)
        seen.add(parent.id)
    chain.reverse()
    start = chain[0].birth
    steps = [{"id": r.id, "parent": r.parent, "mutation": r.mutation, "fitness": r.fitness,
              "birth": r.birth, "t": r.birth - start, "alive": r.alive, "death": r.death,
              "worker": r.worker, "inherited_fraction": r.metrics.get("inherited_fraction")} for r in chain]
    return {"url": snap.url, "id": rec.id, "generations": len(chain) - 1, "complete": missing is None,
            "missing": missing, "steps": steps}

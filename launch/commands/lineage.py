"""`evo lineage URL ID [--json]`: an individual's ancestry back to the initial model.

Every commit and history record names its parent and the mutation that made it, so the
chain can be followed for live and dead individuals alike. ``ID`` may be a full id, a
unique prefix of one, or ``best`` (the best live individual).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..views.snapshot import Snapshot, find_record, take_snapshot, utc
from ..options import add_command


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


def format_lineage(result: dict[str, Any]) -> str:
    """One line per generation, oldest first."""
    steps = result["steps"]
    lines = [f"lineage of {result['id']} in {result['url']}: {result['generations']} generation(s)"]
    if not result["complete"]:
        lines.append(f"  (the chain stops: ancestor {result['missing']} has no record; it may have been quarantined)")
    widths = max(len(s["mutation"]) for s in steps)
    for i, s in enumerate(steps):
        state = "alive" if s["alive"] else "dead"
        inh = s["inherited_fraction"]
        inherited = f"  inherited {100 * inh:3.0f}%" if isinstance(inh, (int, float)) and i else ""
        lines.append(f"  {i:3d}  {s['id']}  {s['mutation'].ljust(widths)}  val acc {s['fitness']:.4f}  "
                     f"+{s['t']:8.1f}s  born {utc(s['birth'])}  {state}{inherited}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    result = lineage(take_snapshot(args.url, history_dna=False, alive_dna=False), args.id)
    print(json.dumps(result, sort_keys=True) if args.json else format_lineage(result))
    return 0


def register(sub) -> None:
    p = add_command(sub, "lineage", help="an individual's ancestry back to the initial model",
                    description="Follow parent links from an individual (alive or dead) back to the "
                                "initial model: each step's mutation, validation accuracy and time.")
    p.add_argument("id", help="individual id (or a unique prefix, or 'best')")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)

"""`evo lineage URL ID [--json]`: an individual's ancestry back to the initial model.

Every commit and history record names its parent and the mutation that made it, so the
chain can be followed for live and dead individuals alike. ``ID`` may be a full id, a
unique prefix of one, or ``best`` (the best live individual).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..options import add_command
from ..views.lineage import lineage
from ..views.snapshot import take_snapshot, utc


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

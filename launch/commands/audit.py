"""``evo audit URL [--json] [--workers W] [--events FILE]``: prove a run's invariants from its store.

Checks that every individual ever born is alive or dead exactly once, that every parent
existed, and that the population stayed within [P - W, P + W] after seeding; with the
workers' event log (``evo worker --event-log FILE``) also that no publish was lost and no individual was
killed twice. See ``evo.audit``. Exit code 0 when every invariant holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json

from ..errors import UserError
from ..options import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``audit`` subcommand."""
    p = add_command(subparsers, "audit", help="check a whole run's invariants from the store (lost, double kills, population bounds)",
                    description="Audit a run from its population directory: every individual born is alive or dead "
                                "exactly once, parents existed, the population stayed in [P-W, P+W] after seeding. "
                    "Exit code 0 when all hold, 1 otherwise.")
    p.add_argument("--workers", "-W", type=int, metavar="W",
                   help="number of concurrent workers for the bounds (default: estimated from heartbeats)")
    p.add_argument("--events", metavar="FILE",
                   help="the workers' event log (written by `evo worker --event-log FILE`): also prove that no "
                        "publish was lost and no individual was killed twice")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the audit; return 0 if every invariant holds, 1 if not."""
    from evo.audit import audit_store, read_events

    from ..views.snapshot import open_population

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    store, config = open_population(args.url)
    events = bad = None
    if args.events:
        try:
            events, bad = read_events(args.events)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    report = audit_store(store, population_size=config.population_size, workers=args.workers,
                         events=events, bad_event_lines=bad or 0)
    result = report.to_dict()
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        _print_human(result)
    return 0 if report.ok else 1


def _print_human(r: dict) -> None:
    print(f"{r['url']}: {'ok' if r['ok'] else 'VIOLATIONS: ' + ', '.join(r['violations'])}")
    print(f"  born {r['born']}, alive {r['alive']}, dead {r['dead']}, quarantined {r['quarantined']}, "
          f"zombies {r['zombies']}")
    w = f"W={r['workers']} ({r['workers_source']})" if r["workers"] else "W unknown"
    if r["population_min"] is None:
        print(f"  population never reached P={r['population_size']}; {w}")
    else:
        bounds = f"bounds [{r['bounds'][0]}, {r['bounds'][1]}]" if r["bounds"] else "bounds not checked"
        print(f"  population after seeding: min {r['population_min']}, max {r['population_max']}, "
              f"final {r['population_final']}; P={r['population_size']}, {w}, {bounds}")
    if r["births_per_second"] is not None:
        print(f"  {r['births_after_seeding']} births after seeding, {r['births_per_second']:.2f}/s, "
              f"longest gap {r['max_birth_gap_s']:.2f} s")
    print(f"  missing parents {r['missing_parents']}, parents born after child {r['parent_born_after_child']}, "
          f"unreadable history {r['unreadable_history']}")
    e = r["events"]
    if e:
        print(f"  event log: {e['publishes']} publishes, {e['kills']} kills, {e['race_losses']} race losses; "
              f"lost {e['lost']}, double kills {e['double_kills']}, phantom kills {e['phantom_kills']}, "
              f"mismatched {e['mismatched']}, unlogged births {e['unlogged_births']}, bad lines {e['bad_lines']}")
    for line in r["problems"]:
        print(f"  - {line}")

"""``evo check URL [--repair] [--grace SECONDS] [--deep] [--json]``: audit a population directory.

Reports live, torn, corrupt and zombie individuals, orphaned weights and temp files, and
quarantine/history counts; ``--repair`` fixes what it can (see ``storage.check``). Exit code
0 when everything is fine (or was repaired), 1 when problems remain. A ``config.json`` that
is not the one ``evo init`` sealed (``state/config.sha256``) is a problem, and then nothing
is repaired: every entry would be judged against a config that is not the run's. A run
without a seal (made before evo recorded one) is checked as before, with a warning.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from evo.errors import one_line

from ..errors import UserError
from ..options import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``check`` subcommand."""
    p = add_command(subparsers, "check", help="audit a population directory (and repair it with --repair)",
                    description="Audit a population directory: torn, corrupt or zombie individuals, "
                                "orphaned weights and temp files. Exit code 0 when ok, 1 when problems remain.")
    p.add_argument("--repair", action="store_true",
                   help="quarantine torn/corrupt individuals, unlist zombies, "
                        "delete orphans older than --grace")
    p.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="leave unreferenced files younger than this alone: they may belong to a "
                        "publish in progress (default 3600; must exceed the longest publish)")
    p.add_argument("--deep", action="store_true",
                   help="also read every live individual's weights and verify their sha256")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the audit; return 0 if ok, 1 if problems remain."""
    import storage
    from evo.config import ConfigError, RunConfig

    if not math.isfinite(args.grace) or args.grace < 0:
        raise UserError(f"--grace must be a number of seconds >= 0, got {args.grace}")
    try:
        store = storage.open_store(args.url)
        config_text = store.runinfo.read_config()
    except storage.StoreError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:  # unreachable or forbidden store
        raise UserError(f"{args.url}: {one_line(exc, with_type=True)}") from None
    config_problems = []
    seal = store.runinfo.config_seal(config_text)
    repair = args.repair
    if not seal.trusted:
        # nothing is judged by, or repaired against, a config that is not the run's
        config_problems.append(f"config: {seal.problem}")
        repair = False
    try:
        config = RunConfig.from_json(config_text) if seal.trusted else None
    except ConfigError as exc:
        config = None
        config_problems.append(f"config: config.json does not parse: {exc}")
    if config is not None:   # the run's search space checks its DNA (not only large_scale's)
        from evo.spaces import make_space

        store = store.with_run(keep_best=config.keep_best, bounds=config.bounds,
                               dna_validator=make_space(config).parse)
    try:
        report = store.check(repair=repair, grace_seconds=args.grace, deep=args.deep,
                             bounds=config.bounds if config is not None else None)
    except OSError as exc:
        raise UserError(f"{args.url}: {one_line(exc, with_type=True)}") from None
    result = report.to_dict()
    if config is not None:
        from evo.strategies.policy_report import read_policy_report

        policy = read_policy_report(store.policy, config)
        if policy is not None and args.repair:
            moves = [(v, "unusable policy versions") for v in policy.unusable] + \
                [(v, "policy versions beyond the chain") for v in policy.beyond]
            for version, kind in moves:   # never the chain's head: that one is usable and in the chain
                try:
                    store.policy.move_policy_aside(version)
                    result["repaired"][kind] = result["repaired"].get(kind, 0) + 1
                except FileNotFoundError:
                    pass   # pruned or moved meanwhile
                except (OSError, storage.UnreadableEntry) as exc:
                    result["problems"].append(f"policy: version {version} could not be moved aside: "
                                              f"{one_line(exc, with_type=True)}")
            for version, slot in policy.bad_slots:
                try:
                    store.policy.move_intake_aside(version, slot)
                    result["repaired"]["unusable policy intake slots"] = \
                        result["repaired"].get("unusable policy intake slots", 0) + 1
                except FileNotFoundError:
                    pass   # pruned meanwhile
                except (OSError, storage.UnreadableEntry) as exc:
                    result["problems"].append(f"policy: intake slot {slot} of version {version} could not be "
                                              f"moved aside: {one_line(exc, with_type=True)}")
            policy = read_policy_report(store.policy, config)
        if policy is not None and policy.problems:
            result["ok"] = False
            result["problems"] += [f"policy: {p}" for p in policy.problems]
        if policy is None:   # no learned strategy: nobody of this run writes policy/
            _check_unowned_policy(store, args.repair, result)
    if args.repair and not repair:
        config_problems.append("nothing repaired: config.json is not the one 'evo init' wrote, "
                               "so no entry is judged against it")
    if config_problems:
        result["ok"] = False
        result["problems"] = config_problems + result["problems"]
    result["config_seal"] = seal.state
    if seal.state == "legacy":
        result["warnings"] = [f"config: {seal.problem}; 'evo init {args.url}' with the run's options "
                              "(or --config FILE) records it"]
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        _print_human(result)
    return 0 if result["ok"] else 1


def _print_human(r: dict) -> None:
    print(f"{r['url']}: {'ok' if r['ok'] else 'PROBLEMS'}")
    print(f"  alive {r['alive']}, history {r['history']}, quarantined {r['quarantined']}, "
          f"kept {r['kept']}, workers {r['workers']}" + (f", final trainings {r['retrains']}" if r.get('retrains') else ""))
    print(f"  torn {r['torn']}, corrupt {r['corrupt']}, zombies {r['zombies']}, "
          f"orphans {r['orphans']}, stray {r['stray']}, pending {r['pending']}")
    for line in r["problems"]:
        print(f"  - {line}")
    for line in r.get("warnings", ()):
        print(f"  warning: {line}")
    if r["repaired"]:
        print("  repaired: " + ", ".join(f"{k} {n}" for k, n in sorted(r["repaired"].items())))


def _check_unowned_policy(store: Any, repair: bool, result: dict[str, Any]) -> None:
    """Policy versions and intake slots in a run whose strategy learns no policy are foreign:
    named in ``result``'s problems, and moved aside with ``repair``."""
    import storage

    entries = [(f"version {v}", storage.policy_key(v), lambda v=v: store.policy.move_policy_aside(v))
               for v in store.policy.policy_versions()]
    entries += [(f"intake slot {k} of version {v}", storage.intake_key(v, k),
                 lambda v=v, k=k: store.policy.move_intake_aside(v, k))
                for v, slots in store.policy.intake().items() for k in slots]
    for what, key, move_aside in entries:
        if repair:
            try:
                move_aside()
                result["repaired"]["policy entries of no learned strategy"] = \
                    result["repaired"].get("policy entries of no learned strategy", 0) + 1
                continue
            except FileNotFoundError:
                continue
            except (OSError, storage.UnreadableEntry) as exc:
                result["problems"].append(f"policy: {what} could not be moved aside: "
                                          f"{one_line(exc, with_type=True)}")
        result["ok"] = False
        result["problems"].append(f"policy: {what} ({key!r}) is foreign: this run's strategy learns no policy")

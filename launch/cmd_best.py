"""`evo best URL [--export DIR]`: the best live individual, and its export as a torch-only model.

``--export DIR`` writes ``dna.json``, ``weights.safetensors``, ``model.json``,
``evo_model/`` (verbatim copies of ``dna/portable.py`` and the modules it needs), ``load.py`` and ``test.npz`` (the
run's test split); ``python load.py --data test.npz`` in DIR evaluates it with torch alone, and ``evo evaluate DIR --dataset
...`` reports its test accuracy. NASNet individuals can be exported at another size with
``--cells N --filters F`` (the weights are then fresh: the model must be retrained).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._snapshot import ago, open_population, utc
from .errors import UserError
from .options import add_command, non_negative_int, positive_int


def best_individual(store, config, ident: str | None = None):
    """The verified best live individual (or the live or kept one named ``ident``)."""
    from evo.spaces import for_config

    parse = for_config(config).parse
    if ident is not None:
        try:
            info = store.find(ident)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        ind = store.read_individual(info, bounds=config.bounds, dna_validator=parse) if info else None
        if ind is None:
            ind = store.read_kept(ident)
        if ind is None:
            raise UserError(f"{store.url}: {ident} is neither a readable live individual nor a dead one "
                            "with kept weights (run with --keep-best K to keep the best dead)")
        return ind
    for _ in range(5):  # the best may die between the listing and the read: look again
        alive = sorted(store.list_alive(), key=lambda i: (-i.fitness, i.birth))
        if not alive:
            raise UserError(f"{store.url}: no live individuals yet")
        for info in alive:
            ind = store.read_individual(info, bounds=config.bounds, dna_validator=parse)
            if ind is not None:
                return ind
    raise UserError(f"{store.url}: no live individual could be read (see `evo check`)")


def describe(ind) -> dict[str, Any]:
    """The ``--json`` view of an individual (no weights)."""
    return {"id": ind.id, "fitness": ind.fitness, "mutation": ind.mutation, "parent": ind.parent,
            "birth": ind.birth, "worker": ind.worker, "dna_hash": ind.dna_hash, "metrics": ind.metrics,
            "dna": ind.dna, "weights_bytes": len(ind.weights)}


def _summary(ind) -> str:
    import time

    d = ind.dna
    if d.get("kind") == "nasnet":
        arch = (f"NASNet cells; normal {[c[1] for c in d['normal']['combinations']]}, "
                f"reduction {[c[1] for c in d['reduction']['combinations']]}")
    else:
        convs = sum(1 for e in d["edges"] if e["kind"] == "conv")
        arch = f"large-scale: {len(d['vertices'])} vertices, {len(d['edges'])} edges ({convs} convolutions)"
    params = ind.metrics.get("params")
    return "\n".join([
        f"best individual {ind.id}",
        f"  validation accuracy {ind.fitness:.4f}; made by {ind.mutation} from {ind.parent or '-'}",
        f"  born {utc(ind.birth)} UTC ({ago(time.time() - ind.birth)} ago) by worker {ind.worker}",
        f"  {arch}; learning rate {d.get('learning_rate', 0):.4g}"
        + (f"; {params} parameters" if isinstance(params, int) else ""),
    ])


def run(args: argparse.Namespace) -> int:
    store, config = open_population(args.url)
    if (args.cells or args.filters or args.dataset) and not args.export:
        raise UserError("--cells, --filters and --dataset only apply with --export DIR")
    for name in ("cells", "filters"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} must be a positive integer")
    ind = best_individual(store, config, args.id)
    if not args.export:
        print(json.dumps(describe(ind), sort_keys=True) if args.json else _summary(ind))
        return 0
    from ._export import export

    info = export(ind, config, args.url, args.export, cells=args.cells, filters=args.filters,
                  dataset=args.dataset, seed=args.seed, force=args.force)
    if args.json:
        print(json.dumps({"export": args.export, **info}, sort_keys=True))
        return 0
    print(_summary(ind))
    test = info["test_data"]
    print(f"exported to {args.export.rstrip('/')}/: dna.json, weights.safetensors, model.json, evo_model/, load.py"
          f", {test['file']} ({info['parameters']} parameters; {test['file']} holds the {test['images']} "
          f"test images of {test['dataset']})")
    if not info["trained"]:
        print(f"  NOTE: {info['weights_note']}")
    print(f"  evaluate it with torch alone:  cd {args.export} && python load.py --data {test['file']}")
    if info.get("data_id"):   # the user's images: test.npz is the run's own test split, no decoding again
        print(f"  or with evo:                   evo evaluate {args.export}")
        print(f"  new image files:               python {args.export.rstrip('/')}/load.py --images FOLDER")
    else:
        print(f"  or its test accuracy:          evo evaluate {args.export} --dataset {info['dataset']}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "best", help="the best live individual; --export writes a torch-only model",
                    description="Show the best live individual, or export it (DNA, safetensors "
                                "weights, model code and a loader that needs only torch).")
    p.add_argument("--id", help="this individual instead of the best (live, or dead with kept weights)")
    p.add_argument("--export", metavar="DIR", help="write the model to DIR")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty DIR")
    p.add_argument("--cells", type=positive_int, help="NASNet: N cells per stack of the exported model (fresh weights)")
    p.add_argument("--filters", type=positive_int, help="NASNet: F filters of the exported model (fresh weights)")
    p.add_argument("--dataset", help="dataset spec for the input shape and normalisation "
                   "(default: the run's; e.g. cifar10=PATH when the data moved)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of fresh NASNet weights")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)

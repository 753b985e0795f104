"""`evo best URL [--export DIR]`: the best live individual, and its export as a torch-only model;
with ``--retrained [RID]``, a finished final training (``evo retrain``) instead.

``--export DIR`` writes ``dna.json``, ``weights.safetensors``, ``model.json``,
``evo_model/`` (verbatim copies of ``dna/portable.py`` and the modules it needs), ``load.py`` and ``test.npz`` (the
run's test split); ``python load.py --data test.npz`` in DIR evaluates it with torch alone, and ``evo evaluate DIR --dataset
...`` reports its test accuracy. NASNet individuals can be exported at another size with
``--cells N --filters F`` (the weights are then fresh: the model must be retrained).
``--onnx`` also writes ``model.onnx``, checked against torch with onnxruntime on the test split
(``launch.onnx_export``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import UserError
from ..options import add_command, non_negative_int, positive_int
from ..views.snapshot import ago, open_population, utc


def best_individual(store, config, ident: str | None = None):
    """The verified best live individual (or the live or kept one named ``ident``)."""
    from evo.spaces import for_config

    if ident is None:
        return best_individuals(store, config, 1)[0]
    parse = for_config(config).parse
    try:
        info = store.population.find(ident)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    ind = store.population.read_individual(info, bounds=config.bounds, dna_validator=parse) if info else None
    if ind is None:
        ind = store.history.read_kept(ident)
    if ind is None:
        raise UserError(f"{store.url}: {ident} is neither a readable live individual nor a dead one "
                        "with kept weights (run with --keep-best K to keep the best dead)")
    return ind


def best_individuals(store, config, k: int = 1) -> list:
    """The ``k`` fittest live individuals whose entries read and verify (``storage.Individual``,
    weights included), fittest first (ties: the older); fewer when fewer are readable. One
    that does not read is skipped, as `evo check` would report it; UserError when none is
    alive or none reads."""
    from evo.spaces import for_config

    parse = for_config(config).parse
    for _ in range(5):  # the best may die between the listing and the read: look again
        alive = sorted(store.population.list_alive(), key=lambda i: (-i.fitness, i.birth))
        if not alive:
            raise UserError(f"{store.url}: no live individuals yet")
        found = []
        for info in alive:
            ind = store.population.read_individual(info, bounds=config.bounds, dna_validator=parse)
            if ind is not None:
                found.append(ind)
                if len(found) >= k:
                    break
        if found:
            return found
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
    elif d.get("kind") == "nasbench201":
        from dna.nasbench201 import nb201_from_dict

        arch = f"NAS-Bench-201 cell {nb201_from_dict(d).arch_str()}"
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


def retrained_rows(store) -> list[dict[str, Any]]:
    """The finished final trainings of the store, by searched validation accuracy (never by
    test accuracy: choosing on the test split would make its number optimistic)."""
    rows = []
    for state in store.retrains.retrain_states():
        if state.state != "done" or state.request is None:
            continue
        src, res = state.request.get("source") or {}, state.result or {}
        rows.append({"rid": state.rid, "source": src.get("id") or src.get("name") or src.get("file"),
                     "searched_fitness": src.get("fitness"), "size": state.request.get("size"),
                     "init": state.request.get("init"), "test_accuracy": res.get("test_accuracy"),
                     "parameters": res.get("parameters"), "epochs": res.get("epochs"),
                     "data": (state.request.get("settings") or {}).get("data"), "time": res.get("time")})
    rows.sort(key=lambda r: (-(r["searched_fitness"] if isinstance(r["searched_fitness"], (int, float)) else -1),
                             -(r["time"] or 0)))
    return rows


def _retrained_lines(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["final trainings (evo retrain; export one with --retrained RID --export DIR):"]
    for r in rows:
        size = f" at N={r['size']['cells']}, F={r['size']['filters']}" if isinstance(r["size"], dict) else ""
        val = f", searched val {r['searched_fitness']:.4f}" if isinstance(r["searched_fitness"], (int, float)) else ""
        lines.append(f"  {r['rid']}: TEST accuracy {r['test_accuracy']:.4f} ({r['source']}{size}{val}; "
                     f"{r['epochs']} epochs on {r['data']}, {r['parameters']} parameters)")
    return lines


def export_retrained(store, args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    """`evo best URL --retrained [RID] --export DIR`: write a finished final training's model
    (verified against its result's SHA-256) and the test split, and check that it loads."""
    import dna.portable as portable

    from ..export import parse_dataset, prepare_directory, read_run_dataset, write_export

    rid = args.retrained if args.retrained != "best" else (rows[0]["rid"] if rows else None)
    if rid is None:
        raise UserError(f"{store.url}: no finished final training (run evo retrain {args.url})")
    if rid not in {r["rid"] for r in rows}:
        raise UserError(f"{store.url}: no finished final training {rid!r} "
                        f"(finished: {', '.join(r['rid'] for r in rows) or 'none'})")
    from storage import CorruptRecord

    try:
        found = store.retrains.read_retrain_export(rid)
    except CorruptRecord as exc:
        raise UserError(f"{store.url}: {exc}") from None
    result, files = found
    if not args.export:
        print(json.dumps(result, sort_keys=True) if args.json else "\n".join(_retrained_lines(
            [r for r in rows if r["rid"] == rid])))
        return 0
    info = json.loads(files[portable.MODEL_FILE])
    host = read_run_dataset(parse_dataset(args.dataset or info["dataset"]))
    out = prepare_directory(args.export, args.force)
    write_export(out, files, host, args.export)
    try:
        model = portable.load(str(out))
    except portable.ExportError as exc:
        raise UserError(f"the export in {args.export} does not load: {exc}") from None
    n = sum(p.numel() for p in model.net.parameters())
    onnx = _write_onnx(args)
    if args.json:
        print(json.dumps({"export": args.export, "rid": rid, "test_accuracy": result["test_accuracy"],
                          "parameters": n, **({"onnx": onnx} if onnx else {})}, sort_keys=True))
        return 0
    print(f"final training {rid}: TEST accuracy {result['test_accuracy']:.4f} ({n} parameters)")
    print(f"exported to {args.export.rstrip('/')}/: dna.json, weights.safetensors, model.json, evo_model/, load.py, "
          f"{TEST_FILE}" + (", model.onnx" if onnx else ""))
    _print_onnx(onnx)
    print(f"  evaluate it with torch alone:  cd {args.export} && python load.py --data {TEST_FILE}")
    return 0


TEST_FILE = "test.npz"


def _write_onnx(args: argparse.Namespace) -> dict[str, Any] | None:
    """With ``--onnx``: model.onnx beside the export just written, checked (its record)."""
    if not args.onnx:
        return None
    from ..onnx_export import write_onnx

    return write_onnx(args.export)


def _print_onnx(onnx: dict[str, Any] | None) -> None:
    if onnx:
        c = onnx["check"]
        print(f"  model.onnx: onnxruntime and torch agree on {c['images']} test images (top-1 agreement "
              f"{c['top1_agreement']:.4f}, largest logit difference {c['max_abs_logit_diff']:.2g} < "
              f"{c['tolerance']:g})")


def run(args: argparse.Namespace) -> int:
    if args.onnx:   # before any work
        if not args.export:
            raise UserError("--onnx only applies with --export DIR")
        from ..onnx_export import require_onnx

        require_onnx()
    store, config = open_population(args.url)
    if args.retrained is not None:
        return export_retrained(store, args, retrained_rows(store))
    if (args.cells or args.filters or args.dataset) and not args.export:
        raise UserError("--cells, --filters and --dataset only apply with --export DIR")
    for name in ("cells", "filters"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} must be a positive integer")
    ind = best_individual(store, config, args.id)
    if not args.export:
        rows = retrained_rows(store)
        if args.json:
            print(json.dumps({**describe(ind), "retrained": rows}, sort_keys=True))
        else:
            print("\n".join([_summary(ind)] + _retrained_lines(rows)))
        return 0
    from ..export import export, parse_dataset

    info = export(ind, config, args.url, args.export, cells=args.cells, filters=args.filters,
                  dataset=parse_dataset(args.dataset) if args.dataset else None, seed=args.seed, force=args.force)
    onnx = _write_onnx(args)
    if onnx:
        info["onnx"] = onnx
    if args.json:
        print(json.dumps({"export": args.export, **info}, sort_keys=True))
        return 0
    print(_summary(ind))
    test = info["test_data"]
    print(f"exported to {args.export.rstrip('/')}/: dna.json, weights.safetensors, model.json, evo_model/, load.py"
          f", {test['file']}{', model.onnx' if onnx else ''} ({info['parameters']} parameters; {test['file']} "
          f"holds the {test['images']} test images of {test['dataset']})")
    if not info["trained"]:
        print(f"  NOTE: {info['weights_note']}")
    _print_onnx(onnx)
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
    p.add_argument("--retrained", nargs="?", const="best", metavar="RID",
                   help="a finished final training (evo retrain) instead: RID, or without it the one of the "
                        "individual with the best searched validation accuracy")
    p.add_argument("--onnx", action="store_true", help="with --export: also write model.onnx (takes pixel values "
                   "0..255, dynamic batch), checked against torch with onnxruntime on the test split; needs "
                   "pip install 'evo[onnx]'")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)

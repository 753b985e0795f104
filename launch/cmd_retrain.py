"""`evo retrain URL --top K`: train the search's best again, larger and longer, with the
papers' final-training protocol; report their test accuracy once, at the end.

What to train (one of):
- ``--top K`` (default 1): the K best individuals by validation fitness, alive or dead,
  one per distinct architecture (the test split is still unseen);
- ``--id ID`` (repeatable): those individuals;
- ``--arch NAME`` / ``--dna FILE``: a published architecture or a DNA file; URL may then be
  any directory (results go to URL/retrain/) and ``--dataset`` names the data when URL
  holds no run.

How: ``--preset`` (``paper`` for CIFAR, ``digits`` for digits by default; ``tiny`` for
tests) and any setting of ``evo.final_settings.FinalSettings`` as an option. NASNet
individuals are rebuilt at ``--cells N --filters F`` (default: the run's search size). A
2017-space individual is trained from scratch, or with ``--from-weights`` continues from its
trained weights (it must be alive, or dead with kept weights).

Where and by whom: every request is written to ``URL/retrain/{id}-{hash}.json`` (the same
request is the same retrain, wherever it is made), then trained here (``-j N``: N local
processes), or left for jobs with ``--no-train``; ``evo retrain URL --pending`` (what
``evo launch slurm|k8s URL --retrain`` runs) trains whatever is pending. Each request is
claimed by exactly one process at a time, checkpoints every few minutes and resumes from
its checkpoint when restarted; SIGTERM, SIGINT, SIGHUP and SIGUSR2 checkpoint and exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .errors import UserError
from .options import add_command, device, lease_seconds, non_negative_int, number, positive_int, positive_seconds

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)
SETTING_OPTIONS = {  # option dest -> FinalSettings field
    "epochs": "epochs", "batch_size": "batch_size", "lr": "learning_rate", "schedule": "schedule",
    "momentum": "momentum", "weight_decay": "weight_decay", "label_smoothing": "label_smoothing",
    "grad_clip": "grad_clip", "drop_path": "drop_path", "aux_weight": "aux_weight", "cutout": "cutout",
    "crop_padding": "crop_padding", "flip": "flip", "data": "data", "precision": "precision",
    "cuda_graphs": "cuda_graphs", "eval_batch_size": "eval_batch_size", "seed": "seed",
}


# ----- what to train -----

def settings_from_args(args: argparse.Namespace, dataset_name: str):
    """The FinalSettings the options ask for: the preset (default: by dataset) with the
    options given on top; ConfigError (one line, naming the option) for a bad value."""
    from evo.config import ConfigError
    from evo.final_settings import default_preset, preset

    base = preset(args.preset or default_preset(dataset_name))
    changes = {}
    for dest, name in SETTING_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is not None:
            changes[name] = None if (name == "learning_rate" and value == "dna") else value
    try:
        return base.with_changes(**changes)
    except ConfigError as exc:
        option = next((f"--{d.replace('_', '-')}" for d, n in SETTING_OPTIONS.items() if n == exc.field), None)
        raise UserError(f"{option}: {exc}" if option else str(exc)) from None


def _open(url: str, dataset: str | None):
    """(store, config or None, dataset spec): a population, or any directory with --dataset."""
    import storage
    from evo.config import ConfigError, RunConfig, check_dataset_spec
    from evo.spaces import for_config

    try:
        store = storage.open_store(url)
        has_config = store.has_config()
    except storage.StoreError as exc:
        raise UserError(str(exc)) from None
    config = None
    if has_config:
        try:
            config = RunConfig.from_json(store.read_config())
        except (ConfigError, storage.StoreError) as exc:
            raise UserError(f"{url}/config.json: {exc}") from None
        store = store.with_run(keep_best=config.keep_best, bounds=config.bounds,
                               dna_validator=for_config(config).parse)
    spec = dataset or (config.dataset if config else None)
    if spec is None:
        raise UserError(f"{url} holds no run (no config.json): give --dataset (digits, cifar10=PATH, ...)")
    try:
        name = check_dataset_spec(spec)
    except ConfigError as exc:
        raise UserError(f"--dataset: {exc}") from None
    if name == "synthetic":
        raise UserError("the synthetic dataset has no images to train on; give --dataset digits or cifar10=PATH")
    return store, config, spec


def _size(args: argparse.Namespace, kind: str, config) -> dict[str, int] | None:
    """NASNet: {cells, filters} from the options, else the published architecture's paper
    size (--arch), else the run's search size; None for the 2017 space (its DNA fixes it)."""
    if kind != "nasnet":
        if args.cells or args.filters:
            raise UserError("--cells/--filters apply only to NASNet architectures (a 2017-space DNA fixes its size)")
        return None
    default = (3, 24)
    if args.arch:
        from dna.published import PUBLISHED, canonical_name

        paper = PUBLISHED[canonical_name(args.arch)]
        default = (paper.cells_per_stack, paper.filters)
    elif config is not None and config.search_space == "nasnet":
        default = (config.nasnet.cells_per_stack, config.nasnet.filters)
    cells = args.cells or default[0]
    filters = args.filters or default[1]
    if filters < 2:
        raise UserError("--filters must be at least 2")
    return {"cells": cells, "filters": filters}


def _candidates(store, config, args) -> list[dict[str, Any]]:
    """The individuals to retrain, best first: ``{id, fitness, dna, dna_hash, weights}``."""
    if config is None:
        raise UserError(f"{store.url} holds no run: --top/--id need a population (or use --arch/--dna)")
    census = store.census(read_alive=True)
    people: dict[str, dict[str, Any]] = {}
    for h in census.history:
        people[h["id"]] = {"id": h["id"], "fitness": float(h["fitness"]), "dna": h["dna"], "dna_hash": h["dna_hash"],
                           "alive": False}
    for info in census.listed:
        commit = census.commits.get(info.id)
        if isinstance(commit, dict) and info.id not in people and info.id not in census.quarantined_ids:
            people[info.id] = {"id": info.id, "fitness": float(commit["fitness"]), "dna": commit["dna"],
                               "dna_hash": commit["dna_hash"], "alive": True}
    if args.id:
        missing = [i for i in args.id if i not in people]
        if missing:
            raise UserError(f"{store.url}: no individual {missing[0]!r} (neither alive nor in history/)")
        return [people[i] for i in args.id]
    best: dict[str, dict[str, Any]] = {}
    for p in sorted(people.values(), key=lambda p: (-p["fitness"], p["id"])):
        if args.from_weights and not p["alive"] and store.read_kept(p["id"]) is None:
            continue
        best.setdefault(p["dna_hash"], p)   # one per architecture: its best-scoring individual
    ranked = list(best.values())[:args.top]
    if not ranked:
        raise UserError(f"{store.url}: no individuals yet" + (" with trained weights" if args.from_weights else ""))
    return ranked


def build_requests(args: argparse.Namespace, store, config, spec: str) -> list[dict[str, Any]]:
    """The retrain requests the options ask for (not yet written)."""
    from evo.retrain_request import make_request

    settings = settings_from_args(args, spec.split("=", 1)[0])
    init = "weights" if args.from_weights else "scratch"
    if args.arch or args.dna:
        if args.from_weights:
            raise UserError("--from-weights needs individuals of a run (--top/--id): a bare architecture has no weights")
        label, source, dna = _named_dna(args)
        kind = dna.get("kind", "large_scale")
        return [make_request(label=label, source=source, dna=dna, dna_hash=_dna_hash(dna), dataset=spec,
                             settings=settings, size=_size(args, kind, config), init="scratch")]
    requests = []
    for p in _candidates(store, config, args):
        kind = p["dna"].get("kind", "large_scale")
        if args.from_weights and kind != "large_scale":
            raise UserError("--from-weights continues a 2017-space individual's training; NASNet "
                            "individuals are retrained from scratch (as in the 2019 paper)")
        source = {"kind": "individual", "id": p["id"], "fitness": p["fitness"], "run": store.url}
        if args.from_weights:
            ind = store.read_individual(p["id"]) if p["alive"] else store.read_kept(p["id"])
            if ind is None:
                raise UserError(f"{p['id']}: its weights are gone (it died, or they did not verify)")
            source["payload_sha256"] = _sha256(ind.weights)
        requests.append(make_request(label=p["id"], source=source, dna=p["dna"], dna_hash=p["dna_hash"],
                                     dataset=spec, settings=settings, size=_size(args, kind, config), init=init))
    return requests


def _named_dna(args: argparse.Namespace) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(label, source, DNA as a JSON object) of ``--arch NAME`` or ``--dna FILE``."""
    import dna as dna_lib

    if args.arch:
        try:
            from dna.published import canonical_name, published
        except ImportError:
            raise UserError("--arch: this evo has no published architectures (dna.published)") from None
        genome = published(args.arch)   # DNAError (one line) names the known ones
        name = canonical_name(args.arch)
        return name, {"kind": "arch", "name": name}, genome.to_dict()
    path = Path(args.dna)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{args.dna}: cannot read the DNA file: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{args.dna}: not JSON: {str(exc)[:120]}") from None
    if isinstance(obj, dict) and isinstance(obj.get("dna"), dict):
        obj = obj["dna"]   # a commit or history record, or an export's model record
    try:
        if isinstance(obj, dict) and obj.get("kind") == "nasnet":
            from dna.nasnet import nasnet_from_dict
            nasnet_from_dict(obj)
        else:
            dna_lib.from_dict(obj)
    except dna_lib.DNAError as exc:
        raise UserError(f"{args.dna}: {exc}") from None
    return path.stem or "dna", {"kind": "dna", "file": str(path)}, obj


def _dna_hash(d: dict[str, Any]) -> str:
    from storage import dna_hash

    return dna_hash(d)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# ----- training -----

class _Printer:
    """Progress of one process's retrains: a live line on a terminal, a line per epoch otherwise."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._live = False

    def __call__(self, rid: str, info: dict[str, Any]) -> None:
        from evo.retrain import eta_text

        state = info.get("state")
        if state == "progress":
            if not self.tty and not info.get("epoch_done"):
                return
            frac = info["step"] / max(1, info["total_steps"])
            bar = "#" * int(frac * 20)
            loss = f"{info['loss']:.4f}" if info.get("loss") is not None else "-"
            acc = f"{info['train_accuracy']:.4f}" if info.get("train_accuracy") is not None else "-"
            val = f" val {info['val_accuracy']:.4f}" if info.get("val_accuracy") is not None else ""
            line = (f"{rid}: [{bar:<20}] epoch {info['epoch']}/{info['epochs']} step {info['step']}/"
                    f"{info['total_steps']} loss {loss} acc {acc}{val} ETA {eta_text(info.get('eta_seconds'))}")
            self._line(line)
        elif state == "training":
            resumed = info.get("resumed_from")
            how = f"resumed from the checkpoint at step {resumed}" if resumed else "from the start"
            applied = info.get("applied") or {}
            on = [k for k in ("cosine", "drop_path", "aux_head", "cutout", "label_smoothing", "grad_clip")
                  if applied.get(k)]
            self._print(f"{rid}: training {info['epochs']} epochs ({info['total_steps']} steps, "
                        f"{applied.get('training_images')} images, {applied.get('precision')}) {how}; "
                        f"protocol: {', '.join(on) or 'plain SGD'}")
        elif state == "stopped":
            self._print(f"{rid}: stopped by {info.get('signal') or 'a signal'} at step {info.get('step', 0)}; "
                        "checkpoint saved: run again to resume")
        elif state == "lost":
            self._print(f"{rid}: another process took this retrain over (this one was presumed dead); stopped")
        elif state == "failed":
            self._print(f"{rid}: FAILED: {info.get('error')}")
        elif state == "done":
            self._print(f"{rid}: done; test accuracy {info['test_accuracy']:.4f}")

    def _line(self, line: str) -> None:
        if self.tty:
            print("\r" + line[:160].ljust(160), end="", file=self.stream, flush=True)
            self._live = True
        else:
            print(line, file=self.stream, flush=True)

    def _print(self, line: str) -> None:
        if self._live:
            print(file=self.stream)
            self._live = False
        print(line, file=self.stream, flush=True)


def _runner(store, args: argparse.Namespace, stop, progress=None):
    from evo.retrain import RetrainRunner, RunnerOptions

    from ._export import export_files

    options = RunnerOptions(device=args.device, lease=args.lease, checkpoint_seconds=args.checkpoint_seconds,
                            retry_failed=args.retry_failed)
    return RetrainRunner(store, exporter=export_files, options=options, progress=progress or _Printer(),
                         stop=stop, bounds=store.bounds)


def train_here(store, args: argparse.Namespace, rids: list[str] | None) -> tuple[list[Any], str | None]:
    """Train ``rids`` (None: every pending request) in this process; (reports, stop signal)."""
    from evo.stopping import StopRequested, StopSignals

    reports: list[Any] = []
    with StopSignals(STOP_SIGNALS) as stop:
        stop.keep_installed()
        try:
            reports = _runner(store, args, stop).run_pending(rids, done=reports)
        except StopRequested:  # between two retrains: nothing was being trained
            pass
    return reports, stop.requested


def train_in_processes(args: argparse.Namespace, rids: list[str]) -> int:
    """Train ``rids`` with ``args.jobs`` local processes (`evo retrain URL --pending --rid ...`),
    showing their progress from the store; Ctrl-C stops (and checkpoints) them."""
    from .cmd_launch import _die_with_parent, default_log_dir, stop_workers

    log_dir = default_log_dir(args.url) / "retrain"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(args.jobs):
        env = dict(os.environ)
        if args.device == "cpu" or args.device == "auto":
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
        cmd = [sys.executable, "-m", "launch", "retrain", args.url, "--pending", "--device", args.device,
               "--lease", f"{args.lease:g}", "--checkpoint-seconds", f"{args.checkpoint_seconds:g}"]
        for rid in rids:
            cmd += ["--rid", rid]
        log = open(log_dir / f"retrain-{i}.log", "ab")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                       preexec_fn=_die_with_parent), log_dir / f"retrain-{i}.log"))
        log.close()
    print(f"training {len(rids)} retrain(s) with {args.jobs} process(es); logs in {log_dir}/", flush=True)
    from storage import open_store

    store = open_store(args.url)
    try:
        while any(p.poll() is None for p, _ in procs):
            print(_progress_line(store, rids), flush=True)
            time.sleep(max(1.0, args.progress_interval))
    except KeyboardInterrupt:
        print("\nstopping (each process checkpoints first)...", flush=True)
        stop_workers(procs, grace=60.0)
        return 130
    return 0


def _progress_line(store, rids: list[str]) -> str:
    from evo.retrain import eta_text

    parts = []
    for rid in rids:
        s = store.retrain_state(rid)
        info = (s.beat or {}).get("info") or {}
        if s.state == "training" and "epoch" in info:
            parts.append(f"{rid[:24]} {info['epoch']}/{info['epochs']} ETA {eta_text(info.get('eta_seconds'))}")
        else:
            parts.append(f"{rid[:24]} {s.state}")
    return " | ".join(parts)


def report_table(store, rids: list[str]) -> list[dict[str, Any]]:
    """One row per retrain: source, searched validation accuracy, state and test accuracy."""
    rows = []
    for rid in rids:
        s = store.retrain_state(rid)
        req = s.request or {}
        src = req.get("source") or {}
        res = s.result or {}
        rows.append({"rid": rid, "state": s.state, "source": src.get("id") or src.get("name") or src.get("file"),
                     "validation_accuracy": src.get("fitness"), "size": req.get("size"),
                     "test_accuracy": res.get("test_accuracy"), "parameters": res.get("parameters"),
                     "epochs": res.get("epochs"), "train_seconds": res.get("train_seconds")})
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    print("retrain                                                 state     searched val  params    test accuracy")
    for r in rows:
        val = f"{r['validation_accuracy']:.4f}" if isinstance(r["validation_accuracy"], (int, float)) else "-"
        test = f"{r['test_accuracy']:.4f}" if isinstance(r["test_accuracy"], (int, float)) else "-"
        params = str(r["parameters"]) if r["parameters"] is not None else "-"
        print(f"{r['rid']:<55} {r['state']:<9} {val:<13} {params:<9} {test}")


def run(args: argparse.Namespace) -> int:
    chosen = sum(bool(x) for x in (args.top is not None, args.id, args.arch, args.dna, args.pending))
    if chosen > 1:
        raise UserError("choose one of --top, --id, --arch, --dna and --pending")
    if args.rid and not args.pending:
        raise UserError("--rid only applies with --pending")
    if args.pending:
        store, _, _ = _open_pending(args.url)
        rids = args.rid or None
        reports, stopped = train_here(store, args, rids)
        if args.json:
            print(json.dumps({"reports": [r.__dict__ for r in reports]}, sort_keys=True, default=str))
        for r in reports:
            if r.status == "busy":
                print(f"{r.rid}: being trained by another process; left to it")
            elif r.status == "already_done":
                print(f"{r.rid}: already done")
            elif r.status == "failed_before":
                print(r.error)
        counts = {s: sum(1 for r in reports if r.status == s) for s in ("done", "busy", "already_done", "failed")}
        print(f"evo retrain --pending: {counts['done']} trained here, {counts['busy']} being trained elsewhere, "
              f"{counts['already_done']} already done, {counts['failed']} failed", flush=True)
        if stopped:
            return 128 + int(getattr(signal, stopped, signal.SIGTERM))
        return 1 if any(r.status == "failed" for r in reports) else 0
    if args.top is None and not (args.id or args.arch or args.dna):
        args.top = 1
    store, config, spec = _open(args.url, args.dataset)
    requests = build_requests(args, store, config, spec)
    rids = []
    for req in requests:
        try:
            new = store.put_retrain_request(req["rid"], req)
        except ValueError as exc:
            raise UserError(f"{req['rid']}: {exc}") from None
        rids.append(req["rid"])
        src = req["source"]
        what = f"{src.get('id') or src.get('name') or src.get('file')}" + (
            f" (validation accuracy {src['fitness']:.4f})" if "fitness" in src else "")
        size = f" at N={req['size']['cells']}, F={req['size']['filters']}" if req.get("size") else ""
        print(f"{'queued' if new else 'already queued'} {req['rid']}: {what}{size}, "
              f"{req['settings']['epochs']} epochs on {req['settings']['data']} of {spec}"
              + (", continuing from its trained weights" if req["init"] == "weights" else ", from scratch"))
    if args.no_train:
        print(f"train them with: evo retrain {args.url} --pending   (on any machine that reaches the URL), or\n"
              f"                 evo launch slurm {args.url} -n {len(rids)} --retrain   /   "
              f"evo launch k8s {args.url} -n {len(rids)} --retrain --image IMAGE")
        return 0
    stopped = None
    if args.jobs > 1 and len(rids) > 1:
        code = train_in_processes(args, rids)
        if code:
            return code
    else:
        reports, stopped = train_here(store, args, rids)
        for r in reports:
            if r.status == "busy":
                print(f"{r.rid}: being trained by another process (see evo status {args.url})")
    rows = report_table(store, rids)
    if args.json:
        print(json.dumps({"retrains": rows}, sort_keys=True))
    else:
        print()
        _print_table(rows)
        note = "train+val" if requests and requests[0]["settings"]["data"] == "train+val" else "train"
        print(f"(trained on {note}; the test split was used once per retrain, after its training)")
    if stopped:
        return 128 + int(getattr(signal, stopped, signal.SIGTERM))
    return 1 if any(r["state"] == "failed" for r in rows) else 0


def _open_pending(url: str):
    import storage

    try:
        store = storage.open_store(url)
        if not store.list_retrains():
            raise UserError(f"{url}: no retrain requests (make them with evo retrain {url} --top K --no-train)")
    except storage.StoreError as exc:
        raise UserError(str(exc)) from None
    return store, None, None


def register(sub) -> None:
    from evo.final_settings import DATA_SPLITS, PRESETS, SCHEDULES

    p = add_command(sub, "retrain", help="train the best individuals again with the papers' final-training protocol",
                    description="Rebuild the best individuals of a search (or a named architecture, or a DNA file) "
                                "at the requested size and train each from scratch with the final-training "
                                "protocol (cosine decay, ScheduledDropPath, auxiliary head, cutout, ...); report "
                                "their test accuracy once, at the end. Results, checkpoints and the exported "
                                "model go to URL/retrain/. See docs/retrain.md.")
    what = p.add_argument_group("what to train (one of; default --top 1)")
    what.add_argument("--top", type=positive_int, metavar="K", help="the K best individuals by validation accuracy")
    what.add_argument("--id", action="append", metavar="ID", help="this individual (repeatable)")
    what.add_argument("--arch", metavar="NAME", help="a published architecture (e.g. amoebanet-a)")
    what.add_argument("--dna", metavar="FILE", help="a DNA JSON file (or a record that holds one)")
    what.add_argument("--pending", action="store_true",
                      help="train the store's pending retrain requests (what cluster jobs run)")
    what.add_argument("--rid", action="append", metavar="RID", help="with --pending: only this request (repeatable)")
    what.add_argument("--dataset", metavar="SPEC", help="the data (default: the run's; needed when URL holds no run)")
    what.add_argument("--cells", type=positive_int, metavar="N", help="NASNet: N cells per stack (default: the search's)")
    what.add_argument("--filters", type=positive_int, metavar="F", help="NASNet: F filters (default: the search's)")
    what.add_argument("--from-weights", action="store_true",
                      help="2017 space: continue training the individual's trained weights (default: from scratch)")
    how = p.add_argument_group("final-training settings (default: --preset paper for CIFAR, digits for digits)")
    how.add_argument("--preset", choices=tuple(PRESETS), help="start from these settings")
    how.add_argument("--epochs", type=positive_int, help="epochs of training")
    how.add_argument("--batch-size", type=positive_int, help="images per step")
    how.add_argument("--lr", type=_lr, metavar="LR|dna", help="initial learning rate, or 'dna' for the DNA's own")
    how.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (cosine: single period to 0)")
    how.add_argument("--momentum", type=number(0.0, low_open=False), help="SGD momentum")
    how.add_argument("--weight-decay", type=number(0.0, low_open=False), help="L2 weight decay")
    how.add_argument("--label-smoothing", type=number(0.0, low_open=False), help="label smoothing (0: off)")
    how.add_argument("--grad-clip", type=number(0.0, low_open=False), help="clip the global gradient norm (0: off)")
    how.add_argument("--drop-path", type=number(0.0, low_open=False),
                     help="ScheduledDropPath probability at the end of training (0: off)")
    how.add_argument("--aux-weight", type=number(0.0, low_open=False),
                     help="auxiliary head loss weight (0: no auxiliary head)")
    how.add_argument("--cutout", type=non_negative_int, metavar="PIXELS", help="cutout square side (0: off)")
    how.add_argument("--crop-padding", type=non_negative_int, metavar="PIXELS",
                     help="random-crop padding (default: the dataset's)")
    how.add_argument("--flip", dest="flip", action="store_true", default=None, help="random horizontal flips")
    how.add_argument("--no-flip", dest="flip", action="store_false", help="no flips")
    how.add_argument("--data", choices=DATA_SPLITS,
                     help="train on train+val (the papers) or train only (validation held out and reported)")
    how.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="auto: bf16 on CUDA, fp32 on CPU")
    how.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false", default=None,
                     help="do not capture the training step in a CUDA graph")
    how.add_argument("--eval-batch-size", type=positive_int, help="images per evaluation batch")
    how.add_argument("--seed", type=non_negative_int, help="seed of the initial weights, data order and drop path")
    run_ = p.add_argument_group("running")
    run_.add_argument("--device", type=device(), default="auto", help="auto | cpu | cuda | cuda:N")
    run_.add_argument("-j", "--jobs", type=positive_int, default=1, help="train with N local processes at once")
    run_.add_argument("--no-train", action="store_true", help="only write the requests (for evo launch ... --retrain)")
    run_.add_argument("--retry-failed", action="store_true", help="also retry requests whose training failed")
    run_.add_argument("--checkpoint-seconds", type=positive_seconds, default=300.0,
                      help="seconds between checkpoints")
    run_.add_argument("--lease", type=lease_seconds, default=120.0, metavar="SECONDS",
                      help="a claim whose holder is silent this long is taken over by the next process")
    run_.add_argument("--progress-interval", type=positive_seconds, default=10.0,
                      help="with -j: seconds between progress lines")
    run_.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run)


def _lr(text: str):
    if text == "dna":
        return "dna"
    return number(0.0)(text)


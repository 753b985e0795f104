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
tests) and any setting of ``evo.train.final_settings.FinalSettings`` as an option. NASNet
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
from typing import Any

from ..errors import UserError
from ..options import add_command, device, lease_seconds, non_negative_int, number, positive_int, positive_seconds
from ..views.retrain_report import Printer, print_table, progress_line, report_table
from .retrain_requests import build_requests, open_target

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)


# ----- training -----

def _runner(store, args: argparse.Namespace, stop, progress=None):
    from evo.train.retrain import RetrainRunner, RunnerOptions

    from ..export import export_files

    options = RunnerOptions(device=args.device, lease=args.lease, checkpoint_seconds=args.checkpoint_seconds,
                            retry_failed=args.retry_failed, datasets=tuple(getattr(args, "trusted_datasets", ())))
    return RetrainRunner(store, exporter=export_files, options=options, progress=progress or Printer(),
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
    from ..processes import default_log_dir, die_with_parent, stop_workers

    log_dir = default_log_dir(args.url) / "retrain"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(args.jobs):
        env = dict(os.environ)
        if args.device == "cpu" or args.device == "auto":
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
        cmd = [sys.executable, "-m", "launch", "retrain", args.url, "--pending", "--device", args.device,
               "--lease", f"{args.lease:g}", "--checkpoint-seconds", f"{args.checkpoint_seconds:g}"]
        if args.dataset:
            cmd += ["--dataset", args.dataset]
        for rid in rids:
            cmd += ["--rid", rid]
        log = open(log_dir / f"retrain-{i}.log", "ab")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                       preexec_fn=die_with_parent), log_dir / f"retrain-{i}.log"))
        log.close()
    print(f"training {len(rids)} retrain(s) with {args.jobs} process(es); logs in {log_dir}/", flush=True)
    from storage import open_store

    store = open_store(args.url)
    try:
        while any(p.poll() is None for p, _ in procs):
            print(progress_line(store, rids), flush=True)
            time.sleep(max(1.0, args.progress_interval))
    except KeyboardInterrupt:
        print("\nstopping (each process checkpoints first)...", flush=True)
        stop_workers(procs, grace=60.0)
        return 130
    return 0


def run(args: argparse.Namespace) -> int:
    chosen = sum(bool(x) for x in (args.top is not None, args.id, args.arch, args.dna, args.pending))
    if chosen > 1:
        raise UserError("choose one of --top, --id, --arch, --dna and --pending")
    if args.rid and not args.pending:
        raise UserError("--rid only applies with --pending")
    if args.pending:
        store, run_dataset = _open_pending(args.url)
        args.trusted_datasets = tuple(d for d in (run_dataset, args.dataset) if d)
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
    store, config, spec = open_target(args.url, args.dataset)
    args.trusted_datasets = tuple(d for d in (config.dataset if config else None, str(spec)) if d)
    requests = build_requests(args, store, config, spec)
    rids = []
    for req in requests:
        try:
            new = store.retrains.put_retrain_request(req["rid"], req)
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
        print_table(rows)
        note = "train+val" if requests and requests[0]["settings"]["data"] == "train+val" else "train"
        print(f"(trained on {note}; the test split was used once per retrain, after its training)")
    if stopped:
        return 128 + int(getattr(signal, stopped, signal.SIGTERM))
    return 1 if any(r["state"] == "failed" for r in rows) else 0


def _open_pending(url: str):
    """(store, the run's dataset spec or None): the store of ``url`` with its run's bounds when
    config.json checks out. A damaged config.json is left to ``evo check``: then no dataset
    path but those given with --dataset is trusted."""
    import storage
    from evo.config import ConfigError, RunConfig

    try:
        store = storage.open_store(url)
        if not store.retrains.list_retrains():
            raise UserError(f"{url}: no retrain requests (make them with evo retrain {url} --top K --no-train)")
        config = None
        if store.runinfo.has_config():
            try:
                config = RunConfig.from_json(store.runinfo.read_config())
            except (ConfigError, storage.StoreError) as exc:
                print(f"{url}/config.json: {exc}; the run's own dataset is not trusted", file=sys.stderr)
    except storage.StoreError as exc:
        raise UserError(str(exc)) from None
    if config is None:
        return store, None
    return store.with_run(keep_best=config.keep_best, bounds=config.bounds), str(config.dataset)


def register(sub) -> None:
    from evo.train.final_settings import DATA_SPLITS, PRESETS, SCHEDULES

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
    what.add_argument("--dataset", metavar="SPEC",
                      help="the data (default: the run's; needed when URL holds no run); with --pending: also "
                           "train requests naming this dataset (a request from the store may name no other "
                           "than the run's own)")
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


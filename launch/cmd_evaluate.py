"""`evo evaluate DIR --dataset digits|cifar10=PATH`: the test accuracy of an exported model.

This is the only command that touches a dataset's **test** split: evolution selects on the
validation split alone, so the test accuracy of the exported winner is an honest estimate.
The export is loaded with ``dna.portable`` (the code copied into it as ``evo_model/``),
never by executing files from DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .errors import UserError
from .options import device, positive_int


def run(args: argparse.Namespace) -> int:
    import torch

    import dna.portable as portable
    from evo.data import DatasetError, read_dataset

    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        raise UserError(f"{args.dir} is a file, not an export directory (made by evo best --export DIR)")
    try:
        model = portable.load(args.dir, args.device)
    except portable.ExportError as exc:
        raise UserError(str(exc)) from None
    except RuntimeError as exc:  # e.g. a CUDA device that is not there
        raise UserError(f"{args.device}: {str(exc).splitlines()[0]}") from None
    info = model.info
    spec = args.dataset or info.get("dataset")
    if not spec:
        raise UserError(f"{args.dir}/model.json names no dataset; pass --dataset")
    try:
        host = read_dataset(spec)
    except DatasetError as exc:
        raise UserError(str(exc)) from None
    want = tuple(info["architecture"]["input_shape"])
    if tuple(host.input_shape) != want or host.num_classes != info["architecture"]["num_classes"]:
        raise UserError(f"{spec}: images {host.input_shape} with {host.num_classes} classes do not fit the "
                        f"model ({want}, {info['architecture']['num_classes']} classes)")
    x_np, y_np = (host.test_x, host.test_y) if args.split == "test" else (host.val_x, host.val_y)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    batch = args.batch_size or int(info.get("eval_batch_size") or 1000)
    t0 = time.perf_counter()
    with _Progress(f"evaluating on {len(y)} {args.split} images", len(y)) as bar:
        try:
            accuracy = portable.accuracy(model, x, y, batch, progress=bar.advance)
        except portable.ExportError as exc:
            raise UserError(f"{spec}: {exc}") from None
    correct = round(accuracy * len(y))
    result = {"dir": args.dir, "id": info.get("id"), "dataset": spec, "split": args.split,
              "accuracy": accuracy, "images": len(y), "correct": correct, "trained": info.get("trained"),
              "validation_accuracy": info.get("validation_accuracy"), "seconds": time.perf_counter() - t0}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"{args.split} accuracy {accuracy:.4f} ({correct}/{len(y)} images of {spec}) "
              f"for {info.get('id')} (validation accuracy during the search: "
              f"{info.get('searched_validation_accuracy', info.get('validation_accuracy')):.4f})")
        if not info.get("trained"):
            print(f"NOTE: {info.get('weights_note', 'the weights are untrained')}")
    return 0


class _Progress:
    """A progress bar on a terminal (rich when installed), nothing otherwise."""

    def __init__(self, description: str, total: int):
        self.description, self.total = description, total
        self._bar = None

    def __enter__(self):
        if sys.stderr.isatty():
            try:
                from rich.progress import Progress

                self._bar = Progress(transient=True)
                self._bar.start()
                self._task = self._bar.add_task(self.description, total=self.total)
            except ImportError:
                print(self.description + "...", file=sys.stderr, flush=True)
        return self

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="test accuracy of an exported model (`evo best --export`)",
                       description="Load a model exported by `evo best --export DIR` and report its "
                                   "accuracy on the dataset's test split (the only use of the test split).")
    p.add_argument("dir", help="export directory")
    p.add_argument("--dataset", help="digits | cifar10=PATH | cifar100=PATH (default: the run's, from model.json)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="test, or val (to compare with the search's validation accuracy)")
    p.add_argument("--device", type=device(auto=False), default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=positive_int, help="images per forward pass (default: the run's "
                   "evaluation batch, from model.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)

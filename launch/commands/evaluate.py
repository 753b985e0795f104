"""`evo evaluate DIR [--dataset SPEC | --images FOLDER]`: the test accuracy of an exported model.

This is the only command that touches a dataset's **test** split: evolution selects on the
validation split alone, so the test accuracy of the exported winner is an honest estimate.
The export is loaded with ``dna.portable`` (the code copied into it as ``evo_model/``),
never by executing files from DIR.

For a run on the user's own images, the default is the export's ``test.npz``: the run's
test split exactly as its decoded cache held it. ``--images FOLDER`` evaluates image files
in class folders (``FOLDER/<class>/<image>``), preprocessed as in training.

``--onnx`` scores the export's ``model.onnx`` (``evo best --export DIR --onnx``) with
onnxruntime instead of the torch model, on the same images and with the same output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from evo.errors import one_line

from ..errors import UserError
from ..options import device, positive_int


def run(args: argparse.Namespace) -> int:
    result, info = evaluate(args)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        searched = info.get("searched_validation_accuracy", info.get("validation_accuracy"))
        print(f"{args.split} accuracy {result['accuracy']:.4f} ({result['correct']}/{result['images']} images of "
              f"{result['dataset']}) for {info.get('id')}{' (model.onnx, onnxruntime)' if args.onnx else ''}"
              # a published architecture retrained (evo retrain --arch) was never searched
              + (f" (validation accuracy during the search: {searched:.4f})"
                 if isinstance(searched, (int, float)) else ""))
        if not info.get("trained"):
            print(f"NOTE: {info.get('weights_note', 'the weights are untrained')}")
    return 0


def evaluate(args: argparse.Namespace) -> tuple[dict, dict]:
    """`evo evaluate`'s work (and the Python API's ``Model.evaluate()``) for parsed options:
    the accuracy of the export in ``args.dir`` on the split asked for (the ``--json``
    object) and the export's model.json. UserError when the export, dataset or device
    cannot be used."""
    import torch

    import dna.portable as portable
    from evo.data.base import DatasetError
    from evo.data.datasets import read_dataset
    from evo.data.spec import DatasetSpec

    if args.onnx:   # before any work
        from ..onnx_export import require_onnx

        require_onnx()
        if args.device != "cpu":
            raise UserError("--onnx runs model.onnx with onnxruntime on the CPU; leave out --device")
    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        raise UserError(f"{args.dir} is a file, not an export directory (made by evo best --export DIR)")
    if args.onnx:
        from ..onnx_export import load_onnx, onnx_accuracy

        model = load_onnx(args.dir)
    else:
        try:
            model = portable.load(args.dir, args.device)
        except portable.ExportError as exc:
            raise UserError(str(exc)) from None
        except RuntimeError as exc:  # e.g. a CUDA device that is not there
            raise UserError(f"{args.device}: {one_line(exc)}") from None
    info = model.info
    spec = args.dataset or info.get("dataset")
    if not spec and not args.images:
        raise UserError(f"{args.dir}/model.json names no dataset; pass --dataset")
    if args.images:
        if args.dataset:
            raise UserError("give --dataset or --images, not both")
        x, y, spec = _image_folder(args, portable, info)
    elif _use_test_npz(args, info):
        x, y, spec = _test_npz(args, portable, info)
    else:
        try:
            dataset = DatasetSpec.parse(spec)
            host = read_dataset(dataset, settings=_data_settings(dataset, info),
                                splits=("train", args.split))
        except DatasetError as exc:
            raise UserError(str(exc)) from None
        want = tuple(info["architecture"]["input_shape"])
        if tuple(host.input_shape) != want or host.num_classes != info["architecture"]["num_classes"]:
            raise UserError(f"{spec}: images {host.input_shape} with {host.num_classes} classes do not fit the "
                            f"model ({want}, {info['architecture']['num_classes']} classes)")
        x_np, y_np = (host.test_x, host.test_y) if args.split == "test" else (host.val_x, host.val_y)
        if len(y_np) == 0:
            raise UserError(f"{spec}: the {args.split} split holds no images")
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    batch = args.batch_size or int(info.get("eval_batch_size") or 1000)
    t0 = time.perf_counter()
    with _Progress(f"evaluating on {len(y)} {args.split} images", len(y)) as bar:
        try:
            if args.onnx:
                accuracy = onnx_accuracy(model, x, y, batch, progress=bar.advance)
            else:
                accuracy = portable.accuracy(model, x, y, batch, progress=bar.advance)
        except portable.ExportError as exc:
            raise UserError(f"{spec}: {exc}") from None
    correct = round(accuracy * len(y))
    result = {"dir": args.dir, "id": info.get("id"), "dataset": spec, "split": args.split,
              "accuracy": accuracy, "images": len(y), "correct": correct, "trained": info.get("trained"),
              "validation_accuracy": info.get("validation_accuracy"), "seconds": time.perf_counter() - t0,
              **({"model": "model.onnx (onnxruntime)"} if args.onnx else {})}
    return result, info


def _data_settings(spec, info: dict):
    """The run's data settings (model.json) for a user dataset ``spec`` (a parsed
    :class:`evo.data.spec.DatasetSpec`), with the size and colour the run resolved, so that
    its images become what the model was trained on."""
    from evo.config import ConfigError, DataSettings

    if not spec.is_user:
        return None
    saved = info.get("data_settings") if isinstance(info.get("data_settings"), dict) else {}
    prep = info.get("preprocessing") if isinstance(info.get("preprocessing"), dict) else {}
    try:
        settings = DataSettings(**saved)
        if prep.get("size") is not None or prep.get("color"):
            from dataclasses import replace

            settings = replace(settings, image_size=prep.get("size") or settings.image_size,
                               color=prep.get("color") or settings.color)
        return settings
    except (TypeError, ConfigError) as exc:
        raise UserError(f"{spec}: the export's data settings do not apply: {exc}") from None


def _use_test_npz(args: argparse.Namespace, info: dict) -> bool:
    """A user-dataset run's own test split is the export's test.npz (exactly what its cache held)."""
    from evo.data.base import DatasetError
    from evo.data.spec import DatasetSpec

    if args.dataset or args.split != "test" or not os.path.isfile(os.path.join(args.dir, "test.npz")):
        return False
    try:
        return DatasetSpec.parse(info.get("dataset")).is_user
    except DatasetError:
        return False


def _test_npz(args: argparse.Namespace, portable, info: dict):
    path = os.path.join(args.dir, "test.npz")
    try:
        arrays = portable.read_npz(path)
    except portable.ExportError as exc:
        raise UserError(str(exc)) from None
    if "x" not in arrays or "y" not in arrays or int(arrays["y"].shape[0]) == 0:
        raise UserError(f"{path}: no test images (the run has no test split: --test-fraction 0?); "
                        "evaluate on --images FOLDER or --split val")
    return arrays["x"], arrays["y"], f"{info.get('dataset')} (the run's test split, {path})"


def _image_folder(args: argparse.Namespace, portable, info: dict):
    try:
        got = portable.read_images(args.images, info)
    except portable.ExportError as exc:
        raise UserError(str(exc)) from None
    if got.y is None:
        raise UserError(f"{args.images}: the images are not in class folders ({args.images}/<class>/<image>), so "
                        "there is nothing to score; `python load.py --images` in the export prints predictions")
    for path, why in got.skipped[:5]:
        print(f"evo evaluate: skipped {path}: {why}", file=sys.stderr)
    if got.skipped:
        print(f"evo evaluate: {len(got.skipped)} unreadable image(s) skipped", file=sys.stderr)
    return got.x, got.y, f"imagefolder {args.images}"


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
    p.add_argument("--dataset", help="digits | cifar10=PATH | cifar100=PATH | imagefolder=PATH | npz=FILE | "
                   "hf=PATH (default: the run's, from model.json; for your own images: the export's test.npz)")
    p.add_argument("--images", metavar="FOLDER", help="image files in class folders (FOLDER/<class>/<image>), "
                   "preprocessed as in training; the split option does not apply")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="test, or val (to compare with the search's validation accuracy)")
    p.add_argument("--device", type=device(auto=False), default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=positive_int, help="images per forward pass (default: the run's "
                   "evaluation batch, from model.json)")
    p.add_argument("--onnx", action="store_true", help="score the export's model.onnx with onnxruntime (CPU) "
                   "instead of the torch model (export with evo best --export DIR --onnx; needs "
                   "pip install 'evo[onnx]')")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)

"""evo's portable model code: load an exported model with PyTorch and the standard library alone.

This module and its siblings ``portable_net`` (the large-scale network), ``portable_io``
(JSON, safetensors and .npz readers), for NASNet ``nasnet`` and ``build_nasnet``, and for
NAS-Bench-201 ``nasbench201`` and ``build_nasbench201`` are
modules of the evo source tree (``dna.build`` builds its networks with
``portable_net.PlanNet``) and, copied verbatim, the package ``evo_model/`` of every model
that ``evo best --export DIR`` writes. So an exported model runs on a machine that has torch
and nothing else of evo, and it is the same code that trained it. They import only torch,
the standard library and each other, relatively.

An export directory holds:

- ``model.json``: what to build (``architecture``; a NASNet one names its ``stem``, ``cifar``
  or ``imagenet``, and is CIFAR without one), how inputs are normalised, provenance
  (individual id, run, validation accuracy) and whether the weights are trained;
- ``dna.json``: the individual's DNA, exactly as evolution stored it;
- ``weights.safetensors``: the weights (read with torch alone; never pickle);
- ``evo_model/`` (these modules) and ``load.py`` (``python load.py DIR --data test.npz``);
- ``test.npz``: the run's test split.

For a run on the user's own images, ``model.json`` also holds ``classes`` (the class names
in label order) and ``preprocessing`` (how an image file became the pixels the model was
trained on: colour, size, crop or squash; ``portable_images`` does it, with Pillow), so
:func:`read_images` turns new image files into exactly such inputs
(``python load.py --images DIR``).

Use::

    import evo_model
    model = evo_model.load("DIR")                  # a torch.nn.Module, eval mode, on the CPU
    logits = model(images)                         # images: (N, C, H, W), pixel values 0..255
    acc = evo_model.accuracy(model, images, labels)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .portable_images import ImageProblem, Preprocessing, is_image_name, preprocess_image
from .portable_io import ExportError, read_json_file, read_npz, read_safetensors
from .portable_net import PlanNet

EXPORT_FORMAT = 1
MODEL_FILE = "model.json"
DNA_FILE = "dna.json"
WEIGHTS_FILE = "weights.safetensors"

__all__ = ["EXPORT_FORMAT", "MODEL_FILE", "DNA_FILE", "WEIGHTS_FILE", "ExportError", "ExportedModel",
           "ImageSet", "accuracy", "build_network", "load", "main", "read_images", "read_json_file", "read_npz",
           "read_safetensors"]


# ----- the exported classifier -----

class ExportedModel(nn.Module):
    """An evolved network with its input normalisation: takes raw pixel values (0..255).

    ``net`` is the network itself (it expects normalised input); ``info`` is ``model.json``.
    """

    def __init__(self, net: nn.Module, mean: list[float], std: list[float], info: dict[str, Any]) -> None:
        super().__init__()
        self.net = net
        self.info = info
        shape = (1, len(mean), 1, 1)
        # The same float32 scale and shift the trainer applies, so accuracies reproduce exactly.
        self.register_buffer("scale", torch.tensor([1.0 / s for s in std], dtype=torch.float32).view(shape),
                             persistent=False)
        self.register_buffer("shift", torch.tensor([-m / s for m, s in zip(mean, std)],
                                                   dtype=torch.float32).view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images ``(N, C, H, W)`` given as pixel values 0..255 (uint8 or float)."""
        return self.net(x.float().mul(self.scale).add(self.shift))


def build_network(info: dict[str, Any], dna: dict[str, Any]) -> nn.Module:
    """The (freshly initialised) network that ``model.json``'s ``architecture`` describes."""
    arch = info.get("architecture")
    if not isinstance(arch, dict):
        raise ExportError(f"{MODEL_FILE}: no architecture object")
    kind = arch.get("kind")
    if kind == "large_scale":
        return PlanNet(arch)
    if kind == "nasnet":
        from .build_nasnet import build_nasnet
        from .nasnet import nasnet_from_dict

        stem = arch.get("stem", "cifar")  # exports written before the ImageNet stem have none: CIFAR
        if stem not in ("cifar", "imagenet"):
            raise ExportError(f"{MODEL_FILE}: architecture stem must be cifar or imagenet, got {stem!r}"[:200])
        try:
            return build_nasnet(nasnet_from_dict(dna), tuple(arch["input_shape"]), int(arch["num_classes"]),
                                cells_per_stack=int(arch["cells_per_stack"]), filters=int(arch["filters"]),
                                stem=stem)
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"cannot build the NASNet model: {exc}") from None
    if kind == "nasbench201":
        from .build_nasbench201 import build_nasbench201
        from .nasbench201 import nb201_from_dict

        try:
            return build_nasbench201(nb201_from_dict(dna), tuple(arch["input_shape"]), int(arch["num_classes"]),
                                     channels=int(arch["channels"]), cells_per_stage=int(arch["cells_per_stage"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"cannot build the NAS-Bench-201 model: {exc}") from None
    raise ExportError(f"{MODEL_FILE}: unknown architecture kind {kind!r}")


def load(directory: str, device: str | torch.device = "cpu") -> ExportedModel:
    """The exported model in ``directory``, weights loaded, in eval mode, on ``device``.

    Raises ExportError (one line, naming the file) when the export is incomplete or damaged.
    """
    info = read_json_file(os.path.join(directory, MODEL_FILE))
    if not isinstance(info, dict) or info.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{os.path.join(directory, MODEL_FILE)}: not an evo export of format {EXPORT_FORMAT}")
    dna = read_json_file(os.path.join(directory, DNA_FILE))
    net = build_network(info, dna)
    weights_path = os.path.join(directory, WEIGHTS_FILE)
    state = read_safetensors(weights_path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ExportError(f"{weights_path}: does not fit the architecture: "
                          f"{' '.join(first[1:2]) or first[0]}".strip()) from None
    norm = info.get("normalization") or {}
    mean, std = norm.get("mean"), norm.get("std")
    channels = int(info["architecture"]["input_shape"][0])
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == channels
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in mean + std)
            and all(s > 0 for s in std)):
        raise ExportError(f"{MODEL_FILE}: normalization needs {channels} finite means and positive stds")
    model = ExportedModel(net, [float(m) for m in mean], [float(s) for s in std], info)
    return model.to(device).eval()


class ImageSet:
    """Image files made into model inputs: ``x`` uint8 ``(N, C, H, W)``, ``y`` int64 labels
    (None when the files are not in class folders), ``files`` (the path of each image),
    ``skipped`` (``(path, reason)`` of files that could not be decoded)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None, files: list[str],
                 skipped: list[tuple[str, str]]) -> None:
        self.x, self.y, self.files, self.skipped = x, y, files, skipped


def read_images(directory: str, info: dict[str, Any]) -> ImageSet:
    """The image files under ``directory`` preprocessed as ``info`` (model.json) says.

    ``directory/<class>/...`` (every class a name in ``info["classes"]``) gives labelled
    images; image files directly in ``directory`` give unlabelled ones. Files that cannot be
    decoded are skipped (listed in ``skipped``). ExportError (one line) when the model was
    not trained on image files (no ``preprocessing``), a folder is not one of its classes,
    or there are no images.
    """
    prep_info = info.get("preprocessing")
    shape = tuple(info["architecture"]["input_shape"])
    if not isinstance(prep_info, dict):
        raise ExportError(f"{MODEL_FILE}: this model was not trained on image files (no preprocessing recorded); "
                          "give it arrays (--data FILE.npz)")
    try:
        prep = Preprocessing.from_dict(prep_info)
    except ValueError as exc:
        raise ExportError(f"{MODEL_FILE}: preprocessing: {exc}") from None
    if not os.path.isdir(directory):
        raise ExportError(f"{directory}: not a folder of images")
    names = sorted(n for n in os.listdir(directory) if not n.startswith("."))
    classes = info.get("classes") or []
    index = {name: i for i, name in enumerate(classes)}
    folders = [n for n in names if os.path.isdir(os.path.join(directory, n))]
    items: list[tuple[str, int | None]] = []
    if folders:
        for name in folders:
            if name not in index:
                raise ExportError(f"{os.path.join(directory, name)}: not one of the model's classes "
                                  f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
            for root, dirs, files in os.walk(os.path.join(directory, name)):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                items += [(os.path.join(root, f), index[name]) for f in sorted(files) if is_image_name(f)]
    else:
        items = [(os.path.join(directory, n), None) for n in names if is_image_name(n)]
    if not items:
        raise ExportError(f"{directory}: no images (expected {directory}/<class>/<image> or image files)")
    pixels, labels, kept, skipped = [], [], [], []
    for path, label in items:
        try:
            with open(path, "rb") as f:
                data, chw = preprocess_image(f.read(), prep)
        except (OSError, ImageProblem) as exc:
            skipped.append((path, str(exc) or type(exc).__name__))
            continue
        if chw != shape:
            skipped.append((path, f"became {chw}, the model takes {shape}"))
            continue
        pixels.append(torch.frombuffer(bytearray(data), dtype=torch.uint8).view(chw[1], chw[2], chw[0]))
        labels.append(label)
        kept.append(path)
    if not pixels:
        raise ExportError(f"{directory}: none of {len(items)} images could be decoded (first: "
                          f"{skipped[0][0]}: {skipped[0][1]})")
    x = torch.stack(pixels).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(labels, dtype=torch.long) if folders else None
    return ImageSet(x, y, kept, skipped)


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The predicted class of each image ``(N, C, H, W)`` (pixel values 0..255)."""
    device = next(model.parameters()).device
    out = [model(images[lo:lo + batch_size].to(device)).argmax(dim=1).cpu()
           for lo in range(0, int(images.shape[0]), batch_size)]
    return torch.cat(out)


@torch.inference_mode()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             progress: Callable[[int], None] | None = None) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``images`` and ``labels``, ``batch_size`` at a time.

    Each batch goes to the device of the model's parameters, where the correct predictions are
    counted: the device is synced once, at the end. ``progress(n)``, when given, is called
    after each batch of ``n`` images is issued. ExportError when there are no images, when
    images and labels differ in number, or for a batch size below 1.
    """
    n = int(labels.shape[0])
    if n == 0 or int(images.shape[0]) != n:
        raise ExportError(f"need as many labels as images and at least one ({images.shape[0]} images, {n} labels)")
    if batch_size < 1:
        raise ExportError(f"batch size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.long, device=device)
    for lo in range(0, n, batch_size):
        out = model(images[lo:lo + batch_size].to(device))
        correct += (out.argmax(dim=1) == labels[lo:lo + batch_size].to(device=device, dtype=torch.long)).sum()
        if progress is not None:
            progress(min(batch_size, n - lo))
    return int(correct.item()) / n


def main(argv: list[str] | None = None, default_dir: str | None = None) -> int:
    """``python load.py [DIR] [--data FILE.npz | --images FOLDER] [--json]``: describe or
    evaluate the export (an image folder with class folders gives the accuracy; image files
    directly in it, each one's predicted class)."""
    p = argparse.ArgumentParser(prog="load.py", description="Load an exported evo model (torch only) "
                                "and report its accuracy on an .npz of images (x: N,C,H,W pixel values "
                                "0..255) and labels (y), or on image files (Pillow needed).")
    p.add_argument("dir", nargs="?", default=default_dir or ".", help="export directory (default: here)")
    p.add_argument("--data", help=".npz file with arrays x (images) and y (labels)")
    p.add_argument("--images", metavar="FOLDER", help="image files: FOLDER/<class>/* (accuracy) or FOLDER/* "
                   "(predictions), preprocessed as in training (model.json's preprocessing)")
    p.add_argument("--x", default="x", help="name of the images array (default x)")
    p.add_argument("--y", default="y", help="name of the labels array (default y)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        model = load(args.dir, args.device)
        info = model.info
        result: dict[str, Any] = {
            "id": info.get("id"), "kind": info["architecture"]["kind"],
            "parameters": sum(t.numel() for t in model.net.parameters()),
            "trained": info.get("trained"), "validation_accuracy": info.get("validation_accuracy"),
        }
        if args.data:
            arrays = read_npz(args.data)
            missing = [k for k in (args.x, args.y) if k not in arrays]
            if missing:
                raise ExportError(f"{args.data}: no array named {missing[0]!r} (has {', '.join(sorted(arrays))})")
            x, y = arrays[args.x], arrays[args.y]
            want = tuple(info["architecture"]["input_shape"])
            if x.dim() != 4 or tuple(x.shape[1:]) != want:
                raise ExportError(f"{args.data}: images must be (N, {', '.join(map(str, want))}), "
                                  f"got {tuple(x.shape)}")
            batch = args.batch_size or int(info.get("eval_batch_size") or 1000)
            result.update(accuracy=accuracy(model, x, y, batch), images=int(y.shape[0]), data=args.data)
        if args.images:
            got = read_images(args.images, info)
            batch = args.batch_size or int(info.get("eval_batch_size") or 1000)
            result.update(images=int(got.x.shape[0]), data=args.images, skipped=len(got.skipped))
            if got.y is not None:
                result["accuracy"] = accuracy(model, got.x, got.y, batch)
            else:
                names = info.get("classes") or []
                result["predictions"] = [
                    {"file": f, "class": int(c), "name": names[int(c)] if int(c) < len(names) else str(int(c))}
                    for f, c in zip(got.files, predict(model, got.x, batch).tolist())]
            for path, why in got.skipped[:5]:
                print(f"load.py: skipped {path}: {why}", file=sys.stderr)
    except ExportError as exc:
        print(f"load.py: error: {exc}", file=sys.stderr)
        return 2
    try:
        print_result(result, info, as_json=args.json)
        sys.stdout.flush()
    except BrokenPipeError:   # the reader stopped early (`load.py --images DIR | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def print_result(result: dict[str, Any], info: dict[str, Any], *, as_json: bool) -> None:
    """Print what :func:`main` found: one JSON object, or the summary line, the accuracy and
    one ``FILE<TAB>CLASS`` line per predicted image."""
    if as_json:
        print(json.dumps(result, sort_keys=True))
    else:
        val, test = result["validation_accuracy"], info.get("test_accuracy")
        if not result["trained"]:
            how = "untrained weights (rebuilt at another size)"
        elif isinstance(test, (int, float)):
            how = f"final training (evo retrain), test accuracy {test:.4f} when it was trained"
        else:
            how = f"validation accuracy {val:.4f}" if val is not None else "trained weights"
        print(f"{result['kind']} model {result['id']}: {result['parameters']} parameters, {how}")
        if "accuracy" in result:
            print(f"accuracy on {result['data']}: {result['accuracy']:.4f} ({result['images']} images"
                  + (f", {result['skipped']} unreadable skipped)" if result.get("skipped") else ")"))
        for row in result.get("predictions", []):
            print(f"{row['file']}\t{row['name']}")


if __name__ == "__main__":
    sys.exit(main())

"""An export's model as ONNX (``model.onnx``), checked against torch with onnxruntime.

``evo best --export DIR --onnx`` (and ``--retrained``) calls :func:`write_onnx` after the torch
export is written: the graph is the exported model itself (``dna.portable.ExportedModel``), so
it takes the same input as ``load.py``: images ``(batch, C, H, W)`` of pixel values 0..255
(float32; the normalisation is inside the graph), with a dynamic batch dimension, and gives
logits ``(batch, classes)``. Before ``model.onnx`` is kept, onnxruntime runs it on the
export's test split beside torch: every image's top-1 class must be the same and the largest
absolute logit difference below ``tolerance`` (1e-4) times the largest absolute torch logit
when that exceeds 1 (fp32 rounding grows with the logits' size: a model whose logits reach 30
may differ by 3e-3 after thousands of reordered additions; a wrong op or normalisation differs
by far more), or the file is removed and a one-line :class:`UserError` says by how much they
differ. The tests hold the digits models of every space to the plain 1e-4. The check's numbers are recorded in
``model.json`` under ``"onnx"`` (with the file's SHA-256, so that a stale ``model.onnx`` is
never scored as this export's). ``evo evaluate DIR --onnx`` scores the file with
:func:`load_onnx` and :func:`onnx_accuracy`.

The graph is written by torch's TorchScript-based exporter (``torch.onnx.export(...,
dynamo=False)``): it needs only ``onnx`` beside torch, where the ``torch.export`` path also
needs ``onnxscript``; every network of evo's spaces (the large-scale DAG with its resizes and
channel pads, NASNet and NAS-Bench-201 cells) is a fixed sequence of ops once its input size
is known, which is what tracing captures. onnx and onnxruntime are the ``onnx`` extra
(``pip install 'evo[onnx]'``); :func:`require_onnx` says so in one line when they are missing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evo.errors import one_line

from .errors import UserError

ONNX_FILE = "model.onnx"
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
OPSET = 17
# Largest |logit difference| between onnxruntime and torch (fp32, CPU) that an export accepts,
# relative to the largest |logit| when that is above 1.
TOLERANCE = 1e-4
CHECK_BATCH = 256
INSTALL_HINT = "pip install 'evo[onnx]' (onnx and onnxruntime)"


def require_onnx() -> None:
    """Raise a one-line UserError unless onnx and onnxruntime can be imported."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            importlib.import_module(name)
        except (ImportError, OSError):   # not installed, or a broken install (a missing shared library)
            missing.append(name)
    if missing:
        raise UserError(f"--onnx needs {' and '.join(missing)}: {INSTALL_HINT}")


def write_onnx(export_dir: str | os.PathLike, *, images: Any = None, labels: Any = None,
               tolerance: float = TOLERANCE, batch_size: int = CHECK_BATCH) -> dict[str, Any]:
    """Write ``export_dir/model.onnx`` from the torch export in ``export_dir`` (made by ``evo best
    --export``), check it with onnxruntime against torch and record the check in model.json.

    The check runs on ``images`` (N, C, H, W; pixel values 0..255) and ``labels`` when given,
    else on the export's ``test.npz``, ``batch_size`` images at a time plus one single image
    (so the batch dimension is shown to be dynamic). Returns the record written to model.json's
    ``"onnx"``: ``file``, ``sha256``, ``opset``, ``input``, ``output`` and ``check`` (``images``,
    ``top1_agreement``, ``max_abs_logit_diff``, ``max_abs_logit``, ``tolerance``, ``allowed``,
    ``torch_accuracy``, ``onnx_accuracy``, the versions used). Raises UserError (one line) when
    onnx is missing, the export does not load, or onnxruntime and torch disagree (a top-1 class
    differs, or a logit by ``tolerance * max(1, largest |logit|)`` or more); ``model.onnx`` is
    then not left behind.
    """
    require_onnx()
    import dna.portable as portable

    if batch_size < 1:
        raise UserError(f"the ONNX check's batch size must be >= 1, got {batch_size}")
    out = Path(export_dir)
    final, partial = out / ONNX_FILE, out / (ONNX_FILE + ".partial")
    for stale in (final, partial):      # never leave an earlier export's file beside this one
        _unlink(stale)
    try:
        model = portable.load(str(out))
    except portable.ExportError as exc:
        raise UserError(f"the export in {export_dir} does not load: {exc}") from None
    if images is None:
        images, labels = _test_split(out, portable)
    x = _as_array(images)
    y = None if labels is None else _as_int_array(labels)
    shape = [int(d) for d in model.info["architecture"]["input_shape"]]
    if x.ndim != 4 or list(x.shape[1:]) != shape or x.shape[0] == 0:
        raise UserError(f"{export_dir}: the check needs images (N, {', '.join(map(str, shape))}), got {x.shape}")
    try:
        _export_graph(model, _as_float_array(x[:2]), partial)
        session = _session(partial)
        check = compare(model, session, x, y, batch_size)
    except UserError:
        _unlink(partial)
        raise
    except Exception as exc:  # the exporter or onnxruntime failing is one line, and no file
        _unlink(partial)
        raise UserError(f"{export_dir}: could not write {ONNX_FILE}: {type(exc).__name__}: "
                        f"{one_line(exc)}") from None
    check["tolerance"] = tolerance
    check["allowed"] = tolerance * max(1.0, check["max_abs_logit"])
    if check["top1_agreement"] != 1.0 or not check["max_abs_logit_diff"] < check["allowed"]:
        _unlink(partial)
        raise UserError(f"{export_dir}: {ONNX_FILE} disagrees with torch on the {check['images']} test images "
                        f"(top-1 agreement {check['top1_agreement']:.4f}, largest logit difference "
                        f"{check['max_abs_logit_diff']:.3g}, allowed < {check['allowed']:.3g}); not written")
    record = {"file": ONNX_FILE, "sha256": _sha256(partial), "opset": OPSET,
              "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", *shape],
                        "values": "pixel values 0..255 (normalised inside the graph)"},
              "output": {"name": OUTPUT_NAME, "shape": ["batch", int(model.info["architecture"]["num_classes"])]},
              "exporter": "torch.onnx.export (TorchScript-based, dynamo=False)", "check": check}
    info_path = out / portable.MODEL_FILE
    info = dict(model.info)
    info["onnx"] = record
    try:
        os.replace(partial, final)
        info_path.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        _unlink(partial)
        _unlink(final)
        raise UserError(f"{export_dir}: {exc.strerror or exc}") from None
    return record


def compare(model: Any, session: Any, images: Any, labels: Any = None,
            batch_size: int = CHECK_BATCH) -> dict[str, Any]:
    """Run the torch ``model`` (an ``ExportedModel``) and the onnxruntime ``session`` on the same
    ``images`` (an array of pixel values 0..255, any numeric dtype: each batch is given to both as
    float32), ``batch_size`` at a time and once on the
    first image alone: the number of images, the fraction whose top-1 classes agree, the largest
    absolute logit difference, the largest absolute torch logit and, with ``labels``, both
    accuracies."""
    import numpy as np
    import onnxruntime
    import torch

    n = int(images.shape[0])
    agree = torch_correct = onnx_correct = 0
    worst = largest = 0.0
    batches = [(lo, min(n, lo + batch_size)) for lo in range(0, n, batch_size)] + [(0, 1)]
    with torch.inference_mode():
        for i, (lo, hi) in enumerate(batches):
            batch = np.ascontiguousarray(images[lo:hi], dtype=np.float32)
            ours = model(torch.from_numpy(batch)).numpy()
            theirs = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
            if theirs.shape != ours.shape:
                raise UserError(f"{ONNX_FILE} gave logits of shape {theirs.shape} for a batch of {hi - lo} "
                                f"(torch: {ours.shape})")
            diff = float(np.max(np.abs(theirs.astype(np.float64) - ours))) if ours.size else 0.0
            worst = max(worst, diff if math.isfinite(diff) else math.inf)
            top = float(np.max(np.abs(ours))) if ours.size else 0.0
            largest = max(largest, top if math.isfinite(top) else math.inf)
            if i == len(batches) - 1:  # the single image: only the difference counts
                break
            a, b = ours.argmax(axis=1), theirs.argmax(axis=1)
            agree += int((a == b).sum())
            if labels is not None:
                torch_correct += int((a == labels[lo:hi]).sum())
                onnx_correct += int((b == labels[lo:hi]).sum())
    check = {"images": n, "top1_agreement": agree / n, "max_abs_logit_diff": worst, "max_abs_logit": largest,
             "onnxruntime": onnxruntime.__version__, "torch": torch.__version__.split("+")[0]}
    if labels is not None:
        check.update(torch_accuracy=torch_correct / n, onnx_accuracy=onnx_correct / n)
    return check


class OnnxModel:
    """An export's ``model.onnx`` in an onnxruntime CPU session: ``info`` is model.json,
    ``session`` the ``onnxruntime.InferenceSession``, ``path`` the file."""

    def __init__(self, path: str, info: dict[str, Any], session: Any) -> None:
        self.path, self.info, self.session = path, info, session

    def logits(self, images: Any):
        """Logits (numpy, float32) for images ``(N, C, H, W)`` of pixel values 0..255."""
        import numpy as np

        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(_as_float_array(images))})[0]


def load_onnx(export_dir: str) -> OnnxModel:
    """The ``model.onnx`` of the export in ``export_dir``, ready to run, after checking that
    model.json records it (written by ``evo best --export DIR --onnx``) and that the file is
    the one recorded (its SHA-256). One-line UserError otherwise."""
    require_onnx()
    import dna.portable as portable

    info_path, path = os.path.join(export_dir, portable.MODEL_FILE), os.path.join(export_dir, ONNX_FILE)
    try:
        info = portable.read_json_file(info_path)
    except portable.ExportError as exc:
        raise UserError(str(exc)) from None
    if not isinstance(info, dict) or info.get("format") != portable.EXPORT_FORMAT:
        raise UserError(f"{info_path}: not an evo export of format {portable.EXPORT_FORMAT}")
    record = info.get("onnx")
    if not os.path.isfile(path):
        raise UserError(f"{export_dir}: no {ONNX_FILE} (export with evo best URL --export DIR --onnx)")
    if not isinstance(record, dict):
        raise UserError(f"{path}: model.json records no ONNX file (left by an earlier export?); export again "
                        "with --onnx")
    if _sha256(Path(path)) != record.get("sha256"):
        raise UserError(f"{path}: not the file this export wrote (its SHA-256 differs from model.json's); "
                        "export again with --onnx")
    return OnnxModel(path, info, _session(Path(path)))


def onnx_accuracy(model: OnnxModel, images: Any, labels: Any, batch_size: int = 1000,
                  progress: Callable[[int], None] | None = None) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` (:func:`load_onnx`) on ``images`` (N, C, H, W;
    pixel values 0..255) and ``labels``, ``batch_size`` at a time; ``progress(n)`` after each
    batch. UserError when there are no images or images and labels differ in number."""
    y = _as_int_array(labels)
    n = int(y.shape[0])
    if n == 0 or int(images.shape[0]) != n:
        raise UserError(f"need as many labels as images and at least one ({images.shape[0]} images, {n} labels)")
    shape = tuple(int(d) for d in model.info["architecture"]["input_shape"])
    if len(images.shape) != 4 or tuple(images.shape[1:]) != shape:
        raise UserError(f"images must be (N, {', '.join(map(str, shape))}), got {tuple(images.shape)}")
    correct = 0
    for lo in range(0, n, batch_size):
        correct += int((model.logits(images[lo:lo + batch_size]).argmax(axis=1) == y[lo:lo + batch_size]).sum())
        if progress is not None:
            progress(min(batch_size, n - lo))
    return correct / n


def _export_graph(model: Any, example: Any, path: Path) -> None:
    import torch

    with warnings.catch_warnings():   # the exporter's deprecation and tracer notes are not the user's business
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(example),), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    import onnx

    onnx.checker.check_model(str(path))


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types: a damaged or foreign file
        raise UserError(f"{path}: onnxruntime cannot load it: {one_line(exc)}") from None


def _test_split(out: Path, portable) -> tuple[Any, Any]:
    from .export import TEST_DATA_FILE

    path = out / TEST_DATA_FILE
    try:
        arrays = portable.read_npz(str(path))
    except portable.ExportError as exc:
        raise UserError(f"cannot check {ONNX_FILE} without the test split: {exc}") from None
    if "x" not in arrays or "y" not in arrays or int(arrays["y"].shape[0]) == 0:
        raise UserError(f"{path}: no test images to check {ONNX_FILE} on")
    return arrays["x"], arrays["y"]


def _as_array(images: Any):
    """A numpy view of ``images`` (a torch tensor or array-like), dtype kept: the float32 copy
    is made one batch at a time."""
    import numpy as np

    if hasattr(images, "detach"):   # a torch tensor
        images = images.detach().cpu().numpy()
    return np.asarray(images)


def _as_float_array(images: Any):
    import numpy as np

    return np.asarray(_as_array(images), dtype=np.float32)


def _as_int_array(labels: Any):
    import numpy as np

    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    return np.asarray(labels, dtype=np.int64)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None

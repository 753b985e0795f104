"""evo's model code and loader, needing nothing but PyTorch and the Python standard library.

This one file is both a module of the evo source tree (``dna.portable``: ``dna.build``
builds its networks with :class:`EvoNet`) and, copied verbatim, the ``evo_model.py`` of
every model that ``evo best --export DIR`` writes. So an exported model runs on a machine
that has torch and nothing else of evo, and it is the same code that trained it.

An export directory holds:

- ``model.json``: what to build (``architecture``), how inputs are normalised, provenance
  (individual id, run, validation accuracy) and whether the weights are trained;
- ``dna.json``: the individual's DNA, exactly as evolution stored it;
- ``weights.safetensors``: the weights (read here with torch alone: an 8-byte header length,
  a JSON header, raw little-endian tensor data; never pickle);
- ``evo_model.py`` (this file) and ``load.py`` (``python load.py DIR --data test.npz``);
- for NASNet individuals, ``evo_nasnet/``: verbatim copies of evo's torch-and-stdlib-only
  NASNet modules, which build that architecture at any N and F.

Use::

    import evo_model
    model = evo_model.load("DIR")                  # a torch.nn.Module, eval mode, on the CPU
    logits = model(images)                         # images: (N, C, H, W), pixel values 0..255
    acc = evo_model.evaluate(model, images, labels)

The large-scale architecture (Real et al. 2017) is described by a plain-data *plan* that
``dna.portable_plan.architecture`` computes from the DNA: the convolutions, the
batch-norms, and the order in which vertices sum their inflows (the primary inflow fixes the
shape; the others are resized by nearest interpolation in space and truncated or zero-padded
in channels). The forward pass follows the plan with no data-dependent Python control flow,
so it can be captured in a CUDA graph.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import struct
import sys
import zipfile
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

EXPORT_FORMAT = 1
MODEL_FILE = "model.json"
DNA_FILE = "dna.json"
WEIGHTS_FILE = "weights.safetensors"
NASNET_PACKAGE = "evo_nasnet"
MAX_HEADER_BYTES = 100 * 2**20


class ExportError(ValueError):
    """An export directory, weights file or data file that cannot be used. One line."""


# ----- the large-scale network -----

class Inflow(NamedTuple):
    """One incoming edge of a vertex, as the forward pass applies it."""

    conv: str | None                   # key in EvoNet.edges, None for an identity edge
    src: int                           # activation slot of the source vertex
    size: tuple[int, int] | None       # spatial size to resize to (None: already right)
    channels: int                      # channels the edge produces
    target_channels: int               # channels of the destination vertex


class Step(NamedTuple):
    """Compute one non-input vertex: sum its inflows, then optionally BN + ReLU."""

    vertex: int
    slot: int
    inflows: tuple[Inflow, ...]        # the primary first
    norm: str | None                   # key in EvoNet.vertices, None for a linear vertex
    release: tuple[int, ...]           # slots no later step reads (freed to save memory)


class EvoNet(nn.Module):
    """The network a large-scale plan describes (see ``dna.portable_plan.architecture``).

    ``forward(x)`` maps normalised images ``(N, C, H, W)`` to logits ``(N, num_classes)``.
    State-dict names carry the DNA ids: ``edges.e{id}.weight``, ``vertices.v{id}.*``,
    ``classifier.*``. Raises ExportError for a malformed plan.
    """

    def __init__(self, plan: dict[str, Any]) -> None:
        super().__init__()
        try:
            self.input_shape = tuple(int(d) for d in plan["input_shape"])
            self.num_classes = int(plan["num_classes"])
            self.vertices = nn.ModuleDict()
            self.edges = nn.ModuleDict()
            for c in plan["convs"]:
                kh, kw = (int(k) for k in c["kernel"])
                self.edges[c["name"]] = nn.Conv2d(int(c["in"]), int(c["out"]), kernel_size=(kh, kw),
                                                  stride=int(c["stride"]), padding=(kh // 2, kw // 2), bias=False)
            for n in plan["norms"]:
                self.vertices[n["name"]] = nn.BatchNorm2d(int(n["channels"]))
            self.classifier = nn.Linear(int(plan["classifier_in"]), self.num_classes)
            self._steps = tuple(_step(s) for s in plan["steps"])
            self._output_slot = int(plan["output_slot"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"malformed large-scale architecture: {type(exc).__name__}: {exc}") from None
        self.plan = plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalised images; the same ops every call."""
        acts = self._run(x, keep_all=False)
        return self.classifier(acts[self._output_slot].mean(dim=(2, 3)))

    def _run(self, x: torch.Tensor, keep_all: bool) -> list[torch.Tensor | None]:
        acts: list[torch.Tensor | None] = [None] * (len(self._steps) + 1)
        acts[0] = x
        for step in self._steps:
            total = None
            for flow in step.inflows:
                y = acts[flow.src]
                if flow.conv is not None:
                    y = self.edges[flow.conv](y)
                if total is None:        # the primary edge: it defines the shape
                    total = y
                    continue
                if flow.size is not None:
                    y = F.interpolate(y, size=flow.size, mode="nearest")
                if flow.channels > flow.target_channels:
                    y = y[:, : flow.target_channels]
                elif flow.channels < flow.target_channels:
                    y = F.pad(y, (0, 0, 0, 0, 0, flow.target_channels - flow.channels))
                # Under autocast an identity edge may bring fp32 while convs give bf16.
                total = total + y.to(total.dtype)
            if step.norm is not None:
                total = F.relu(self.vertices[step.norm](total))
            acts[step.slot] = total
            if not keep_all:
                for slot in step.release:
                    acts[slot] = None
        return acts

    def extra_repr(self) -> str:
        return (f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
                f"convs={len(self.edges)}, steps={len(self._steps)}")


def _step(s: dict[str, Any]) -> Step:
    inflows = tuple(
        Inflow(f["conv"], int(f["src"]), None if f["size"] is None else (int(f["size"][0]), int(f["size"][1])),
               int(f["channels"]), int(f["target_channels"]))
        for f in s["inflows"])
    if not inflows:
        raise ValueError(f"vertex {s['vertex']} has no inflows")
    return Step(int(s["vertex"]), int(s["slot"]), inflows, s["norm"], tuple(int(r) for r in s["release"]))


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


def build_network(info: dict[str, Any], dna: dict[str, Any], directory: str | None = None) -> nn.Module:
    """The (freshly initialised) network that ``model.json``'s ``architecture`` describes."""
    arch = info.get("architecture")
    if not isinstance(arch, dict):
        raise ExportError(f"{MODEL_FILE}: no architecture object")
    kind = arch.get("kind")
    if kind == "large_scale":
        return EvoNet(arch)
    if kind == "nasnet":
        parse, build = _nasnet_api(directory)
        try:
            return build(parse(dna), tuple(arch["input_shape"]), int(arch["num_classes"]),
                         cells_per_stack=int(arch["cells_per_stack"]), filters=int(arch["filters"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"cannot build the NASNet model: {exc}") from None
    raise ExportError(f"{MODEL_FILE}: unknown architecture kind {kind!r}")


def _nasnet_api(directory: str | None):
    """(parse DNA dict, build model) for NASNet: evo's own modules, or the exported copies."""
    if __package__:  # inside the evo source tree, as dna.portable
        nasnet = importlib.import_module(".nasnet", __package__)
        builder = importlib.import_module(".build_nasnet", __package__)
    else:
        if directory is None or not os.path.isdir(os.path.join(directory, NASNET_PACKAGE)):
            raise ExportError(f"NASNet model needs the {NASNET_PACKAGE}/ folder beside evo_model.py")
        path = os.path.abspath(directory)
        if path not in sys.path:
            sys.path.insert(0, path)
        nasnet = importlib.import_module(f"{NASNET_PACKAGE}.nasnet")
        builder = importlib.import_module(f"{NASNET_PACKAGE}.build_nasnet")
    return nasnet.nasnet_from_dict, builder.build_nasnet


def read_json(path: str) -> Any:
    """A JSON file, or ExportError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ExportError(f"{path}: no such file (is this an evo export directory?)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ExportError(f"{path}: not readable JSON: {exc}") from None


def load(directory: str, device: str | torch.device = "cpu") -> ExportedModel:
    """The exported model in ``directory``, weights loaded, in eval mode, on ``device``.

    Raises ExportError (one line, naming the file) when the export is incomplete or damaged.
    """
    info = read_json(os.path.join(directory, MODEL_FILE))
    if not isinstance(info, dict) or info.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{os.path.join(directory, MODEL_FILE)}: not an evo export of format {EXPORT_FORMAT}")
    dna = read_json(os.path.join(directory, DNA_FILE))
    net = build_network(info, dna, directory)
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


# ----- safetensors with torch alone -----

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(source: str | bytes) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (path) or blob (bytes), parsed with torch alone.

    Layout: u64 little-endian header length N, N bytes of JSON header mapping each name to
    ``dtype``, ``shape`` and ``data_offsets`` (relative to the end of the header), then the
    data. Every offset and size is checked; ExportError names the problem.
    """
    where = source if isinstance(source, str) else "weights"
    if isinstance(source, str):
        try:
            with open(source, "rb") as f:
                blob = f.read()
        except OSError as exc:
            raise ExportError(f"{source}: {exc.strerror or exc}") from None
    else:
        blob = bytes(source)
    if len(blob) < 8:
        raise ExportError(f"{where}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > min(MAX_HEADER_BYTES, len(blob) - 8):
        raise ExportError(f"{where}: safetensors header length {n} is impossible")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ExportError(f"{where}: safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise ExportError(f"{where}: safetensors header is not an object")
    data = memoryview(blob)[8 + n:]
    out: dict[str, torch.Tensor] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[meta["dtype"]]
            shape = [int(d) for d in meta["shape"]]
            begin, end = (int(o) for o in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ExportError(f"{where}: tensor {name!r} has a bad header entry") from None
        count = math.prod(shape)
        size = count * torch.empty((), dtype=dtype).element_size()
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= len(data) or end - begin != size:
            raise ExportError(f"{where}: tensor {name!r} has bad offsets or size")
        if count == 0:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            out[name] = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).reshape(shape)
    return out


# ----- data (.npz / .npy) with the standard library -----

_NPY_DTYPES = {
    "u1": torch.uint8, "i1": torch.int8, "i2": torch.int16, "i4": torch.int32, "i8": torch.int64,
    "f2": torch.float16, "f4": torch.float32, "f8": torch.float64, "b1": torch.bool,
}


def read_npz(path: str) -> dict[str, torch.Tensor]:
    """Arrays of a NumPy ``.npz`` file (numeric dtypes only; object arrays are refused)."""
    try:
        with zipfile.ZipFile(path) as z:
            return {name[:-4]: _npy(z.read(name), f"{path}:{name}") for name in z.namelist()
                    if name.endswith(".npy")}
    except FileNotFoundError:
        raise ExportError(f"{path}: no such file") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise ExportError(f"{path}: not a .npz file ({exc})") from None


def _npy(raw: bytes, where: str) -> torch.Tensor:
    import ast

    if raw[:6] != b"\x93NUMPY":
        raise ExportError(f"{where}: not a .npy array")
    major = raw[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", raw[8:10]), 10
    else:
        (hlen,), start = struct.unpack("<I", raw[8:12]), 12
    try:
        header = ast.literal_eval(raw[start:start + hlen].decode("latin1"))
        descr, fortran, shape = header["descr"], header["fortran_order"], tuple(header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError):
        raise ExportError(f"{where}: bad .npy header") from None
    if not isinstance(descr, str) or descr[1:] not in _NPY_DTYPES or descr[0] not in "<|=":
        raise ExportError(f"{where}: unsupported dtype {descr!r} (numeric little-endian only)")
    dtype = _NPY_DTYPES[descr[1:]]
    body = raw[start + hlen:]
    count = math.prod(shape)
    size = count * torch.empty((), dtype=dtype).element_size()
    if len(body) < size:
        raise ExportError(f"{where}: truncated array data")
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    t = torch.frombuffer(bytearray(body[:size]), dtype=dtype)
    if fortran:
        return t.reshape(tuple(reversed(shape))).permute(*reversed(range(len(shape)))).contiguous()
    return t.reshape(shape)


# ----- evaluation -----

@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``images`` (pixel values) and ``labels``."""
    n = int(labels.shape[0])
    if n == 0 or int(images.shape[0]) != n:
        raise ExportError(f"need as many labels as images and at least one ({images.shape[0]} images, {n} labels)")
    device = next(model.parameters()).device
    correct = 0
    for lo in range(0, n, batch_size):
        out = model(images[lo:lo + batch_size].to(device))
        correct += int((out.argmax(dim=1).cpu() == labels[lo:lo + batch_size].long()).sum())
    return correct / n


def main(argv: list[str] | None = None, default_dir: str | None = None) -> int:
    """``python load.py [DIR] [--data FILE.npz] [--json]``: describe or evaluate the export."""
    p = argparse.ArgumentParser(prog="load.py", description="Load an exported evo model (torch only) "
                                "and report its accuracy on an .npz of images (x: N,C,H,W pixel values "
                                "0..255) and labels (y).")
    p.add_argument("dir", nargs="?", default=default_dir or ".", help="export directory (default: here)")
    p.add_argument("--data", help=".npz file with arrays x (images) and y (labels)")
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
            result.update(accuracy=evaluate(model, x, y, batch), images=int(y.shape[0]), data=args.data)
    except ExportError as exc:
        print(f"load.py: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        val = result["validation_accuracy"]
        print(f"{result['kind']} model {result['id']}: {result['parameters']} parameters, "
              + (f"validation accuracy {val:.4f}" if result["trained"] and val is not None
                 else "untrained weights (rebuilt at another size)"))
        if "accuracy" in result:
            print(f"accuracy on {args.data}: {result['accuracy']:.4f} ({result['images']} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

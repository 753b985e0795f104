"""`evo arch NAME|DNA-FILE|URL ID`: how big an architecture is at a given size, before training it.

The architecture is a published one by name (``nasnet-a``, ``amoebanet-a``, ...:
:mod:`dna.published`), a DNA file (JSON: a DNA, ``evo best --json`` output, or an export
directory holding ``dna.json``), or an individual of a population (``URL ID``, the ID as
``evo lineage`` takes it: an id, a unique prefix, or ``best``). It is built at the size asked
(NASNet: ``--cells N --filters F``; default the paper's size for a published name, the run's
search size for an individual, N=3/F=24 for a file; ``--stem cifar|imagenet|auto``, default
the run's ``nasnet.stem`` for an individual, else ``auto``: the ImageNet stem above 64 px,
:mod:`dna.nasnet_network`) for ``--input-shape`` and ``--classes``
(default CIFAR-10: 3x32x32, 10 classes; an individual: its run's dataset where evo knows it),
and reported: trainable parameters of the network, and of the auxiliary head separately (the
one final training adds), multiply-adds of one image's forward pass (convolutions and linear
layers, eval mode), the stem it used, the cells or vertices. ``-o FILE`` draws the cells (or
the graph).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

from ..errors import UserError, read_user_file
from ..options import check_extension, positive_int

MAX_DNA_BYTES = 1 << 20
CIFAR_SHAPE, CIFAR_CLASSES = (3, 32, 32), 10
# Input shape and classes of the datasets evo knows without reading them.
KNOWN_DATASETS = {"digits": ((1, 8, 8), 10), "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100),
                  "nb201-cifar10": ((3, 32, 32), 10), "nb201-cifar100": ((3, 32, 32), 100),
                  "nb201-imagenet16": ((3, 16, 16), 120)}


def resolve(arch: str, ident: str | None) -> dict[str, Any]:
    """``{"dna": validated DNA, "source": text, "name": published name or None, "size": (N, F) or
    None, "dataset": run's dataset name or None}`` for the command's positional arguments;
    UserError (one line) when they name nothing evo can read."""
    from dna.published import NOT_EXPRESSIBLE, PUBLISHED, canonical_name, is_published, unknown_architecture

    if ident is not None:
        return _from_population(arch, ident)
    if is_published(arch):
        p = PUBLISHED[canonical_name(arch)]
        return {"dna": p.dna, "source": f"published: {p.source}", "name": p.name,
                "size": (p.cells_per_stack, p.filters), "dataset": None}
    if os.path.isdir(arch):
        if os.path.exists(os.path.join(arch, "config.json")):
            raise UserError(f"{arch} is a population directory: give an individual too (evo arch {arch} ID; "
                            "ID: an id, a unique prefix of one, or best)")
        path = os.path.join(arch, "dna.json")
        if not os.path.isfile(path):
            raise UserError(f"{arch}: a directory without dna.json (neither an export nor a population)")
        return _from_file(path)
    if os.path.exists(arch):
        return _from_file(arch)
    if canonical_name(arch) in NOT_EXPRESSIBLE:
        raise UserError(unknown_architecture(arch))
    raise UserError(f"{arch!r} is neither a published architecture ({', '.join(PUBLISHED)}), a DNA file, "
                    "nor a population (then give an individual: evo arch URL ID)")


def _from_file(path: str) -> dict[str, Any]:
    from dna.genome import DNAError, parse_dna_json

    raw = read_user_file(path, MAX_DNA_BYTES, "a DNA file")
    try:
        obj = parse_dna_json(raw)
        if isinstance(obj, dict) and isinstance(obj.get("dna"), dict):  # `evo best --json` output
            obj = obj["dna"]
        dna = _parse_any(obj)
    except DNAError as exc:
        raise UserError(f"{path}: {exc}") from None
    return {"dna": dna, "source": f"file {path}", "name": None, "size": None, "dataset": None}


def _parse_any(obj: Any):
    """A DNA of either kind from a JSON object, validated within the widest bounds a run may set."""
    from dna.bounds import Bounds
    from dna.genome import DNAError, from_dict
    from dna.nasnet import KIND, nasnet_from_dict
    from dna.validate import validate
    from evo.config import BOUNDS_LIMITS, MAX_LEARNING_RATE

    widest = Bounds(**BOUNDS_LIMITS, min_learning_rate=1e-12, max_learning_rate=MAX_LEARNING_RATE)
    if not isinstance(obj, dict):
        raise DNAError(f"a DNA must be a JSON object, got {type(obj).__name__}")
    if obj.get("kind") == KIND:
        return nasnet_from_dict(obj, widest)
    if obj.get("kind") == "nasbench201":
        from dna.nasbench201 import nb201_from_dict

        return nb201_from_dict(obj, widest)
    return validate(from_dict(obj), widest)


def _from_population(url: str, ident: str) -> dict[str, Any]:
    from evo.spaces import for_config

    from ..views.snapshot import find_record, take_snapshot

    snap = take_snapshot(url)
    record = find_record(snap, ident)
    if record.dna is None:
        raise UserError(f"{url}: the DNA of {record.id} could not be read (see evo check)")
    config = snap.config
    dna = for_config(config).parse(record.dna)
    nasnet = config.settings_of("nasnet") if config.search_space == "nasnet" else None
    size = (nasnet.cells_per_stack, nasnet.filters) if nasnet else None
    return {"dna": dna, "source": f"individual {record.id} of {url} (validation accuracy {record.fitness:.4f})",
            "name": None, "size": size, "dataset": config.dataset_name, "data_shape": _run_data_shape(url, config),
            "stem": nasnet.stem if nasnet else None}


def _run_data_shape(url: str, config) -> tuple[tuple[int, int, int], int] | None:
    """(input shape, classes) of a run on the user's own images, from its decoded dataset's
    manifest (None for the built-in datasets or while it is not decoded)."""
    if not config.dataset_spec.is_user:
        return None
    from evo.data.cache import cache_status
    from storage import open_store

    status = cache_status(open_store(url).datacache, config.dataset_spec, config.data)
    if status["state"] != "ready":
        return None
    return tuple(status["input_shape"]), int(status["num_classes"])


def count_multiply_adds(model, input_shape: tuple[int, int, int]) -> int:
    """Multiply-adds of one image's forward pass in eval mode: every ``Conv2d`` (output elements
    x input channels per group x kernel area) and ``Linear`` (in x out) that runs."""
    import torch
    from torch import nn

    total = 0

    def conv(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output[0].numel() * (module.in_channels // module.groups) * kh * kw

    def linear(module, inputs, output):
        nonlocal total
        total += module.in_features * module.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
    was_training, threads = model.training, torch.get_num_threads()
    model.eval()
    torch.set_num_threads(1)  # one small image: threads only add start-up and contention
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
        torch.set_num_threads(threads)
    return int(total)


def summarize(resolved: dict[str, Any], cells: int | None, filters: int | None,
              input_shape: tuple[int, int, int] | None, classes: int | None,
              stem: str | None = None) -> dict[str, Any]:
    """The ``--json`` summary of a resolved architecture at the given size and input; ``stem``
    (NASNet only): ``cifar``, ``imagenet`` or ``auto`` (None: the run's for an individual, else
    ``auto``). A NASNet summary says which stem was built (``stem``), what was asked
    (``stem_setting``) and its cells (``stem_cells``: 0 or 2)."""
    import torch

    dna = resolved["dna"]
    known = resolved.get("data_shape") or KNOWN_DATASETS.get(resolved["dataset"] or "")
    shape = input_shape or (known[0] if known else CIFAR_SHAPE)
    num_classes = classes or (known[1] if known else CIFAR_CLASSES)
    torch.manual_seed(0)
    out: dict[str, Any] = {"source": resolved["source"], "name": resolved["name"], "kind": dna.to_dict()["kind"],
                           "dna_hash": dna.content_hash(), "input_shape": list(shape), "num_classes": num_classes}
    if out["kind"] == "nasnet":
        from dna.build_nasnet import build_nasnet, parameter_counts
        from dna.nasnet_network import network_wiring
        from dna.published import match

        n, f = resolved["size"] or (None, None)
        n, f = cells or n or 3, filters or f or 24
        asked = stem or resolved.get("stem") or "auto"
        try:
            model = build_nasnet(dna, shape, num_classes, cells_per_stack=n, filters=f, aux_head=True, stem=asked)
        except ValueError as exc:
            raise UserError(f"cannot build {resolved['name'] or 'this DNA'}: {exc}") from None
        body, aux = parameter_counts(model)
        wiring = network_wiring(dna, n, f, model.stem_type)
        body_cells = [w for w in wiring if not w.slot.stem]
        out.update(cells_per_stack=n, filters=f, parameters=body, aux_head_parameters=aux,
                   stem=model.stem_type, stem_setting=asked,
                   stem_cells=[w.slot.filters for w in wiring if w.slot.stem],
                   cells={"normal": sum(not w.slot.reduction for w in body_cells),
                          "reduction": sum(w.slot.reduction for w in body_cells)},
                   concat={name: list(dna.cell(name).output_states()) for name in ("normal", "reduction")},
                   final_channels=wiring[-1].out_channels, same_cells_as=match(dna))
    elif cells is not None or filters is not None:
        raise UserError("--cells and --filters set the size of NASNet architectures; "
                        f"a {out['kind']} DNA has its size fixed")
    elif stem is not None:
        raise UserError(f"--stem chooses the stem of NASNet architectures; a {out['kind']} DNA has its own")
    elif out["kind"] == "nasbench201":
        from dna.build import param_count
        from dna.build_nasbench201 import build_nasbench201

        model = build_nasbench201(dna, shape, num_classes)
        out.update(parameters=param_count(model), aux_head_parameters=0, cell=dna.arch_str())
    else:
        from dna.build import build, param_count

        try:
            model = build(dna, shape, num_classes, bounds=_widest_bounds())
        except ValueError as exc:
            raise UserError(f"cannot build this DNA for input {_shape_text(shape)}: {exc}") from None
        convs = sum(1 for e in dna.edges if e.is_conv)
        out.update(parameters=param_count(model), aux_head_parameters=0, vertices=len(dna.vertices),
                   edges=len(dna.edges), convolutions=convs)
    out["multiply_adds"] = count_multiply_adds(model, shape)
    return out


def _widest_bounds():
    from dna.bounds import Bounds
    from evo.config import BOUNDS_LIMITS, MAX_LEARNING_RATE

    return Bounds(**BOUNDS_LIMITS, min_learning_rate=1e-12, max_learning_rate=MAX_LEARNING_RATE)


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


def _count(n: int) -> str:
    """``3,218,266 (3.22M)``; small counts without the millions."""
    return f"{n:,} ({n / 1e6:.2f}M)" if n >= 10_000 else f"{n:,}"


def format_summary(s: dict[str, Any]) -> str:
    """The text summary: a few lines, numbers with separators and in millions."""
    title = s["name"] or s["source"]
    lines = [f"{title}" + (f"  ({s['source']})" if s["name"] else "")]
    if s["kind"] == "nasnet":
        same = f"; the cells of {s['same_cells_as']}" if s["same_cells_as"] and not s["name"] else ""
        lines.append(f"  NASNet cells at N={s['cells_per_stack']}, F={s['filters']}, for input "
                     f"{_shape_text(s['input_shape'])} and {s['num_classes']} classes{same}")
        lines.append("  " + _stem_text(s))
        lines.append(f"  parameters: {_count(s['parameters'])}; the auxiliary head adds "
                     f"{_count(s['aux_head_parameters'])} in final training")
        lines.append(f"  multiply-adds per image: {_count(s['multiply_adds'])}")
        c = s["cells"]
        lines.append(f"  cells: {c['normal'] + c['reduction']} ({c['normal']} normal, {c['reduction']} reduction); "
                     f"outputs concatenate states {s['concat']['normal']} (normal), {s['concat']['reduction']} "
                     f"(reduction): {s['final_channels']} channels at the end")
    elif s["kind"] == "nasbench201":
        lines.append(f"  NAS-Bench-201 network (C=16, N=5) for input {_shape_text(s['input_shape'])} and "
                     f"{s['num_classes']} classes, cell {s['cell']}")
        lines.append(f"  parameters: {_count(s['parameters'])}; multiply-adds per image: {_count(s['multiply_adds'])}")
    else:
        lines.append(f"  large-scale DNA for input {_shape_text(s['input_shape'])} and {s['num_classes']} classes")
        lines.append(f"  parameters: {_count(s['parameters'])}; no auxiliary head")
        lines.append(f"  multiply-adds per image: {_count(s['multiply_adds'])}")
        lines.append(f"  vertices: {s['vertices']}, edges: {s['edges']} ({s['convolutions']} convolutions)")
    return "\n".join(lines)


def _stem_text(s: dict[str, Any]) -> str:
    """One line: which stem a NASNet summary was built on, and why (for ``auto``)."""
    from dna.nasnet_network import AUTO_IMAGENET_ABOVE, IMAGENET_STEM_CHANNELS, STEM_MULTIPLIER

    why = ""
    if s["stem_setting"] == "auto":
        small = min(s["input_shape"][1:]) <= AUTO_IMAGENET_ABOVE
        why = (f" (auto: input above {AUTO_IMAGENET_ABOVE} px)" if s["stem"] == "imagenet"
               else f" (auto: input of {AUTO_IMAGENET_ABOVE} px or less)" if small
               else " (auto: F < 8, too few filters for the imagenet stem)")
    if s["stem"] == "imagenet":
        a, b = s["stem_cells"]
        return (f"stem: imagenet{why}: 3x3 stride-2 conv to {IMAGENET_STEM_CHANNELS} channels, then 2 reduction "
                f"cells at {a} and {b} filters")
    return f"stem: cifar{why}: 3x3 conv to {STEM_MULTIPLIER * s['filters']} channels at full size"


def input_shape(text: str) -> tuple[int, int, int]:
    """``3x32x32`` (channels x height x width) as a ``type=`` function."""
    m = re.fullmatch(r"\s*(\d+)\s*[x,]\s*(\d+)\s*[x,]\s*(\d+)\s*", text)
    if not m or any(int(g) < 1 for g in m.groups()) or any(int(g) > 65536 for g in m.groups()):
        raise argparse.ArgumentTypeError(f"must be CxHxW with positive sizes, e.g. 3x32x32, got {text!r}")
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


def run(args: argparse.Namespace) -> int:
    from ..views.drawing import ARCH_FORMATS, draw_architecture

    if args.output:
        check_extension(args.output, "-o", ARCH_FORMATS)
    resolved = resolve(args.arch, args.id)
    summary = summarize(resolved, args.cells, args.filters, args.input_shape, args.classes, args.stem)
    if args.output:
        try:
            how = draw_architecture(resolved["dna"].to_dict(), args.output, title=resolved["name"] or "")
        except OSError as exc:
            raise UserError(f"{args.output}: {exc.strerror or exc}") from None
        summary["drawing"] = args.output
    print(json.dumps(summary, sort_keys=True) if args.json else format_summary(summary))
    if args.output and not args.json:
        print(f"wrote {args.output} (the cells, drawn with {how})" if summary["kind"] == "nasnet"
              else f"wrote {args.output} (drawn with {how})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("arch", help="an architecture's size (parameters, multiply-adds) before training it",
                       description="Summarise an architecture at a given size and input: parameters (and the "
                                   "auxiliary head's), multiply-adds per image, cells or vertices; -o draws it.")
    p.add_argument("arch", metavar="NAME|DNA-FILE|URL",
                   help="a published architecture (nasnet-a, amoebanet-a, amoebanet-c), a DNA file (or an export "
                        "directory), or a population directory followed by an individual ID")
    p.add_argument("id", nargs="?", metavar="ID", help="with a population URL: an id, a unique prefix of one, or best")
    p.add_argument("--cells", type=positive_int, metavar="N", help="NASNet: N normal cells per stack "
                   "(default: the paper's for a published name, the run's for an individual, else 3)")
    p.add_argument("--filters", type=positive_int, metavar="F", help="NASNet: F filters of the first stack "
                   "(default: the paper's, the run's, else 24)")
    p.add_argument("--input-shape", type=input_shape, metavar="CxHxW",
                   help="input image shape (default: 3x32x32, or the run's dataset for an individual)")
    p.add_argument("--classes", type=positive_int, metavar="K", help="number of classes (default: 10, or the run's)")
    p.add_argument("--stem", choices=("cifar", "imagenet", "auto"),
                   help="NASNet: the CIFAR stem (full size), the ImageNet stem (a stride-2 conv and two reduction "
                        "cells first), or auto: ImageNet above 64 px (default: the run's for an individual, else auto)")
    p.add_argument("-o", "--output", metavar="FILE", help="draw the architecture here (.png, .pdf or .svg)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)

"""The fixed architectures the speed benchmarks train: ``bench/archs/{small,mid,large}.json``.

Each file is one large-scale-evolution DNA (``DNA.to_dict()``), parsed back through the same
validation as any untrusted DNA. ``python -m bench make_archs`` regenerates them (see
``bench/make_archs.py`` for where each comes from). Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dna as dna_lib
from dna.shapes import edge_output_shape

ARCH_DIR = Path(__file__).resolve().parent / "archs"
ARCH_NAMES = ("small", "mid", "large")


def arch_path(name: str) -> Path:
    """Where the architecture ``name`` is stored."""
    return ARCH_DIR / f"{name}.json"


def load_arch(name: str) -> dna_lib.DNA:
    """The validated DNA of architecture ``name``; BenchError (one line) if missing or invalid."""
    from ._report import BenchError

    if name not in ARCH_NAMES:
        raise BenchError(f"unknown architecture {name!r} (choose from {', '.join(ARCH_NAMES)})")
    path = arch_path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"{path}: {exc.strerror}; regenerate with `python -m bench make_archs`") from None
    try:
        return dna_lib.from_json(text)
    except dna_lib.DNAError as exc:
        raise BenchError(f"{path}: {exc}") from None


def conv_macs(dna: dna_lib.DNA, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of the convolutions for one image of ``input_shape`` (forward pass)."""
    shapes = dna_lib.infer_shapes(dna, input_shape)
    total = 0
    for e in dna.conv_edges:
        c_in = shapes[e.src][0]
        _, h_out, w_out = edge_output_shape(e, shapes[e.src])
        total += c_in * e.channels * e.filter_h * e.filter_w * h_out * w_out
    return total


def describe(dna: dna_lib.DNA, input_shape: tuple[int, int, int], num_classes: int) -> dict[str, Any]:
    """Convolutions, widest channel count, parameters and MACs per image: the table's columns."""
    convs = dna.conv_edges
    return {
        "convs": len(convs),
        "skips": len(dna.edges) - (len(dna.vertices) - 1),   # inflows beyond each vertex's primary
        "max_channels": max((e.channels for e in convs), default=0),
        "params": dna_lib.count_parameters(dna, input_shape, num_classes),
        "mmacs": conv_macs(dna, input_shape) / 1e6,
        "learning_rate": dna.learning_rate,
    }

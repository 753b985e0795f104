"""The cells the papers publish, as named NASNet DNAs: usable wherever a DNA is.

Each cell is transcribed (in this DNA's notation, see :mod:`dna.nasnet`) from the reference
implementation the papers' authors released; the parameter counts they give at the papers'
CIFAR-10 sizes are checked by tests/test_published.py through ``evo arch``:

- ``nasnet-a``: tensorflow/models ``research/slim/nets/nasnet/nasnet_utils.py``
  (``NasNetANormalCell``, ``NasNetAReductionCell``); Zoph et al. 2018 give 3.3M parameters at
  N=6, F=32 ("NASNet-A (6 @ 768)" in their CIFAR-10 results);
- ``amoebanet-a``: tensorflow/tpu ``models/official/amoeba_net/model_specs.py``
  (``amoeba_net_a``, also called ``evol_net_g`` there); Real et al. 2019 give 3.2M at N=6, F=36;
- ``amoebanet-c``: the same file (``amoeba_net_c``, also ``evol_net_a``); no CIFAR-10 count is
  checked for it.

The references write a cell as ten ops, ten hidden-state indices (two per combination, left
then right) and ``used_hiddenstates`` (1 = not concatenated into the output); here that is five
``[input_a, op_a, input_b, op_b]`` combinations and the ``concat`` list (the states with 0).
Op names: ``separable_KxK_2`` = ``sepKxK``, ``avg_pool_3x3`` = ``avg3x3``, ``max_pool_3x3`` =
``max3x3``, ``none`` = ``identity``, ``1x7_7x1`` = ``conv1x7_7x1``.

Not shipped: AmoebaNet-B and -D use ops outside this search space (``1x1`` and ``3x3``
convolutions, ``max_pool_2x2``, a dilated separable 5x5), and NASNet-B and -C (the NASNet
paper's appendix) have four combinations per cell and concatenating combiners; none of them
has a DNA here.

Every DNA has the search's initial learning rate (0.1) and ``mutation: "initial"``; the
learning rate of a final training is the trainer's. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from .genome import INITIAL_LEARNING_RATE, DNAError
from .nasnet import Cell, Combination, NasnetDNA, validate_nasnet


@dataclass(frozen=True)
class Published:
    """A published architecture: its DNA, where it was transcribed from, and the paper's CIFAR-10
    size and parameter count (None where the paper gives none)."""

    name: str
    dna: NasnetDNA
    source: str
    paper: str
    cells_per_stack: int
    filters: int
    paper_parameters: float | None


def _cell(combinations: list[tuple[int, str, int, str]], concat: list[int]) -> Cell:
    return Cell(tuple(Combination(*c) for c in combinations), tuple(concat)).normalized()


def _dna(normal: Cell, reduction: Cell) -> NasnetDNA:
    return validate_nasnet(NasnetDNA(learning_rate=INITIAL_LEARNING_RATE, normal=normal, reduction=reduction),
                           bounds=None)


_NASNET_SOURCE = "tensorflow/models research/slim/nets/nasnet/nasnet_utils.py"
_AMOEBA_SOURCE = "tensorflow/tpu models/official/amoeba_net/model_specs.py"

_TABLE = (
    Published(
        "nasnet-a",
        _dna(_cell([(0, "sep5x5", 1, "sep3x3"), (1, "sep5x5", 1, "sep3x3"), (0, "avg3x3", 1, "identity"),
                    (1, "avg3x3", 1, "avg3x3"), (0, "sep3x3", 0, "identity")],
                   [1, 2, 3, 4, 5, 6]),
             _cell([(0, "sep5x5", 1, "sep7x7"), (0, "max3x3", 1, "sep7x7"), (0, "avg3x3", 1, "sep5x5"),
                    (3, "identity", 2, "avg3x3"), (2, "sep3x3", 0, "max3x3")],
                   [3, 4, 5, 6])),
        f"{_NASNET_SOURCE} (NasNetANormalCell, NasNetAReductionCell)",
        "Zoph et al. 2018, Learning Transferable Architectures for Scalable Image Recognition",
        6, 32, 3.3e6),
    Published(
        "amoebanet-a",
        _dna(_cell([(0, "avg3x3", 0, "max3x3"), (1, "sep3x3", 1, "identity"), (0, "identity", 1, "avg3x3"),
                    (0, "sep3x3", 2, "sep5x5"), (5, "avg3x3", 0, "sep3x3")],
                   [1, 3, 4, 6]),
             _cell([(1, "sep3x3", 0, "avg3x3"), (0, "max3x3", 2, "sep7x7"), (1, "max3x3", 0, "max3x3"),
                    (4, "sep3x3", 0, "conv1x7_7x1"), (1, "avg3x3", 0, "sep7x7")],
                   [2, 3, 4, 5, 6])),
        f"{_AMOEBA_SOURCE} (amoeba_net_a)",
        "Real et al. 2019, Regularized Evolution for Image Classifier Architecture Search",
        6, 36, 3.2e6),
    Published(
        "amoebanet-c",
        _dna(_cell([(0, "avg3x3", 0, "sep3x3"), (0, "identity", 0, "sep3x3"), (2, "avg3x3", 1, "sep3x3"),
                    (0, "identity", 1, "sep3x3"), (3, "avg3x3", 0, "sep3x3")],
                   [1, 2, 4, 5, 6]),
             _cell([(0, "max3x3", 0, "max3x3"), (2, "sep7x7", 0, "sep3x3"), (0, "sep7x7", 1, "max3x3"),
                    (4, "sep5x5", 4, "sep5x5"), (1, "max3x3", 1, "sep3x3")],
                   [0, 2, 3, 4, 5, 6])),
        f"{_AMOEBA_SOURCE} (amoeba_net_c)",
        "Real et al. 2019, Regularized Evolution for Image Classifier Architecture Search",
        6, 36, None),
)

PUBLISHED: dict[str, Published] = {p.name: p for p in _TABLE}


# Published architectures this space cannot express, and why (so a user who asks for one learns it).
NOT_EXPRESSIBLE = {
    "amoebanet-b": "uses 1x1 and 3x3 convolutions and max_pool_2x2, which are not ops of this space",
    "amoebanet-d": "uses 1x1 and 3x3 convolutions, max_pool_2x2 and a dilated separable 5x5, "
                   "which are not ops of this space",
    "nasnet-b": "has four combinations per cell and concatenating combiners; this space has five adding ones",
    "nasnet-c": "has four combinations per cell and concatenating combiners; this space has five adding ones",
}


def unknown_architecture(name: str) -> str:
    """One line saying why ``name`` is not a published architecture here: a published one this
    space cannot express (and why), or an unknown name (listing the known ones)."""
    reason = NOT_EXPRESSIBLE.get(canonical_name(name)) if isinstance(name, str) else None
    if reason:
        return f"{canonical_name(name)} is not expressible in the NASNet space: it {reason}"
    return f"unknown architecture {name!r} (published: {', '.join(PUBLISHED)})"[:300]


def published_names() -> list[str]:
    """The names of the published architectures, as ``evo`` accepts them."""
    return list(PUBLISHED)


def canonical_name(name: str) -> str:
    """``AmoebaNet_A`` -> ``amoebanet-a``: the key a user's spelling of a name maps to."""
    return name.strip().lower().replace("_", "-")


def is_published(name: object) -> bool:
    """True when ``name`` names a published architecture (any case, ``_`` or ``-``)."""
    return isinstance(name, str) and canonical_name(name) in PUBLISHED


def published(name: str) -> NasnetDNA:
    """The DNA of the published architecture ``name``; DNAError (one line) naming the known ones."""
    if not is_published(name):
        raise DNAError(unknown_architecture(name))
    return PUBLISHED[canonical_name(name)].dna


def match(dna: NasnetDNA) -> str | None:
    """The published architecture whose cells ``dna`` has (any learning rate), or None."""
    for p in _TABLE:
        if (dna.normal, dna.reduction) == (p.dna.normal, p.dna.reduction):
            return p.name
    return None

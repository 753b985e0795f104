"""The NASNet cell space of the 2019 paper: a normal and a reduction cell of five
combinations each, their hidden-state/op/identity mutations, no weight inheritance (every
child trains from scratch, as in the paper), aging evolution by default. A run's initial
individuals are random cells (the paper), or all one published architecture when the config
names one (``nasnet.seed_arch``, ``evo init --seed-arch NAME``). Children are built on the
stem ``nasnet.stem`` names: the papers' CIFAR stem, their ImageNet stem (a stride-2
convolution and two reduction cells before the first normal cell), or ``auto`` (the default:
the ImageNet stem for images above 64 px, else CIFAR; see :mod:`dna.nasnet_network`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from dna import nasnet as nas
from dna.nasnet_network import IMAGENET_STEM_MIN_FILTERS, STEM_CHOICES, choose_stem, training_bytes

from evo.config_checks import ConfigError, require_choice, require_int
from evo.registry import RunView
from evo.spaces import SearchSpace, register_space

# The automatic image size of a user dataset may go up to this when the stem will be the
# ImageNet stem (the papers' ImageNet input size); with the CIFAR stem it stays at 64.
IMAGENET_AUTO_SIZE_CAP = 224

# Synthetic mode: how much each op is worth (separable and factorised convolutions beat
# pooling and identity, as in the papers' cells).
_OP_VALUE = {"sep3x3": 1.0, "sep5x5": 1.1, "sep7x7": 0.9, "dil3x3": 0.9, "conv1x7_7x1": 0.8,
             "avg3x3": 0.4, "max3x3": 0.5, "identity": 0.3}


@dataclass(frozen=True)
class NasnetSettings:
    """The NASNet space at search time: N cells per stack and F filters of every child (the
    2019 paper's search: N=3, F=24), ``seed_arch``, a published architecture
    (``dna.published``) that every initial individual is instead of a random one, and
    ``stem``: ``cifar``, ``imagenet`` or ``auto`` (ImageNet when the images are larger than
    64 px on both sides; :func:`dna.nasnet_network.choose_stem`). ``stem`` is left out of
    config.json while it is ``auto``, so configs written before it existed read and write back
    unchanged (and their runs, all at 64 px or less, keep the CIFAR stem)."""

    cells_per_stack: int = field(default=3, metadata={"help": "N, 1..64, --nasnet-cells"})
    filters: int = field(default=24, metadata={"help": "F, 1..4096, --nasnet-filters"})
    seed_arch: str | None = field(default=None, metadata={"help": "a published architecture, --seed-arch"})
    stem: str = field(default="auto", metadata={
        "help": "cifar, imagenet (a stride-2 conv and two reduction cells first; F >= 8) or auto "
                "(imagenet above 64 px if F >= 8), --set nasnet.stem=imagenet", "omit_default": True})

    written_always: ClassVar[bool] = True   # config.json has always carried this block

    def __post_init__(self) -> None:
        require_int("nasnet.cells_per_stack", self.cells_per_stack, 1, 64)
        require_int("nasnet.filters", self.filters, 1, 4096)
        require_choice("nasnet.stem", self.stem, STEM_CHOICES)
        if self.stem == "imagenet" and self.filters < 8:
            raise ConfigError(f"nasnet.stem: the imagenet stem needs nasnet.filters >= 8 (its first cell has "
                              f"F // 4 >= 2 filters), got {self.filters}", "nasnet.stem")
        if self.seed_arch is not None:
            from dna.published import canonical_name, is_published, unknown_architecture

            if not is_published(self.seed_arch):
                raise ConfigError(f"nasnet.seed_arch: {unknown_architecture(self.seed_arch)}", "nasnet.seed_arch")
            object.__setattr__(self, "seed_arch", canonical_name(self.seed_arch))

    def check_run(self, run: RunView) -> None:
        if self.seed_arch is not None and not run.uses("nasnet"):
            raise ConfigError(f"nasnet.seed_arch seeds the nasnet search space; this run's is {run.search_space!r}",
                              "nasnet.seed_arch")
        if self.stem != "auto" and not run.uses("nasnet"):
            raise ConfigError(f"nasnet.stem sets the nasnet search space's stem; this run's is {run.search_space!r}",
                              "nasnet.stem")


@register_space
class Nasnet(SearchSpace):
    """Models of ``settings.cells_per_stack`` (N) cells per stack, ``filters`` (F)."""

    name, inherits_weights, default_selection = "nasnet", False, "aging"   # the 2019 paper's choices
    decisions = nas.DECISIONS
    settings_class = NasnetSettings
    settings: NasnetSettings

    def parse(self, obj: Any) -> nas.NasnetDNA:
        return nas.nasnet_from_dict(obj, self.bounds)

    def initial(self, rng: np.random.Generator) -> nas.NasnetDNA:
        seed = self.settings.seed_arch
        if seed is not None:
            from dna.published import published

            return published(seed).replace(mutation="initial")
        return nas.initial_nasnet(rng)

    def random(self, rng: np.random.Generator) -> nas.NasnetDNA:
        return nas.random_nasnet(rng)

    def from_decisions(self, choices: Sequence[int]) -> nas.NasnetDNA:
        return nas.nasnet_from_decisions(choices)

    def to_decisions(self, dna: nas.NasnetDNA) -> tuple[int, ...]:
        return nas.nasnet_decisions(dna)

    def build(self, dna: nas.NasnetDNA, input_shape: tuple[int, int, int], num_classes: int) -> Any:
        from dna.build_nasnet import build_nasnet

        settings = self.settings
        return build_nasnet(dna, input_shape, num_classes, cells_per_stack=settings.cells_per_stack,
                            filters=settings.filters, stem=settings.stem)

    def auto_image_size_cap(self) -> int:
        """224 when the stem will be the ImageNet stem (``imagenet``, or ``auto`` with F >= 8:
        images above 64 px then reach the first cell at a quarter of their size); 64 with the
        CIFAR stem, which runs every cell at the full size."""
        s = self.settings
        if s.stem == "cifar" or (s.stem == "auto" and s.filters < IMAGENET_STEM_MIN_FILTERS):
            return super().auto_image_size_cap()
        return IMAGENET_AUTO_SIZE_CAP

    def training_memory(self, input_shape: tuple[int, int, int], batch_size: int) -> int | None:
        """Activation bytes of one training step, for any cells, on the stem these images get
        (:func:`dna.nasnet_network.training_bytes`)."""
        s = self.settings
        stem = choose_stem(s.stem, input_shape, s.filters)
        return training_bytes(s.cells_per_stack, s.filters, stem, input_shape, batch_size)

    @staticmethod
    def synthetic_fitness(dna: nas.NasnetDNA) -> float:
        d = dna.to_dict()
        score = 0.0
        for cell in ("normal", "reduction"):
            for comb in d[cell]["combinations"]:
                score += _OP_VALUE.get(comb[1], 0.2) + _OP_VALUE.get(comb[3], 0.2)
        return 0.1 + 0.85 * (1 - math.exp(-score / 8.0))

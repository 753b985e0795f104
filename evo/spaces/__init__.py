"""Search spaces as registered units: everything evo needs to know about one genome kind.

A search space is one subclass of :class:`SearchSpace`, registered under its name (which
is also the ``kind`` in its DNA's JSON and the ``search_space`` of a run's config):

- ``parse``: an untrusted JSON object from the store -> a validated DNA within the run's
  bounds (raises ``dna.DNAError``); DNA objects have ``to_dict()``, ``content_hash()``,
  ``replace(mutation=...)``, ``learning_rate`` and ``mutation``;
- ``initial`` and ``random``: a fresh individual (the trivial start; a random architecture);
- ``mutate``: one of the space's mutations from the one registry in :mod:`mutations`,
  chosen uniformly among those that apply;
- ``build``: the torch model (only this imports torch, lazily);
- ``inherit`` (when ``inherits_weights``): copy a parent's weights into a child's model
  where they fit. A space without a rule refuses ``inherit_weights`` at ``evo init``.
- ``synthetic_fitness``: the cheap stand-in fitness of the synthetic mode.
- ``settings_class`` (optional): the space's own settings, a frozen dataclass that ``evo
  init`` validates and config.json stores under the space's name (:class:`evo.registry.Plugin`);
  the space receives them as ``self.settings``, with the run's bounds as ``self.bounds``.
- ``auto_image_size_cap`` and ``training_memory`` (optional): the largest automatic image
  size the space's networks are made for (default 64, CIFAR-like), and an estimate of the
  device memory training one child takes (default: none), both checked at ``evo init``.
- ``decisions`` / ``from_decisions`` / ``to_decisions`` (optional): the space as a sequence of
  categorical decisions, for learned controllers (``--selection rl``/``reinforce``). A space
  without them refuses those strategies at ``evo init``.

Adding a space means writing one module with a subclass decorated by
:func:`register_space` (built-ins are imported here; a separate package can register
through the ``evo.search_spaces`` entry-point group). Nothing else changes.
docs/design.md walks through a toy space.
"""

from __future__ import annotations

import abc
import hashlib
from typing import Any, ClassVar, Sequence

import numpy as np

import mutations
from dna.bounds import Bounds
from evo.data.settings import AUTO_IMAGE_SIZE_CAP
from evo.registry import Plugin, Registry, RunView


class SearchSpace(Plugin, abc.ABC):
    """One genome kind, set up for one run: its bounds, and its settings (``settings_class``;
    None when it has none)."""

    name: ClassVar[str]
    inherits_weights: ClassVar[bool] = False
    default_selection: ClassVar[str] = "pairwise"
    #: The number of choices of each decision a controller makes to describe one
    #: architecture, in the order it makes them; None: the space has no such encoding.
    decisions: ClassVar[tuple[int, ...] | None] = None

    def __init__(self, bounds: Bounds, settings: Any = None):
        self.bounds = bounds
        if settings is None and self.settings_class is not None:
            settings = self.settings_class()
        self.settings = settings

    @abc.abstractmethod
    def parse(self, obj: Any) -> Any:
        """A validated DNA from an untrusted JSON object (raises DNAError, never anything else)."""

    @abc.abstractmethod
    def initial(self, rng: np.random.Generator) -> Any:
        """The individual a run starts from."""

    @abc.abstractmethod
    def random(self, rng: np.random.Generator) -> Any:
        """A random valid individual of this space (the random-search baseline)."""

    def mutate(self, dna: Any, rng: np.random.Generator) -> Any:
        """A validated child of ``dna`` by one of this space's registered mutations."""
        return mutations.mutate(dna, rng, self.bounds, space=self.name)

    @abc.abstractmethod
    def build(self, dna: Any, input_shape: tuple[int, int, int], num_classes: int) -> Any:
        """The torch model of ``dna`` for inputs of ``input_shape`` (C, H, W)."""

    def inherit(self, parent_weights: Any, parent_dna: Any, child: Any, model: Any) -> Any:
        """Load the parent's tensors into ``model`` where they fit; return a report with
        ``fraction``, ``tensors_inherited``, ``tensors_fresh``. Only when ``inherits_weights``."""
        raise NotImplementedError(f"search space {self.name!r} has no weight-inheritance rule")

    def auto_image_size_cap(self) -> int:
        """The largest size (pixels, square) the automatic image size of a user dataset may
        take for this space's networks under its settings (``evo init`` writes it into the run's
        ``data.auto_size_cap``). Default: 64, the CIFAR-like sizes every space handles."""
        return AUTO_IMAGE_SIZE_CAP

    def training_memory(self, input_shape: tuple[int, int, int], batch_size: int) -> int | None:
        """An estimate of the device memory (bytes) that training one child on batches of
        ``batch_size`` images of ``input_shape`` (C, H, W) takes, whatever the child's
        architecture, or None when the space makes none (then ``evo init`` checks nothing).
        Torch-free."""
        return None

    def from_decisions(self, choices: Sequence[int]) -> Any:
        """The valid DNA that a controller's ``choices`` (one per :attr:`decisions`) describe."""
        raise NotImplementedError(f"search space {self.name!r} has no decision encoding")

    def to_decisions(self, dna: Any) -> tuple[int, ...]:
        """``dna`` as a controller's choices (inverse of :meth:`from_decisions`)."""
        raise NotImplementedError(f"search space {self.name!r} has no decision encoding")

    @staticmethod
    def synthetic_fitness(dna: Any) -> float:
        """A deterministic stand-in for validation accuracy in [0, 1] (synthetic mode).

        The default is a hash of the DNA (no signal to search for); spaces override it with
        a function that rewards what helps real networks.
        """
        digest = hashlib.sha256(dna.content_hash().encode()).digest()
        return int.from_bytes(digest[:4], "little") / 2**32


_REGISTRY: Registry[type[SearchSpace]] = Registry(
    "search space", ("evo.spaces.large_scale", "evo.spaces.nasnet", "evo.spaces.nasbench201"), "evo.search_spaces")

register_space = _REGISTRY.register
"""Class decorator: make a :class:`SearchSpace` subclass the space named by its ``name``."""


def space_names() -> list[str]:
    """Names of every registered search space."""
    return _REGISTRY.names()


def space_class(name: str) -> type[SearchSpace]:
    """The registered class of search space ``name``; ValueError naming the known ones."""
    return _REGISTRY.get(name)


def make_space(run: RunView) -> SearchSpace:
    """The search space a run names, set up with the run's bounds and the space's settings."""
    cls = space_class(run.search_space)
    block = cls.settings_block()
    return cls(run.bounds, None if block is None else run.settings_of(block))


def for_config(run: RunView) -> SearchSpace:
    """Alias of :func:`make_space` (the name earlier code used)."""
    return make_space(run)

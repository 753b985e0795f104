"""Search strategies as registered units: who is the parent, and who dies.

A strategy is one subclass of :class:`Strategy`, registered under its name (the run
config's ``selection``). Each step a worker hands it the live population (one listing: ids,
fitnesses, births) and asks for a :class:`Proposal`: a parent to copy and mutate (or a
fresh random architecture, or a DNA the strategy made itself) and the victim to kill once
the child is published. If that victim is gone by then (another worker killed it), the
worker asks :meth:`Strategy.victim` for another. After publishing, :meth:`Strategy.observe`
sees the child and its fitness.

A strategy gets a view of the run (:class:`evo.registry.RunView`), its own settings
(``settings_class``, as ``self.settings``: see :class:`evo.registry.Plugin`), the run's search
space and the store's policy versions (``store.policy``, a :class:`storage.PolicyFacet`;
never a backend), so one that keeps shared state (a learned controller) keeps it in the
store, with create-if-absent as its only mutual exclusion, like everything else in evo.

Built-ins: ``pairwise`` (2017: two at random, the fitter is the parent, the other dies),
``aging`` (2019: the best of S sampled is the parent, the oldest dies), ``random``
(random search: fresh architectures, the less fit of a random pair dies), and the learned
``rl`` (NASNet's PPO controller) and ``reinforce`` (:mod:`evo.strategies.learned`), which
keep their policy in the store as versioned state. A separate package
can register more through the ``evo.search_strategies`` entry-point group.
"""

from __future__ import annotations

import abc
import bisect
import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from evo.registry import Plugin, Registry, RunView

if TYPE_CHECKING:
    from evo.spaces import SearchSpace
    from storage import IndividualInfo, PolicyFacet

@dataclass(frozen=True)
class Population:
    """What a strategy sees: the live individuals (oldest first: a listing is sorted by id,
    and ids begin with the birth time) and the target size P."""

    members: tuple["IndividualInfo", ...]
    size: int

    def __len__(self) -> int:
        return len(self.members)

    def without(self, ident: str) -> "Population":
        """The same population less the individual ``ident`` (itself if it is not listed)."""
        i = bisect.bisect_left(self.members, ident, key=_by_id)
        if i < len(self.members) and self.members[i].id == ident:
            return Population(self.members[:i] + self.members[i + 1:], self.size)
        return self

    def has(self, ident: str) -> bool:
        """True if the individual ``ident`` is listed."""
        i = bisect.bisect_left(self.members, ident, key=_by_id)
        return i < len(self.members) and self.members[i].id == ident


_by_id = operator.attrgetter("id")


@dataclass(frozen=True)
class Proposal:
    """How to make the next child.

    ``parent``: the individual to read, copy and mutate (its weights are inherited when the
    space and run allow). ``fresh``: no parent; a random architecture of the space.
    ``dna``: no parent; this DNA, made by the strategy itself. ``victim``: who dies once the
    child is published (None: ask :meth:`Strategy.victim` then). ``note``: recorded in the
    child's metrics (e.g. the version of a policy that proposed it).
    """

    parent: "IndividualInfo | None" = None
    victim: "IndividualInfo | None" = None
    fresh: bool = False
    dna: Any = None
    note: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Published:
    """What :meth:`Strategy.observe` is told after a child is published."""

    id: str
    fitness: float
    dna: Any
    proposal: Proposal
    metrics: Mapping[str, Any]
    worker: str = "-"


class Strategy(Plugin, abc.ABC):
    """One way of choosing parents and victims, set up for one run: ``run`` (what it may
    read of the run), ``settings`` (its own, or None), ``space`` and ``policy`` (the store's policy versions, or None)."""

    name: ClassVar[str]

    needs_decisions: ClassVar[bool] = False   # True: only for spaces with a decision encoding

    def __init__(self, run: RunView, policy: "PolicyFacet | None", space: "SearchSpace"):
        self.run = run
        self.policy = policy   # the store's policy versions (strategies that learn keep their state there)
        self.space = space
        block = self.settings_block()
        self.settings = None if block is None else run.settings_of(block)

    @abc.abstractmethod
    def propose(self, population: Population, rng: np.random.Generator) -> Proposal:
        """The next child's recipe; ``population`` has at least two members."""

    @abc.abstractmethod
    def victim(self, population: Population, rng: np.random.Generator) -> "IndividualInfo | None":
        """Who dies now that the population is above P (None: nobody can be picked)."""

    def observe(self, child: Published) -> None:
        """A child this worker made was published (strategies that learn, learn here)."""


_REGISTRY: Registry[type[Strategy]] = Registry(
    "selection", ("evo.strategies.evolution", "evo.strategies.random_search", "evo.strategies.learned"), "evo.search_strategies")

register_strategy = _REGISTRY.register
"""Class decorator: make a :class:`Strategy` subclass the strategy named by its ``name``."""


def strategy_names() -> list[str]:
    """Names of every registered strategy."""
    return _REGISTRY.names()


def strategy_class(name: str) -> type[Strategy]:
    """The registered class of strategy ``name``; ValueError naming the known ones."""
    return _REGISTRY.get(name)


def make_strategy(run: RunView, policy: "PolicyFacet | None", space: "SearchSpace | None" = None) -> Strategy:
    """The strategy a run names (its ``selection``), with the store's policy versions
    (``store.policy``; None for a strategy that keeps no state) and the run's search space
    (built from the run when not given)."""
    if space is None:
        from evo.spaces import make_space

        space = make_space(run)
    return strategy_class(run.selection)(run, policy, space)

"""The worker's collaborators as types: what :class:`evo.search.worker.Worker` needs of each.

* :class:`Evaluator` (a ``typing.Protocol``, runtime-checkable): turns a child DNA into an
  :class:`~evo.train.outcome.Outcome`. The built-in ones (``evo.train.synthetic``,
  ``evo.train.tabular``, ``evo.train.evaluator``) have every member; the worker calls them
  without probing.
* :class:`~evo.spaces.SearchSpace` and :class:`~evo.strategies.Strategy`: the plug-in base
  classes (abstract base classes; a plug-in subclasses them), re-exported here.
* The store: the worker receives the store's facets it uses (``storage.PopulationFacet``,
  ``storage.RunInfoFacet``, ``storage.HistoryFacet``), typed by their protocols in ``storage``.

Torch-free: importing this module imports neither torch nor any evaluator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from evo.spaces import SearchSpace
from evo.strategies import Strategy

if TYPE_CHECKING:
    from evo.train.outcome import Outcome

__all__ = ["Evaluator", "SearchSpace", "Strategy"]


@runtime_checkable
class Evaluator(Protocol):
    """Trains and validates a child (or stands in for that).

    ``device_name``: shown in heartbeats (``cuda:0``, ``cpu``, ``synthetic``, ``table``).
    ``prepare()``: load what every child needs (the dataset, the table) once; the worker calls
    it at the start of :meth:`~evo.search.worker.Worker.run`, with heartbeats going on; calling
    it again does nothing. ``evaluate(...)``: the child's :class:`Outcome`; ``parent_dna`` and
    ``parent_weights`` (safetensors bytes) are given when the child inherits, ``seed`` seeds
    its training, ``progress()`` is called now and then while it trains (keeps the heartbeat
    fresh). Any exception counts as the failure of this child (the worker's circuit breaker
    stops it after ``max_failed_children`` in a row).
    """

    device_name: str

    def prepare(self) -> None: ...

    def evaluate(self, child: Any, *, parent_dna: Any = None, parent_weights: bytes | None = None,
                 seed: int = 0, progress: Callable[[], Any] | None = None) -> Outcome: ...

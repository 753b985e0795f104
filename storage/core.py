"""What every facet of a store stands on: the backend, the run's settings, the clock, the
fault hook, the memo of immutable records and the live listing (see :mod:`storage.store`)."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

import dna as dna_lib

from .backend import Backend
from .crash import FaultHook, no_fault
from .readcache import cache_for
from .records import ALIVE, IndividualInfo, check_id, parse_alive_name
from .verify import DnaValidator

# Listings that differ from the one before in more names than this are parsed and sorted
# afresh; fewer changes (the usual case: a few births and deaths between a worker's two
# listings) are merged into the sorted view.
MERGE_AT_MOST = 64


class LiveNames:
    """The ``alive/`` names of the latest listing, parsed and sorted by id, kept between
    listings so that each name is parsed once and only the names that came or went cost.

    A name never changes meaning (an id is born once and its fitness is in the name), so its
    parse can be kept as long as the name is listed; nothing of a name that left the listing
    is kept, so this is never larger than the listing. Names that are not an individual's
    are remembered as such (None) and never returned.
    """

    def __init__(self) -> None:
        self._info: dict[str, IndividualInfo | None] = {}
        self._names: set[str] = set()   # the keys of _info, as a set for the differences
        self._order: list[str] = []     # the individuals' names, sorted: by id, as ids lead them
        self._lock = threading.Lock()

    def update(self, names: list[str]) -> list[IndividualInfo]:
        """The individuals among ``names`` (a whole new listing), oldest first."""
        with self._lock:
            info, order = self._info, self._order
            listed = set(names)
            gone, came = self._names - listed, listed - self._names
            if len(gone) + len(came) > MERGE_AT_MOST:
                info = {n: info[n] if n in info else parse_alive_name(n) for n in listed}
                order = sorted(n for n, i in info.items() if i is not None)
            else:
                for n in gone:
                    if info.pop(n) is not None:
                        del order[bisect.bisect_left(order, n)]
                for n in came:
                    info[n] = parse_alive_name(n)
                    if info[n] is not None:
                        bisect.insort(order, n)
            self._info, self._names, self._order = info, listed, order
            return list(map(info.__getitem__, order))


class StoreCore:
    """What every facet of a store shares (never handed to collaborators): the backend, the
    run's settings, the clock, the fault hook, what this store object has read of objects
    that never change (``memo``, ``read_cache``) and the latest live listing.

    ``keep_best``: keep the weights of the best K dead individuals (by fitness, higher is
    better). ``bounds`` and ``dna_validator``: the run's DNA bounds, and the check of DNA of
    kinds other than ``large_scale``; every DNA read from the store (live, killed, in the
    history) is validated with them (without bounds, only the DNA's structure is checked).
    ``clock``: unix time source (tests pass a fake one to age things). ``fault``: called at
    each step boundary of the store's protocols (:mod:`storage.crash`; tests only).
    """

    def __init__(self, backend: Backend, *, keep_best: int = 0,
                 dna_validator: DnaValidator | None = None, bounds: dna_lib.Bounds | None = None,
                 clock: Callable[[], float] = time.time, fault: FaultHook | None = None):
        if keep_best < 0:
            raise ValueError("keep_best must be >= 0")
        self.backend = backend
        self.keep_best = keep_best
        self.dna_validator = dna_validator
        self.bounds = bounds
        self.fault = fault or no_fault
        self.clock = clock
        # What this object has read of objects that never change (see storage.immutable), and
        # the local read cache of a remote store (None: local stores, or the cache is off).
        self.memo: dict[str, dict] = {}
        self.read_cache = cache_for(backend.url)
        self._live = LiveNames()   # the latest alive/ listing, parsed (see list_alive)

    @property
    def url(self) -> str:
        """The store's URL (no credentials)."""
        return self.backend.url

    def now(self) -> float:
        """The store's clock (unix seconds): what it writes as times of births and deaths."""
        return self.clock()

    def list_alive(self) -> list[IndividualInfo]:
        """Live individuals (id, fitness, birth), oldest first, from ONE listing; reads nothing."""
        return self._live.update(self.backend.list(ALIVE))

    def find(self, ident: str) -> IndividualInfo | None:
        """The listing entry of a live individual, or None (costs one listing)."""
        check_id(ident)
        return next((i for i in self.list_alive() if i.id == ident), None)

    def resolve(self, target: IndividualInfo | str) -> IndividualInfo | None:
        """``target`` itself when it is a listing entry, else the live individual of that id."""
        return target if isinstance(target, IndividualInfo) else self.find(target)

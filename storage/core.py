"""What every part of the population store stands on: the backend, the run's settings, the
clock, the fault hook, the config and the live listing (see :mod:`storage.population`)."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import dna as dna_lib

from .backend import TEMP_PREFIX, Backend, StoreError, UnreadableEntry
from .crash import FaultHook, no_fault
from .readcache import cache_for
from .records import ALIVE, CONFIG_KEY, HISTORY, MAX_CONFIG_BYTES, IndividualInfo, check_id, parse_alive_name
from .segments import SEGMENTS
from .verify import DnaValidator

Store = TypeVar("Store", bound="StoreCore")
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
    """One population directory; safe to use from many processes and machines at once.

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
        self._clock = clock
        # What this object has read of objects that never change (see storage.readers), and
        # the local read cache of a remote store (None: local stores, or the cache is off).
        self._memo: dict[str, dict] = {}
        self._read_cache = cache_for(backend.url)
        self._live = LiveNames()   # the latest alive/ listing, parsed (see list_alive)

    @property
    def url(self) -> str:
        """The store's URL (no credentials)."""
        return self.backend.url

    def now(self) -> float:
        """The store's clock (unix seconds): what it writes as times of births and deaths."""
        return self._clock()

    def with_run(self: Store, *, keep_best: int | None = None, bounds: dna_lib.Bounds | None = None,
                 dna_validator: DnaValidator | None = None) -> Store:
        """The same store with the run's settings (from its config); None keeps the current."""
        return type(self)(
            self.backend, keep_best=self.keep_best if keep_best is None else keep_best,
            dna_validator=dna_validator or self.dna_validator, bounds=bounds or self.bounds,
            clock=self._clock, fault=self.fault)

    def with_keep_best(self: Store, keep_best: int) -> Store:
        """The same store with another ``keep_best`` (e.g. from the run config)."""
        return self.with_run(keep_best=keep_best)

    # ----- the run's config -----
    def init_config(self, text: str) -> bool:
        """Store ``config.json`` if there is none yet; True iff this call stored it."""
        return self.backend.create(CONFIG_KEY, text.encode("utf-8"))

    def has_config(self) -> bool:
        """True if something has the name ``config.json`` (one stat; nothing is read)."""
        return self.backend.exists(CONFIG_KEY)

    def read_config(self) -> str:
        """The text of ``config.json``; StoreError if this is not a population directory."""
        try:
            raw = self.backend.read(CONFIG_KEY, MAX_CONFIG_BYTES)
        except FileNotFoundError:
            raise StoreError(f"{self.url}: no config.json "
                             "(not a population directory; run 'evo init')") from None
        except UnreadableEntry as exc:
            raise StoreError(f"{self.url}/{exc}") from None
        except OSError as exc:  # the store itself is unreachable or forbidden
            raise StoreError(f"{self.url}: cannot read config.json: {exc.strerror or exc}") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError(f"{self.url}/config.json is not UTF-8 text") from None

    # ----- the live population -----
    def list_alive(self) -> list[IndividualInfo]:
        """Live individuals (id, fitness, birth), oldest first, from ONE listing; reads nothing.

        May include a *zombie* (killed by a worker that crashed before cleaning up): killing
        it again returns False and removes it from the listing.
        """
        return self._live.update(self.backend.list(ALIVE))

    def has_individuals(self) -> bool:
        """True if ``alive/``, ``history/`` or ``segments/`` holds anything but temp files
        (three listings): the store has (had) individuals, whatever state their names are in."""
        return any(not name.startswith(TEMP_PREFIX)
                   for folder in (ALIVE, HISTORY, SEGMENTS) for name in self.backend.list(folder))

    def still_listed(self, info: IndividualInfo) -> bool:
        """True if ``info``'s commit is still in ``alive/`` now (one stat, no listing)."""
        return self.backend.exists(info.key)

    def find(self, ident: str) -> IndividualInfo | None:
        """The listing entry of a live individual, or None (costs one listing)."""
        check_id(ident)
        return next((i for i in self.list_alive() if i.id == ident), None)

    def _resolve(self, target: IndividualInfo | str) -> IndividualInfo | None:
        return target if isinstance(target, IndividualInfo) else self.find(target)

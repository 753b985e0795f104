"""The facets of a store as protocols: type a collaborator by the facets it receives.

``storage.open_store(url)`` returns a :class:`storage.PopulationStore` whose attributes
``population``, ``history``, ``runinfo``, ``datacache``, ``retrains`` and ``policy``
implement these; a collaborator that only publishes and kills takes a
:class:`PopulationFacet`, one that only reads the census a :class:`HistoryFacet`, and a
test may hand it a fake. Each method's full contract is on the implementing class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import dna as dna_lib

from .datacache import DataState
from .history import Census
from .reading import Broken
from .records import MAX_PAYLOAD_BYTES, Individual, IndividualInfo
from .retrain import Claim, RetrainState
from .runinfo import ConfigSeal
from .rollup import ROLLUP_INTERVAL, RollupResult
from .segments import SEGMENT_RECORDS, WORKER_MIN_AGE
from .verify import DnaValidator

Commit = dict[str, Any]



class PopulationFacet(Protocol):
    """What a collaborator may use of the live population (``store.population``);
    :class:`storage.population.Population` implements it."""

    def list_alive(self) -> list[IndividualInfo]:
        """Live individuals (id, fitness, birth), oldest first, from ONE listing; reads nothing."""

    def find(self, ident: str) -> IndividualInfo | None:
        """The listing entry of a live individual, or None (costs one listing)."""

    def still_listed(self, info: IndividualInfo) -> bool:
        """True if ``info``'s commit is still in ``alive/`` now (one stat, no listing)."""

    def has_individuals(self) -> bool:
        """True if ``alive/``, ``history/`` or ``segments/`` holds anything but temp files (three
        listings): the store has (had) individuals, whatever state their names are in."""

    def scan_alive(self, infos: list[IndividualInfo] | None = None, *, with_dna: bool = True,
                   ) -> Iterator[tuple[IndividualInfo, Commit | Broken | None]]:
        """For each live individual (``infos``, default: one listing), its checked commit (DNA
        validated against the run's bounds), a Broken naming its problem, or None if it left the
        listing meanwhile. Reads in bounded batches; quarantines nothing. ``with_dna=False``: the
        DNA is neither checked nor returned."""

    def verify_commit(self, info: IndividualInfo, raw: bytes, bounds: dna_lib.Bounds | None = None,
                      dna_validator: DnaValidator | None = None) -> Commit:
        """The commit object ``raw`` of ``info``, checked field by field and its DNA validated
        (against ``bounds``/``dna_validator``, else the store's); CorruptRecord if not."""

    def read_individual(self, target: IndividualInfo | str, bounds: dna_lib.Bounds | None = None,
                        dna_validator: DnaValidator | None = None) -> Individual | None:
        """The whole individual (commit checked, DNA validated, weights' sha256 verified)."""

    def publish(self, dna: dict[str, Any], weights: bytes, *, parent: str | None, mutation: str,
                fitness: float, worker: str, metrics: dict[str, Any] | None = None) -> IndividualInfo:
        """Make a new individual visible, whole, in one step; return its listing entry."""

    def kill(self, target: IndividualInfo | str, *, worker: str, reason: str = "selection") -> bool:
        """Kill a live individual, exactly once across all workers."""

    def quarantine(self, target: IndividualInfo | str, reason: str, *, raw: bytes | None = None,
                   unusable: bool = False) -> bool:
        """Move a live individual to ``quarantine/`` with ``reason``; True iff this call did."""

    def keep_weights_if_best(self, record: dict[str, Any]) -> bool:
        """Mark a dead individual's weights as kept if it is among the best ``keep_best``; prune the
        rest (see :mod:`storage.kept`). True iff they are kept."""


class HistoryFacet(Protocol):
    """What a collaborator may use of everyone alive and dead (``store.history``);
    :class:`storage.history.History` implements it."""

    def census(self, *, read_alive: bool = True, history_dna: bool = True, alive_dna: bool = True) -> Census:
        """One consistent read of every individual (see :class:`Census`): one listing of ``alive/``
        (and, with ``read_alive``, its commits), then every history record (the segments and
        ``history/``) and every record of ``quarantine/``. Nothing is quarantined or written.
        ``history_dna=False``: the dead individuals' records come without their DNA (status, plots,
        lineage and audit never use it), and their DNA is neither parsed nor checked (a segment is
        read only up to its records' other fields: many times faster, and far less memory); every
        other field is checked as always. ``alive_dna=False``: likewise for the live commits."""

    def births(self) -> list[float]:
        """Birth times (unix seconds, sorted) of every individual alive or dead, from one listing of
        ``alive/``, then one of ``history/`` and the ids of the history segments (read once per
        store object)."""

    def history_layout(self) -> dict[str, int]:
        """Where the history is kept (for benchmarks and audits): ``segments`` (valid ones),
        ``broken_segments``, ``in_segments`` (distinct ids they hold), ``files`` (records in
        ``history/``) and ``files_also_in_segments`` (left by a roll-up that died)."""

    def dead_ids(self) -> set[str]:
        """Ids with a history record: the names in ``history/`` and the ids the valid segments hold
        (each segment read once per store object, without its DNA)."""

    def read_history(self) -> list[Commit]:
        """The record of every individual that died (commit fields + death, killer, reason)."""

    def scan_history(self, *, with_dna: bool = True) -> tuple[list[Commit], list[Broken]]:
        """(valid history records sorted by death, the broken entries of the history)."""

    def check_history_record(self, key: str, rec: Any, *, with_dna: bool = True) -> Commit:
        """``rec`` (parsed from ``key``) if it is a valid history record, DNA validated against the
        run's bounds; CorruptRecord naming the problem if not. ``with_dna=False``: all but the DNA
        is checked, and the result has no ``dna``."""

    def count_history(self) -> int:
        """How many individuals have died (the ids of :meth:`dead_ids`)."""

    def list_quarantine(self) -> list[dict[str, Any]]:
        """Quarantine records (id, reason, time, the original commit), by id; unreadable ones are
        skipped with a warning."""

    def scan_quarantine(self) -> tuple[list[dict[str, Any]], list[Broken]]:
        """(quarantine records by id, the entries of ``quarantine/`` that are broken)."""

    def list_kept(self) -> list[IndividualInfo]:
        """Dead individuals whose weights are kept, best first (``keep_best``)."""

    def read_kept(self, target: IndividualInfo | str) -> Individual | None:
        """A dead individual with kept weights, verified like a live one; None if unavailable."""

    def dna_of(self, idents: list[str]) -> dict[str, dict[str, Any]]:
        """The DNA of each of ``idents`` whose record can be read and checks out, DNA included
        (validated against the run's bounds): a live one's from its commit, a dead one's from its
        history file or the segment that holds it. Ids without such a record are left out. For a
        reader that took its census without DNA and needs a few (``evo report``'s drawings)."""

    def roll_up(self, *, min_age: float = WORKER_MIN_AGE, segment_records: int = SEGMENT_RECORDS,
                max_segments: int | None = None) -> RollupResult:
        """Roll the oldest sealed history records up into segments of ``segment_records`` (full
        segments only), at most ``max_segments`` of them (:mod:`storage.rollup`). Safe with any
        number of concurrent rollers, readers and killers."""

    def roll_up_soon(self, *, min_age: float = WORKER_MIN_AGE, segment_records: int = SEGMENT_RECORDS,
                     interval: float = ROLLUP_INTERVAL) -> bool:
        """What a worker calls after its kills: at most once per ``interval`` seconds (with jitter)
        start one roll-up of at most one segment in a background thread, unless one still runs. True
        if it started one. Never raises."""

    def wait_for_roll_up(self, timeout: float | None = None) -> None:
        """Wait for a background roll-up started by :meth:`roll_up_soon` to finish."""


class RunInfoFacet(Protocol):
    """What a collaborator may use of the run's config, heartbeats, marks and launch records
    (``store.runinfo``); :class:`storage.runinfo.RunInfo` implements it."""

    def init_config(self, text: str) -> bool:
        """Store ``config.json`` if there is none yet; True iff this call stored it (and then
        its seal, ``state/config.sha256``)."""

    def seal_config(self, text: str) -> bool:
        """Record the seal of ``config.json`` = ``text`` if none is recorded; True iff recorded."""

    def config_seal(self, text: str) -> ConfigSeal:
        """Whether ``text`` is the config ``evo init`` wrote (a :class:`storage.runinfo.ConfigSeal`)."""

    def has_config(self) -> bool:
        """True if something has the name ``config.json`` (one stat; nothing is read)."""

    def read_config(self) -> str:
        """The text of ``config.json``; StoreError if this is not a population directory."""

    def heartbeat(self, worker_id: str, info: dict[str, Any] | None = None) -> None:
        """Record that ``worker_id`` is alive now (overwrites its previous heartbeat)."""

    def list_workers(self) -> list[dict[str, Any]]:
        """Latest heartbeat of every worker (``worker``, ``time``, ``info``), by worker id."""

    def read_workers(self) -> tuple[list[dict[str, Any]], list[Broken]]:
        """(the heartbeats that check out, the ones that do not as ``Broken``)."""

    def mark(self, name: str) -> bool:
        """Create marker ``state/{name}`` if absent; True iff this call created it."""

    def has_mark(self, name: str) -> bool:
        """True if marker ``state/{name}`` exists."""

    def record_launch(self, name: str, info: dict[str, Any]) -> None:
        """Write ``launches/{name}.json`` (``name``, ``time``, ``info``): what a launcher started,
        e.g. a SLURM array's job id, so that ``evo status`` can ask the scheduler about it."""

    def list_launches(self) -> list[dict[str, Any]]:
        """Every launch record (``name``, ``time``, ``info``), by name; unreadable ones are skipped."""


class DataCacheFacet(Protocol):
    """What a collaborator may use of the run's decoded datasets (``store.datacache``);
    :class:`storage.datacache.DataCache` implements it."""

    @property
    def url(self) -> str:
        """The store's URL (no credentials), for messages about its cache."""

    def now(self) -> float:
        """The store's clock (unix seconds): what claims and progress records are stamped with."""

    def data_state(self, key: str) -> DataState:
        """Generations of cache ``key`` that have a manifest, a claim or progress (one listing)."""

    def claim_data(self, key: str, generation: int, info: dict[str, Any]) -> bool:
        """Create the claim on generation ``generation`` of cache ``key`` if nobody has; True iff
        this call did (then this caller decodes it)."""

    def claim_verdict(self, key: str, generation: int) -> str | None:
        """None if the claim of a generation is a regular file whose fields check out; else
        the problem, in words."""

    def claim_next(self, key: str, state: DataState, info: dict[str, Any]) -> int | None:
        """Claim the generation after the newest of ``state``'s verified chain (moving aside
        or skipping foreign entries at claim names); the generation won, or None (wait)."""

    def read_data_claim(self, key: str, generation: int) -> dict[str, Any] | None:
        """The claim of a generation if it checks out (None if absent, unreadable or
        foreign: it is only shown)."""

    def write_data_progress(self, key: str, generation: int, info: dict[str, Any]) -> None:
        """Overwrite the decoder's progress record of a generation (``info`` + ``time``)."""

    def read_data_progress(self, key: str, generation: int) -> dict[str, Any] | None:
        """The latest progress record of a generation; None if absent; ``{"foreign":
        PROBLEM}`` if it is unreadable or out of bounds (nobody's progress)."""

    def write_data_part(self, key: str, generation: int, part: str, blob: bytes) -> dict[str, Any]:
        """Write one split's arrays under a name unique to this attempt; returns what the manifest
        records of it: ``{"key", "size", "sha256"}``."""

    def commit_data(self, key: str, generation: int, manifest: dict[str, Any]) -> bool:
        """Create the manifest of a generation (only if absent): the cache exists from now on. True
        iff this call created it."""

    def read_data_manifest(self, key: str, generation: int) -> dict[str, Any] | None:
        """The manifest of a generation as a JSON object; None if absent. CorruptRecord (one line)
        when it exists but is unreadable, oversized, not JSON or not an object."""

    def read_data_part(self, part: dict[str, Any]) -> bytes:
        """The bytes of one part as a manifest describes it (``key``, ``size``, ``sha256``), read
        with its size as the bound and checked. CorruptRecord (one line naming the key) when the
        description is malformed or the object is missing, unreadable, of another size or another
        SHA-256."""

    def delete_data_part(self, part_key: str) -> None:
        """Remove a part this caller wrote and did not commit (missing is fine)."""


class RetrainFacet(Protocol):
    """What a collaborator may use of the final trainings (``store.retrains``);
    :class:`storage.retrain.RetrainQueue` implements it."""

    def put_retrain_request(self, rid: str, request: dict[str, Any]) -> bool:
        """Create ``retrain/{rid}.json`` with ``request`` if absent; True iff this call did."""

    def read_retrain_request(self, rid: str) -> dict[str, Any] | Broken | None:
        """The checked request of ``rid``, a Broken naming its problem, or None if absent."""

    def list_retrains(self) -> list[str]:
        """Ids of every retrain with a request (one listing), sorted."""

    def claim_chain(self, rid: str) -> tuple[int | None, int, list[int]]:
        """``(holder, next, foreign)``: the chain's highest valid claim (None: none), the number the
        next claim takes and the numbers in the chain held by foreign entries (judged by this
        reader's clock; a claim beyond the chain's end is ignored)."""

    def fill_claim(self, rid: str, n: int) -> bool:
        """Create claim ``n`` as a dead one where a foreign entry inside the chain was moved aside;
        True iff this call created it."""

    def claim_retrain(self, rid: str, owner: dict[str, Any], lease: float, *,
                      retry_failed: bool = False) -> Claim | None:
        """Claim ``rid`` for training; the Claim, or None when it is done, held by a claim whose
        holder beat within its lease, failed (its last heartbeat says ``state: failed``; unless
        ``retry_failed``), or another process won this claim's race."""

    def retrain_beat(self, claim: Claim, info: dict[str, Any]) -> None:
        """Write the holder's heartbeat (``time`` now, ``info``: progress and identity)."""

    def retrain_still_mine(self, claim: Claim) -> bool:
        """True while no later valid claim is in the chain and the retrain is not done."""

    def save_retrain_checkpoint(self, claim: Claim, step: int, blob: bytes, info: dict[str, Any] | None = None,
                                keep: int = 2) -> str:
        """Store a checkpoint of ``step`` (weights first, then the commit); prune all but the newest
        ``keep``. Returns the commit's key. A commit of that step made by someone else first is kept
        (its blob is as good) and ours is deleted."""

    def load_retrain_checkpoint(self, rid: str,
                                max_size: int = MAX_PAYLOAD_BYTES) -> tuple[dict[str, Any], bytes] | None:
        """``(commit, blob)`` of the newest checkpoint whose blob verifies and whose commit declares
        at most ``max_size`` bytes (never read past it), or None."""

    def prune_retrain_checkpoints(self, rid: str, keep: int = 2) -> int:
        """Delete all but the newest ``keep`` checkpoints (commit first, then its blobs); returns
        how many were deleted. Also deletes the done retrain's last ones when ``keep`` is 0."""

    def write_retrain_metrics(self, claim: Claim, metrics: list[dict[str, Any]]) -> None:
        """Overwrite ``metrics.json`` with the per-epoch metrics so far."""

    def finish_retrain(self, claim: Claim, files: dict[str, bytes], result: dict[str, Any]) -> bool:
        """Write the exported model's ``files`` under ``export/``, then create ``result.json``
        (``result`` plus each file's SHA-256 and size). True iff this call made the result.
        ValueError for a file name the layout does not allow (nothing is written then)."""

    def read_retrain_export(self, rid: str) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        """``(result, files)`` of a done retrain, every file verified against the result's SHA-256;
        None when it is not done. CorruptRecord (one line) when something does not check out."""

    def read_retrain_result(self, rid: str) -> dict[str, Any] | Broken | None:
        """The checked result of ``rid``, a Broken, or None when it is not done."""

    def retrain_state(self, rid: str) -> RetrainState:
        """Everything :class:`RetrainState` says about ``rid``, from one listing and a few bounded
        reads."""

    def retrain_states(self) -> list[RetrainState]:
        """:meth:`retrain_state` of every retrain with a request."""


class PolicyFacet(Protocol):
    """What a collaborator may use of the learned strategy's policy versions
    (``store.policy``); :class:`storage.policy.PolicyVersions` implements it."""

    @property
    def url(self) -> str:
        """The store's URL (no credentials), for messages about its versions."""

    def now(self) -> float:
        """The store's clock (unix seconds): what a writer stamps the updates of a version with."""

    def policy_versions(self) -> list[int]:
        """The policy versions present, ascending (one listing; names of other forms are ignored;
        ``evo check`` reports them)."""

    def read_policy(self, version: int) -> bytes | None:
        """Version ``version``'s bytes, or None if it is absent (never created, or pruned)."""

    def create_policy(self, version: int, data: bytes) -> bool:
        """Create version ``version`` if no version of that number exists; True iff this call
        created it (exactly one of many racing callers does)."""

    def delete_policy(self, version: int) -> None:
        """Remove version ``version`` (a writer withdrawing an orphan it just created)."""

    def move_policy_aside(self, version: int) -> str:
        """Move an unusable version (corrupt, foreign, planted) as it is into ``quarantine/moved/``
        (``evo check --repair``); its new key. OSError if the store does not allow it."""

    def intake(self) -> dict[int, list[int]]:
        """The intake slots present (children taken in on top of a version, not learned from
        yet): version -> its slots, ascending (one listing)."""

    def read_intake(self, version: int, slot: int) -> bytes | None:
        """Slot ``slot`` of version ``version``'s intake, or None if it is absent."""

    def create_intake(self, version: int, slot: int, data: bytes) -> bool:
        """Create slot ``slot`` of version ``version``'s intake if it is free; True iff this
        call created it (exactly one of many racing callers does)."""

    def delete_intake(self, version: int, slot: int) -> None:
        """Remove one intake slot (a writer withdrawing a slot it created on a pruned version)."""

    def move_intake_aside(self, version: int, slot: int) -> str:
        """Move an unusable intake slot as it is into ``quarantine/moved/`` (``evo check
        --repair``); its new key. OSError if the store does not allow it."""

    def prune_policies(self, below: int) -> int:
        """Delete the versions numbered below ``below`` and their intake slots (the caller
        keeps the newest few); the number of versions deleted. Entries that cannot be deleted stay, for ``evo check``."""

"""Final trainings ("retrains") of individuals or named architectures, kept in the population
directory beside the search (docs/layout.md, ``retrain/``).

One retrain is one (architecture, size, dataset, settings) request, named ``{label}-{hash}``
(the label is an individual's id or an architecture's name; the hash is of the whole
request). Everything about it is under ``retrain/``:

- ``retrain/{rid}.json``: the request, created once (create-if-absent).
- ``retrain/{rid}/claim-{n}.json``: the n-th claim, created if absent. Claims form a chain
  from ``claim-000000``: it is walked number by number while a name is taken, and ends at
  the first free number, the next claim's. A claim that is not one (garbage, another
  number's or retrain's, dated more than ``CLOCK_SKEW`` ahead of the reader's clock) or a
  non-file at a number is foreign: skipped, never the holder; a claim beyond the chain's end
  (``claim-999999`` alone) is ignored. The holder of the chain's highest valid claim
  trains; it beats (``beat-{n}.json``, overwritten, with its progress) every ``lease / 4``
  seconds. A claim whose holder stayed silent for its whole lease (by the reader's clock; a
  lease is at most ``MAX_LEASE``) is taken over by creating the chain's next claim, which
  exactly one process can do, so two live processes never train one request, and a dead one
  costs a lease, not the request. A holder that sees a higher valid claim in the chain than
  its own stops (it was presumed dead).
- ``retrain/{rid}/ckpt-{step}.json`` + ``ckpt-{step}.{nonce}.safetensors``: checkpoints,
  weights first under a unique name, then the small commit naming them and their SHA-256
  (create-if-absent); the newest one that verifies is resumed from; older ones are pruned.
- ``retrain/{rid}/metrics.json``: the per-epoch metrics so far (overwritten).
- ``retrain/{rid}/export/...``: the final model as ``evo best --export`` writes it (without
  the test images), then ``retrain/{rid}/result.json`` (create-if-absent): test accuracy,
  the export's files and their SHA-256. A retrain is done exactly when its result exists.

The names and record checks are :mod:`storage.retrain_format`'s. Every read is bounded
and checked; what does not check out is a ``Broken`` or None, never
an exception for the reader. Torch-free.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from .backend import MAX_RECORD_BYTES, UnreadableEntry
from .core import StoreCore
from .reading import Broken, read_json
from .records import MAX_PAYLOAD_BYTES, CorruptRecord, dumps, loads
from .retrain_format import (
    CKPT_NAME, CKPT_BLOB_NAME, CLAIM_NAME, EXPORT_FILE_NAME, MAX_CLAIMS, MAX_EXPORT_FILES, MAX_LEASE, MIN_LEASE,
    RETRAIN, RETRAIN_SCHEMA, beat_problem, check_request, check_result, check_retrain_id, claim_problem, is_retrain_id,
    request_key, retrain_key,
)

SKIP_FOREIGN = 8   # foreign entries a claimant skips past at the next claim number before giving up


@dataclass(frozen=True)
class Claim:
    """The claim a process holds on a retrain: number ``n`` and its lease in seconds."""

    rid: str
    n: int
    lease: float


@dataclass(frozen=True)
class RetrainState:
    """What the store says about one retrain (for status, best and the CLI).

    ``state``: ``done`` (result exists), ``training`` (the latest claim beats within its
    lease), ``stalled`` (a claim whose holder went silent: the next process takes over),
    ``stopped`` (its holder was stopped by a signal and released it after a checkpoint: the
    next process resumes it at once), ``failed`` (its holder's training failed), ``pending``
    (never claimed). ``beat``: the latest holder's heartbeat (progress), or None.
    """

    rid: str
    request: dict[str, Any] | None
    state: str
    claims: int
    beat: dict[str, Any] | None
    result: dict[str, Any] | None
    checkpoint_step: int | None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    broken: tuple[Broken, ...] = ()



class RetrainQueue:
    """The final trainings of a run, ``retrain/`` (the store's ``retrains`` facet; this
    module's docstring has the protocol).

    Contract: a request is created once; at most one live holder trains it at a time (a
    claim whose holder went silent for its lease is taken over); checkpoints and the result
    are readable only once whole and verified; reads never raise for a damaged record.
    """

    def __init__(self, core: StoreCore):
        self._core = core
        self._backend = core.backend

    # ----- requests -----
    def put_retrain_request(self, rid: str, request: dict[str, Any]) -> bool:
        """Create ``retrain/{rid}.json`` with ``request`` if absent; True iff this call did.

        ValueError when ``request`` is not a valid request named ``rid`` (nothing is written).
        """
        try:
            check_request(request, rid)
        except CorruptRecord as exc:
            raise ValueError(str(exc)) from None
        return self._backend.create(request_key(rid), dumps(request))

    def read_retrain_request(self, rid: str) -> dict[str, Any] | Broken | None:
        """The checked request of ``rid``, a Broken naming its problem, or None if absent."""
        for _, obj in read_json(self._backend, [request_key(rid)], "retrain request"):
            if isinstance(obj, Broken):
                return obj
            try:
                return check_request(obj, rid)
            except CorruptRecord as exc:
                return Broken(request_key(rid), str(exc))
        return None

    def list_retrains(self) -> list[str]:
        """Ids of every retrain with a request (one listing), sorted."""
        return sorted(n[:-len(".json")] for n in self._backend.list(RETRAIN)
                      if n.endswith(".json") and is_retrain_id(n[:-len(".json")]))

    # ----- claims and heartbeats -----
    def claim_chain(self, rid: str) -> tuple[int | None, int, list[int]]:
        """``(holder, next, foreign)`` of ``rid``'s claims (the module docstring has the walk):
        the number of the chain's highest valid claim (None: no valid claim), the number the
        next claim takes, and the numbers in the chain whose entry is foreign. Judged by this
        reader's clock; two listings and one bounded read per claim in the chain."""
        folder = f"{RETRAIN}/{check_retrain_id(rid)}"
        files = {int(m.group(1)) for m in map(CLAIM_NAME.fullmatch, self._backend.list(folder)) if m}
        others = {int(m.group(1)) for m in (CLAIM_NAME.fullmatch(e.name) for e in self._backend.list_foreign(folder))
                  if m}
        holder, foreign, n, now = None, [], 0, self._core.now()
        while n in files or n in others:
            if n in files and self._valid_claim(rid, n, now) is not None:
                holder = n
            else:
                foreign.append(n)
            n += 1
        return holder, n, foreign

    def _valid_claim(self, rid: str, n: int, now: float) -> dict[str, Any] | None:
        record = self._read_small(retrain_key(rid, f"claim-{n:06d}.json"))
        return record if claim_problem(record, rid, n, now) is None else None

    def claim_retrain(self, rid: str, owner: dict[str, Any], lease: float, *,
                      retry_failed: bool = False) -> Claim | None:
        """Claim ``rid`` for training; the Claim, or None when it is done, held by a claim
        whose holder beat within its lease, failed (its last heartbeat says ``state:
        failed``; unless ``retry_failed``), or another process won this claim's race.

        ``lease``: seconds within which this holder promises to beat (``retrain_beat``). The
        claim takes the chain's next number; a foreign entry there is skipped past (at most
        ``SKIP_FOREIGN`` of them).
        """
        if not MIN_LEASE <= lease <= MAX_LEASE:
            raise ValueError(f"lease must be in [{MIN_LEASE:g}, {MAX_LEASE:g}] seconds, got {lease!r}")
        if "result.json" in self._backend.list(f"{RETRAIN}/{check_retrain_id(rid)}"):
            return None
        holder, n, _ = self.claim_chain(rid)
        if holder is not None:
            status = self._holder_status(rid, holder)
            if status == "alive" or (status == "failed" and not retry_failed):
                return None
        for n in range(n, min(n + SKIP_FOREIGN, MAX_CLAIMS + 1)):
            record = {"schema": RETRAIN_SCHEMA, "rid": rid, "n": n, "time": self._core.now(), "lease": float(lease),
                      "owner": owner}
            if self._backend.create(retrain_key(rid, f"claim-{n:06d}.json"), dumps(record)):
                return Claim(rid, n, float(lease))
            if self._valid_claim(rid, n, self._core.now()) is not None:
                return None   # another process won this number's race
        return None

    def _holder_status(self, rid: str, n: int) -> str:
        """``failed`` or ``released`` (stopped by a signal, checkpoint written) if claim ``n``'s
        holder said so in its last heartbeat, ``alive`` if it claimed or beat within its lease
        by this reader's clock (a claim or heartbeat dated in the future is not counted, and a
        lease is at most MAX_LEASE), else ``dead``."""
        now = self._core.now()
        claim = self._valid_claim(rid, n, now)
        beat = self._read_small(retrain_key(rid, f"beat-{n:06d}.json"))
        if beat_problem(beat, n, now) is not None:
            beat = None
        said = beat["info"].get("state") if beat is not None and isinstance(beat.get("info"), dict) else None
        if said in ("failed", "released"):
            return said
        if claim is None:
            return "dead"
        times = [r["time"] for r in (claim, beat) if r is not None]
        return "alive" if now - max(times) < claim["lease"] else "dead"

    def fill_claim(self, rid: str, n: int) -> bool:
        """Create claim ``n`` of ``rid`` as a dead one (time 0, whose holder never trained),
        where a foreign entry inside the chain was moved aside, so that the chain does not
        end there; True iff this call created it (False: something is there again)."""
        record = {"schema": RETRAIN_SCHEMA, "rid": rid, "n": n, "time": 0.0, "lease": MIN_LEASE,
                  "owner": {"filled": "a foreign entry was moved aside by evo check --repair"}}
        return self._backend.create(retrain_key(rid, f"claim-{n:06d}.json"), dumps(record))

    def retrain_beat(self, claim: Claim, info: dict[str, Any]) -> None:
        """Write the holder's heartbeat (``time`` now, ``info``: progress and identity)."""
        self._backend.write(retrain_key(claim.rid, f"beat-{claim.n:06d}.json"),
                           dumps({"schema": RETRAIN_SCHEMA, "n": claim.n, "time": self._core.now(), "info": info}))

    def retrain_still_mine(self, claim: Claim) -> bool:
        """True while no later valid claim is in the chain and the retrain is not done (a
        foreign entry beyond the chain, or in it, takes nothing over)."""
        if "result.json" in self._backend.list(f"{RETRAIN}/{claim.rid}"):
            return False
        holder, _, _ = self.claim_chain(claim.rid)
        return holder is None or holder <= claim.n

    # ----- checkpoints -----
    def save_retrain_checkpoint(self, claim: Claim, step: int, blob: bytes, info: dict[str, Any] | None = None,
                                keep: int = 2) -> str:
        """Store a checkpoint of ``step`` (weights first, then the commit); prune all but the
        newest ``keep``. Returns the commit's key. A commit of that step made by someone
        else first is kept (its blob is as good) and ours is deleted."""
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 10**10:
            raise ValueError(f"bad checkpoint step {step!r}")
        nonce = secrets.token_hex(8)
        blob_key = retrain_key(claim.rid, f"ckpt-{step:010d}.{nonce}.safetensors")
        self._backend.write(blob_key, blob)
        commit = {"schema": RETRAIN_SCHEMA, "step": step, "claim": claim.n, "time": self._core.now(),
                  "blob": blob_key.rsplit("/", 1)[1], "sha256": hashlib.sha256(blob).hexdigest(),
                  "size": len(blob), "info": info or {}}
        key = retrain_key(claim.rid, f"ckpt-{step:010d}.json")
        if not self._backend.create(key, dumps(commit)):
            self._backend.delete(blob_key)
        self.prune_retrain_checkpoints(claim.rid, keep)
        return key

    def _checkpoint_commits(self, rid: str) -> list[tuple[int, str]]:
        names = self._backend.list(f"{RETRAIN}/{check_retrain_id(rid)}")
        return sorted(((int(m.group(1)), m.group(0)) for m in map(CKPT_NAME.fullmatch, names) if m), reverse=True)

    def load_retrain_checkpoint(self, rid: str,
                                max_size: int = MAX_PAYLOAD_BYTES) -> tuple[dict[str, Any], bytes] | None:
        """``(commit, blob)`` of the newest checkpoint whose blob verifies, or None.

        A checkpoint that does not verify (missing, wrong size or SHA-256) is skipped: the
        one before it is as good, only older. ``max_size``: the most bytes a checkpoint of the
        reader's training can hold (``FinalTraining.checkpoint_size_bound``); a commit
        declaring more is skipped without reading its blob, and no blob is read past its
        commit's declared size.
        """
        max_size = min(max_size, MAX_PAYLOAD_BYTES)
        for step, name in self._checkpoint_commits(rid):
            commit = self._read_small(retrain_key(rid, name))
            if not (isinstance(commit, dict) and commit.get("step") == step and isinstance(commit.get("blob"), str)
                    and (m := CKPT_BLOB_NAME.fullmatch(commit["blob"])) and int(m.group(1)) == step
                    and isinstance(commit.get("size"), int) and not isinstance(commit["size"], bool)
                    and 0 <= commit["size"] <= max_size
                    and isinstance(commit.get("sha256"), str)):
                continue
            try:   # hashed while streaming first: a planted size costs one chunk of memory
                blob = self._backend.read_verified(retrain_key(rid, commit["blob"]), commit["size"], commit["sha256"])
            except (FileNotFoundError, UnreadableEntry, ValueError):
                continue
            return commit, blob
        return None

    def prune_retrain_checkpoints(self, rid: str, keep: int = 2) -> int:
        """Delete all but the newest ``keep`` checkpoints (commit first, then its blobs);
        returns how many were deleted. Also deletes the done retrain's last ones when
        ``keep`` is 0."""
        commits = self._checkpoint_commits(rid)
        names = self._backend.list(f"{RETRAIN}/{rid}")
        deleted = 0
        for step, name in commits[max(keep, 0):]:
            self._backend.delete(retrain_key(rid, name))
            for blob in names:
                m = CKPT_BLOB_NAME.fullmatch(blob)
                if m and int(m.group(1)) == step:
                    self._backend.delete(retrain_key(rid, blob))
            deleted += 1
        return deleted

    # ----- metrics, export and result -----
    def write_retrain_metrics(self, claim: Claim, metrics: list[dict[str, Any]]) -> None:
        """Overwrite ``metrics.json`` with the per-epoch metrics so far."""
        self._backend.write(retrain_key(claim.rid, "metrics.json"), dumps({"schema": RETRAIN_SCHEMA, "epochs": metrics}))

    def finish_retrain(self, claim: Claim, files: dict[str, bytes], result: dict[str, Any]) -> bool:
        """Write the exported model's ``files`` under ``export/``, then create ``result.json``
        (``result`` plus each file's SHA-256 and size). True iff this call made the result.
        ValueError for a file name the layout does not allow (nothing is written then)."""
        if not files or len(files) > MAX_EXPORT_FILES or not all(EXPORT_FILE_NAME.fullmatch(n) for n in files):
            raise ValueError("bad exported file names")
        listing = {}
        for name, data in sorted(files.items()):
            self._backend.write(retrain_key(claim.rid, f"export/{name}"), data)
            listing[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        record = {**result, "schema": RETRAIN_SCHEMA, "rid": claim.rid, "claim": claim.n, "time": self._core.now(),
                  "files": listing}
        check_result(record, claim.rid)
        done = self._backend.create(retrain_key(claim.rid, "result.json"), dumps(record))
        if done:
            self.prune_retrain_checkpoints(claim.rid, keep=0)
        return done

    def read_retrain_export(self, rid: str) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        """``(result, files)`` of a done retrain, every file verified against the result's
        SHA-256; None when it is not done. CorruptRecord (one line) when something does not
        check out."""
        result = self.read_retrain_result(rid)
        if result is None:
            return None
        if isinstance(result, Broken):
            raise CorruptRecord(f"{result.key}: {result.problem}")
        files = {}
        for name, spec in result["files"].items():
            key = retrain_key(rid, f"export/{name}")
            try:
                files[name] = self._backend.read_verified(key, spec["size"], spec["sha256"])
            except FileNotFoundError:
                raise CorruptRecord(f"{key} is missing") from None
            except UnreadableEntry as exc:
                raise CorruptRecord(f"{key}: {exc.problem} (against result.json)") from None
            except ValueError:
                raise CorruptRecord(f"{key}: result.json states no usable size and SHA-256") from None
        return result, files

    def read_retrain_result(self, rid: str) -> dict[str, Any] | Broken | None:
        """The checked result of ``rid``, a Broken, or None when it is not done."""
        for key, obj in read_json(self._backend, [retrain_key(rid, "result.json")], "retrain result"):
            if isinstance(obj, Broken):
                return obj
            try:
                return check_result(obj, rid)
            except CorruptRecord as exc:
                return Broken(key, str(exc))
        return None

    def retrain_state(self, rid: str) -> RetrainState:
        """Everything :class:`RetrainState` says about ``rid``, from one listing and a few
        bounded reads."""
        names = set(self._backend.list(f"{RETRAIN}/{check_retrain_id(rid)}"))
        broken: list[Broken] = []
        request = self.read_retrain_request(rid)
        if isinstance(request, Broken):
            broken.append(request)
            request = None
        result = self.read_retrain_result(rid) if "result.json" in names else None
        if isinstance(result, Broken):
            broken.append(result)
            result = None
        holder, end, foreign = self.claim_chain(rid)
        claims = end - len(foreign)
        beat = None
        if holder is not None:
            raw = self._read_small(retrain_key(rid, f"beat-{holder:06d}.json"))
            beat = raw if beat_problem(raw, holder, self._core.now()) is None else None
        metrics_obj = self._read_small(retrain_key(rid, "metrics.json")) if "metrics.json" in names else None
        metrics = metrics_obj.get("epochs") if isinstance(metrics_obj, dict) else None
        metrics = [m for m in metrics if isinstance(m, dict)] if isinstance(metrics, list) else []
        steps = [int(m.group(1)) for m in map(CKPT_NAME.fullmatch, names) if m]
        if result is not None:
            state = "done"
        elif holder is not None:
            state = {"alive": "training", "dead": "stalled", "failed": "failed",
                     "released": "stopped"}[self._holder_status(rid, holder)]
        else:
            state = "pending"
        return RetrainState(rid, request, state, claims, beat, result, max(steps) if steps else None,
                            metrics, tuple(broken))

    def retrain_states(self) -> list[RetrainState]:
        """:meth:`retrain_state` of every retrain with a request."""
        return [self.retrain_state(rid) for rid in self.list_retrains()]

    # ----- helpers -----
    def _read_small(self, key: str) -> Any:
        """The JSON at ``key`` (bounded read), or None when absent, unreadable or not JSON."""
        try:
            return loads(self._backend.read(key, MAX_RECORD_BYTES), "retrain record")
        except (FileNotFoundError, UnreadableEntry, CorruptRecord):
            return None

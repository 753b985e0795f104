"""Final trainings ("retrains") of individuals or named architectures, kept in the population
directory beside the search (docs/layout.md, ``retrain/``).

One retrain is one (architecture, size, dataset, settings) request, named ``{label}-{hash}``
(the label is an individual's id or an architecture's name; the hash is of the whole
request). Everything about it is under ``retrain/``:

- ``retrain/{rid}.json``: the request, created once (create-if-absent).
- ``retrain/{rid}/claim-{n}.json``: the n-th claim, created if absent. The holder of the
  highest claim trains; it beats (``beat-{n}.json``, overwritten, with its progress) every
  ``lease / 4`` seconds. A claim whose holder stayed silent for its whole lease is taken
  over by creating claim n + 1, which exactly one process can do, so two live processes
  never train one request, and a dead one costs a lease, not the request. A holder that
  sees a higher claim than its own stops (it was presumed dead).
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

from dna.numbers import is_finite_number

from .backend import MAX_RECORD_BYTES, UnreadableEntry
from .core import StoreCore
from .reading import Broken, read_json
from .records import MAX_PAYLOAD_BYTES, CorruptRecord, dumps, loads
from .retrain_format import (
    CKPT_NAME, CKPT_BLOB_NAME, CLAIM_NAME, EXPORT_FILE_NAME, MAX_EXPORT_FILES, MAX_LEASE, MIN_LEASE, RETRAIN, RETRAIN_SCHEMA,
    check_request, check_result, check_retrain_id, is_retrain_id, request_key, retrain_key,
)


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
    def claim_retrain(self, rid: str, owner: dict[str, Any], lease: float, *,
                      retry_failed: bool = False) -> Claim | None:
        """Claim ``rid`` for training; the Claim, or None when it is done, held by a claim
        whose holder beat within its lease, failed (its last heartbeat says ``state:
        failed``; unless ``retry_failed``), or another process won this claim's race.

        ``lease``: seconds within which this holder promises to beat (``retrain_beat``).
        """
        if not MIN_LEASE <= lease <= MAX_LEASE:
            raise ValueError(f"lease must be in [{MIN_LEASE:g}, {MAX_LEASE:g}] seconds, got {lease!r}")
        names = self._backend.list(f"{RETRAIN}/{check_retrain_id(rid)}")
        if "result.json" in names:
            return None
        claims = sorted(int(m.group(1)) for m in map(CLAIM_NAME.fullmatch, names) if m)
        if claims:
            status = self._holder_status(rid, claims[-1])
            if status == "alive" or (status == "failed" and not retry_failed):
                return None
        n = claims[-1] + 1 if claims else 0
        if n > 999_999:
            return None
        record = {"schema": RETRAIN_SCHEMA, "rid": rid, "n": n, "time": self._core.now(), "lease": float(lease),
                  "owner": owner}
        if not self._backend.create(retrain_key(rid, f"claim-{n:06d}.json"), dumps(record)):
            return None
        return Claim(rid, n, float(lease))

    def _holder_status(self, rid: str, n: int) -> str:
        """``failed`` or ``released`` (stopped by a signal, checkpoint written) if claim ``n``'s
        holder said so in its last heartbeat, ``alive`` if it
        claimed or beat within its lease (an unreadable claim counts as alive for one default
        lease from its file time, never forever), else ``dead``."""
        claim = self._read_small(retrain_key(rid, f"claim-{n:06d}.json"))
        beat = self._read_small(retrain_key(rid, f"beat-{n:06d}.json"))
        said = beat["info"].get("state") if isinstance(beat, dict) and isinstance(beat.get("info"), dict) else None
        if said in ("failed", "released"):
            return said
        lease = claim.get("lease") if isinstance(claim, dict) else None
        if not _finite(lease) or not MIN_LEASE <= lease <= MAX_LEASE:
            lease = 600.0
        times = [r.get("time") for r in (claim, beat) if isinstance(r, dict) and _finite(r.get("time"))]
        if not times:
            entry = self._stat(retrain_key(rid, f"claim-{n:06d}.json"))
            times = [entry.mtime] if entry else []
        return "alive" if times and self._core.now() - max(times) < lease else "dead"

    def retrain_beat(self, claim: Claim, info: dict[str, Any]) -> None:
        """Write the holder's heartbeat (``time`` now, ``info``: progress and identity)."""
        self._backend.write(retrain_key(claim.rid, f"beat-{claim.n:06d}.json"),
                           dumps({"schema": RETRAIN_SCHEMA, "n": claim.n, "time": self._core.now(), "info": info}))

    def retrain_still_mine(self, claim: Claim) -> bool:
        """True while no later claim exists and the retrain is not done (one listing)."""
        names = self._backend.list(f"{RETRAIN}/{claim.rid}")
        if "result.json" in names:
            return False
        return all(int(m.group(1)) <= claim.n for m in map(CLAIM_NAME.fullmatch, names) if m)

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

    def load_retrain_checkpoint(self, rid: str) -> tuple[dict[str, Any], bytes] | None:
        """``(commit, blob)`` of the newest checkpoint whose blob verifies, or None.

        A checkpoint that does not verify (missing, wrong size or SHA-256) is skipped: the
        one before it is as good, only older.
        """
        for step, name in self._checkpoint_commits(rid):
            commit = self._read_small(retrain_key(rid, name))
            if not (isinstance(commit, dict) and commit.get("step") == step and isinstance(commit.get("blob"), str)
                    and (m := CKPT_BLOB_NAME.fullmatch(commit["blob"])) and int(m.group(1)) == step
                    and isinstance(commit.get("size"), int) and 0 <= commit["size"] <= MAX_PAYLOAD_BYTES
                    and isinstance(commit.get("sha256"), str)):
                continue
            try:
                blob = self._backend.read(retrain_key(rid, commit["blob"]), max_bytes=commit["size"])
            except (FileNotFoundError, UnreadableEntry):
                continue
            if len(blob) == commit["size"] and hashlib.sha256(blob).hexdigest() == commit["sha256"]:
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
                data = self._backend.read(key, max_bytes=spec["size"])
            except FileNotFoundError:
                raise CorruptRecord(f"{key} is missing") from None
            except UnreadableEntry as exc:
                raise CorruptRecord(str(exc)) from None
            if hashlib.sha256(data).hexdigest() != spec["sha256"]:
                raise CorruptRecord(f"{key} does not match its SHA-256 in result.json")
            files[name] = data
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
        claims = sorted(int(m.group(1)) for m in map(CLAIM_NAME.fullmatch, names) if m)
        beat = None
        if claims:
            raw = self._read_small(retrain_key(rid, f"beat-{claims[-1]:06d}.json"))
            beat = raw if isinstance(raw, dict) and _finite(raw.get("time")) else None
        metrics_obj = self._read_small(retrain_key(rid, "metrics.json")) if "metrics.json" in names else None
        metrics = metrics_obj.get("epochs") if isinstance(metrics_obj, dict) else None
        metrics = [m for m in metrics if isinstance(m, dict)] if isinstance(metrics, list) else []
        steps = [int(m.group(1)) for m in map(CKPT_NAME.fullmatch, names) if m]
        if result is not None:
            state = "done"
        elif claims:
            state = {"alive": "training", "dead": "stalled", "failed": "failed",
                     "released": "stopped"}[self._holder_status(rid, claims[-1])]
        else:
            state = "pending"
        return RetrainState(rid, request, state, len(claims), beat, result, max(steps) if steps else None,
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

    def _stat(self, key: str):
        try:
            return self._backend.stat(key)
        except UnreadableEntry:
            return None


def _finite(x: Any) -> bool:
    return is_finite_number(x)

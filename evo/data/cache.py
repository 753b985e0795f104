"""Decode a user dataset once per run, in the store, for every worker of the fleet.

The first worker (or ``evo init``) to need the dataset claims it (a create-if-absent claim
in the store: exactly one caller wins), decodes it (:mod:`evo.data.decoding`), writes each
split's arrays as safetensors under a unique name, then creates the small manifest that
names them with their sizes and SHA-256 (``storage.datacache`` has the layout). Every other
worker waits for the manifest, logging the decoder's progress, then reads the parts it
needs, checks them against the manifest and checks the arrays themselves (dtype, shapes,
label range: :mod:`evo.data.cacheformat`) before using them: the store is shared and untrusted.

- A decoder that dies leaves a claim whose progress record stops changing: after
  ``stale_after`` seconds of silence a waiter claims the next generation and decodes it.
  A decoder stopped by a signal says so, and the next generation starts at once.
- Parts without a manifest are never read, so a partly written cache is never trusted; a
  manifest or part that does not check out makes the next newest committed generation be
  tried, and when none is left, the next generation be decoded.
- Only generations of the verified chain (:mod:`storage.datacache`) are read or waited on:
  a manifest, claim or progress record planted outside it (generation 1000000) is ignored,
  and a progress record that does not check out (dated in the future, say) is nobody's:
  its generation counts as abandoned and the next one is claimed at once.
- Bad data (:class:`evo.data.decoding.DataProblem`) fails the decoder with its one-line error
  and is recorded in its progress, so the workers waiting on it fail with the same line
  instead of each decoding the dataset again. A failure older than ``stale_after`` is
  retried (the user may have fixed the data).
- The search never reads the ``test`` part (workers ask for ``train`` and ``val`` only).

The cache is named by the run's dataset spec and data settings (:func:`cache_key`), which
``config.json`` fixes for the run, so every worker of a run uses the same cache even if
files are added to the source folder meanwhile. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from evo.data.settings import DataSettings
from evo.data.base import SPLITS, human_bytes
from evo.data.cacheformat import FORMAT, CacheDamaged, arrays_of, check_manifest, content_id, safetensors_of
from evo.data.decoding import DataProblem, Decoded
from evo.data.spec import DatasetSpec

if TYPE_CHECKING:
    from storage import DataCacheFacet

log = logging.getLogger("evo.data.datasets")

STALE_AFTER_S = 120.0       # a claim whose progress has not changed for this long is abandoned
PROGRESS_EVERY_S = 2.0      # how often a decoder rewrites its progress (so 60 beats per STALE_AFTER_S)
LOG_EVERY_S = 10.0          # how often a waiting worker logs the decoder's progress


def cache_key(spec: DatasetSpec | str, settings: DataSettings) -> str:
    """The 16-hex-digit name of the cache of ``spec`` under ``settings`` (what the run's
    config says; the same for every worker). Made of the spec's text, as config.json has it."""
    text = json.dumps({"format": FORMAT, "spec": str(DatasetSpec.of(spec)), "data": settings.to_dict()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class CachedData:
    """A committed cache generation whose manifest checked out; :meth:`arrays` reads and
    checks its parts. ``decoded`` holds the arrays when this process decoded them."""

    cache: DataCacheFacet
    key: str
    generation: int
    manifest: dict[str, Any]
    decoded: Decoded | None = None
    decoded_here: bool = False

    @property
    def data_id(self) -> str:
        return self.manifest["data_sha256"]

    def arrays(self, splits: tuple[str, ...] = SPLITS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{split: (x, y)}`` for ``splits``, read from the store and checked (CacheDamaged
        when a part is missing, damaged, or its arrays are not what the manifest says)."""
        if self.decoded is not None:
            return {s: self.decoded.splits[s] for s in splits}
        from storage import CorruptRecord

        out = {}
        for split in splits:
            part = self.manifest["parts"][split]
            try:
                blob = self.cache.read_data_part(part)
            except CorruptRecord as exc:
                raise CacheDamaged(str(exc)) from None
            out[split] = arrays_of(blob, part, self.manifest, split)
            del blob
        return out


def open_or_decode(cache: DataCacheFacet, spec: DatasetSpec, settings: DataSettings, decode: Callable[[Callable], Decoded], *,
                   worker: str | None = None, stale_after: float = STALE_AFTER_S,
                   poll: float = 0.5, progress: Callable[[str], None] | None = None,
                   damaged: set[int] | None = None, clock: Callable[[], float] = time.monotonic) -> CachedData:
    """The run's cache of ``spec``: an existing one, or the one this call decodes (with
    ``decode(progress)``) after winning the claim, or the one another process decodes
    while this call waits. See the module's docstring for the protocol.

    ``progress(line)`` receives progress lines for people (default: the ``evo.data.datasets`` log).
    ``damaged``: generations known to be damaged (a caller that found a bad part adds its
    generation and calls again; a new one is then decoded). Raises ``DataProblem`` for bad
    data (this call's or the decoder's it waited on).
    """
    key = cache_key(spec, settings)
    who = {"worker": worker or f"{socket.gethostname()}-{os.getpid()}", "host": socket.gethostname(),
           "pid": os.getpid()}
    say = progress or (lambda line: log.info("%s", line))
    damaged = damaged if damaged is not None else set()
    watched: dict[int, tuple[Any, float]] = {}   # generation -> (last progress seen, when it last changed)
    last_said = -float("inf")
    delay = poll
    while True:
        state = cache.data_state(key)
        for g in sorted(state.committed - damaged, reverse=True):   # only the verified chain's
            try:
                return _open(cache, key, g, spec)
            except CacheDamaged as exc:
                log.warning("data cache generation %d is damaged (%s); it will be decoded again", g, exc)
                damaged.add(g)
        g = state.newest
        if g >= 0 and g not in state.manifests:   # someone claimed g and has not committed it
            record = cache.read_data_progress(key, g)
            seen, since = watched.get(g, (object(), clock()))
            if record != seen:
                since = clock()
            watched[g] = (record, since)
            foreign = isinstance(record, dict) and "foreign" in record
            failed = not foreign and isinstance(record, dict) and isinstance(record.get("failed"), str)
            # a decoder that finished ("committed" or "lost") left no usable manifest here:
            # nobody is coming to commit this generation
            abandoned = foreign or (isinstance(record, dict) and (record.get("abandoned") is True
                                                                  or record.get("phase") in ("committed", "lost")))
            if abandoned and not foreign and record.get("phase") == "committed" \
                    and g in cache.data_state(key).manifests:
                continue   # the decoder committed after the state above was read: read it again
            if record is None and _old(cache, cache.read_data_claim(key, g) or {}, 4 * stale_after):
                abandoned = True   # claimed long ago and never a word of progress since
            if foreign:
                log.warning("data cache generation %d: %s; taking over", g, str(record["foreign"])[:300])
            if failed and not _old(cache, record, stale_after):
                claim = cache.read_data_claim(key, g) or {}
                raise DataProblem(f"{record['failed'][:1000]} (found by {str(claim.get('worker', 'the worker'))[:80]}, "
                                  "which decoded the dataset)")
            if not failed and not abandoned and clock() - since < stale_after:
                if clock() - last_said >= LOG_EVERY_S:
                    say(_waiting_line(cache, key, g, record))
                    last_said = clock()
                time.sleep(delay)
                delay = min(2.0, delay * 1.5)
                continue
            if not failed and not abandoned:
                log.warning("the decoder of data cache generation %d has been silent for %.0f s; taking over", g,
                            clock() - since)
        won = cache.claim_next(key, state, who)   # numbered from the verified chain, never from names
        if won is not None:
            return _decode_and_commit(cache, key, won, spec, settings, decode, who, say)
        time.sleep(delay)   # lost the claim race (wait on the winner), or every next name is blocked
        delay = min(2.0, delay * 1.5)


def _old(cache: DataCacheFacet, record: dict, stale_after: float) -> bool:
    when = record.get("time")
    return isinstance(when, (int, float)) and cache.now() - when > stale_after


def _waiting_line(cache: DataCacheFacet, key: str, g: int, record: Any) -> str:
    claim = cache.read_data_claim(key, g) or {}
    who = str(claim.get("worker", "another worker"))[:80]
    if isinstance(record, dict) and isinstance(record.get("done"), int) and isinstance(record.get("total"), int):
        return (f"waiting for the dataset: {who} is decoding it ({str(record.get('phase', ''))[:20]} "
                f"{record['done']:,}/{record['total']:,} images)")
    return f"waiting for the dataset: {who} is decoding it"


class _ProgressBeat:
    """The decoder's progress record, rewritten every PROGRESS_EVERY_S by a thread (so that
    waiters can tell a live decoder from a dead one) and at the end."""

    def __init__(self, cache: DataCacheFacet, key: str, g: int, who: dict, say: Callable[[str], None]):
        self.cache, self.key, self.g, self.who, self.say = cache, key, g, who, say
        self.state: dict[str, Any] = {"phase": "listing", "done": 0, "total": 0}
        self.beats = 0
        self._stop = threading.Event()
        self._last_said = time.monotonic()   # a first line after LOG_EVERY_S: small datasets need none
        self._write()
        self._thread = threading.Thread(target=self._run, name="evo-data-progress", daemon=True)
        self._thread.start()

    def update(self, phase: str, done: int, total: int) -> None:
        self.state = {"phase": phase, "done": int(done), "total": int(total)}
        now = time.monotonic()
        if now - self._last_said >= LOG_EVERY_S:
            self.say(f"decoding the dataset: {phase} {done:,}/{total:,} images")
            self._last_said = now

    def _write(self, **extra: Any) -> None:
        self.beats += 1
        try:
            self.cache.write_data_progress(self.key, self.g, {**self.who, **self.state, "beat": self.beats, **extra})
        except Exception as exc:  # progress is advisory; the decode goes on
            log.warning("data progress not written: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY_S):
            self._write()

    def finish(self, **extra: Any) -> None:
        self._stop.set()
        self._thread.join()
        if extra:
            self._write(**extra)


def _decode_and_commit(cache: DataCacheFacet, key: str, g: int, spec: DatasetSpec, settings: DataSettings,
                       decode: Callable[[Callable], Decoded], who: dict, say: Callable[[str], None]) -> CachedData:
    beat = _ProgressBeat(cache, key, g, who, say)
    t0 = time.perf_counter()
    try:
        decoded = decode(beat.update)
    except DataProblem as exc:
        beat.finish(failed=str(exc)[:2000])
        raise
    except BaseException:
        beat.finish(abandoned=True)   # stopped (a signal) or broken: the next worker starts at once
        raise
    seconds = time.perf_counter() - t0
    written: list[str] = []
    try:
        parts = {}
        for split in SPLITS:
            x, y = decoded.splits[split]
            blob = safetensors_of(x, y)
            part = cache.write_data_part(key, g, split, blob)
            del blob
            written.append(part["key"])
            parts[split] = {**part, "images": int(len(y))}
        manifest = {
            "format": FORMAT, "key": key, "generation": g, "spec": str(spec), "settings": settings.to_dict(),
            "num_classes": decoded.num_classes, "class_names": list(decoded.class_names),
            "input_shape": [int(d) for d in decoded.splits["train"][0].shape[1:]],
            "preprocessing": decoded.preprocessing.to_dict() if decoded.preprocessing else None,
            "parts": parts, "data_sha256": content_id(parts),
            "summary": {**decoded.summary, "decode_seconds": round(seconds, 3)},
            "decoded_by": who, "decoded_at": cache.now(),
        }
        committed = cache.commit_data(key, g, manifest)
    except BaseException:
        beat.finish(abandoned=True)
        _forget(cache, written)
        raise
    beat.finish(phase="committed" if committed else "lost", done=beat.state["total"], total=beat.state["total"])
    if not committed:   # cannot happen while claims are exclusive; then trust only what is committed
        _forget(cache, written)
        raise CacheDamaged(f"data cache generation {g} was committed by someone else")
    log.info("decoded the dataset in %.1f s: %s", seconds, describe_summary(manifest))
    return CachedData(cache, key, g, check_manifest(manifest, key, g, spec), decoded, decoded_here=True)


def _forget(cache: DataCacheFacet, keys: list[str]) -> None:
    for k in keys:
        try:
            cache.delete_data_part(k)
        except Exception:  # an orphaned part is only debris (evo check --repair removes it)
            pass


def _open(cache: DataCacheFacet, key: str, g: int, spec: DatasetSpec) -> CachedData:
    from storage import CorruptRecord

    try:
        manifest = cache.read_data_manifest(key, g)
    except CorruptRecord as exc:
        raise CacheDamaged(str(exc)) from None
    if manifest is None:
        raise CacheDamaged(f"data cache generation {g} vanished")
    return CachedData(cache, key, g, check_manifest(manifest, key, g, spec, cache.now()))


# ----- for people ------------------------------------------------------------------------

def describe_summary(manifest: dict[str, Any]) -> str:
    """One line: classes, images per split, resolution, bytes, unreadable images skipped."""
    s = manifest.get("summary") if isinstance(manifest.get("summary"), dict) else {}
    parts = manifest["parts"]
    c, h, w = manifest["input_shape"]
    names = manifest["class_names"]
    shown = ", ".join(n[:30] for n in names[:6]) + (", ..." if len(names) > 6 else "")
    total = sum(int(parts[p]["images"]) * (c * h * w + 8) for p in SPLITS)
    line = (f"{manifest['num_classes']} classes ({shown}); {parts['train']['images']:,} train / "
            f"{parts['val']['images']:,} val / {parts['test']['images']:,} test images; "
            f"{c}x{h}x{w} ({'grey' if c == 1 else 'RGB'}); {human_bytes(total)}")
    bad = s.get("unreadable")
    if isinstance(bad, int) and bad:
        first = s.get("unreadable_files") or ["?"]
        line += f"; {bad} unreadable image(s) skipped (first: {str(first[0])[:200]})"
    return line


def cache_status(cache: DataCacheFacet, spec: DatasetSpec | str, settings: DataSettings) -> dict[str, Any]:
    """What the store holds of this run's cache, for ``evo status``: ``state`` (``ready``,
    ``decoding``, ``failed``, ``not decoded``), the summary line, input shape and number of
    classes when ready, the progress
    while decoding. Reads one listing and at most two small records; never raises for a
    damaged cache (it says so)."""
    spec = DatasetSpec.of(spec)
    key = cache_key(spec, settings)
    state = cache.data_state(key)
    damaged = None
    for g in sorted(state.committed, reverse=True):   # planted manifests outside the chain are not the run's
        try:
            cached = _open(cache, key, g, spec)
        except CacheDamaged as exc:   # workers try the next newest: so does status
            damaged = damaged or {"state": "damaged", "key": key, "generation": g, "problem": str(exc)[:300]}
            continue
        m = cached.manifest
        return {"state": "ready", "key": key, "generation": g, "summary": describe_summary(m),
                "input_shape": list(m["input_shape"]), "num_classes": m["num_classes"],
                "data_sha256": m["data_sha256"], "decoded_by": m.get("decoded_by", {}).get("worker")
                if isinstance(m.get("decoded_by"), dict) else None}
    if damaged is not None:
        return damaged
    g = state.newest
    if g < 0:
        return {"state": "not decoded", "key": key}
    record = cache.read_data_progress(key, g) or {}
    if "foreign" in record:
        return {"state": "abandoned", "key": key, "generation": g, "problem": str(record["foreign"])[:300]}
    if isinstance(record.get("failed"), str):
        return {"state": "failed", "key": key, "generation": g, "problem": record["failed"][:300]}
    return {"state": "decoding", "key": key, "generation": g, "line": _waiting_line(cache, key, g, record)}

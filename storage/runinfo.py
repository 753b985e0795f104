"""What a run records besides its individuals: its config (``config.json``) and its seal
(``state/config.sha256``), workers' heartbeats, one-time markers and launchers' records of
scheduler jobs. Small JSON objects, read bounded; every record is range-checked
(:mod:`storage.runinfo_format`) and one that fails is left out (a :class:`Broken` for the
inspection commands), never raised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .backend import StoreError, UnreadableEntry
from .core import StoreCore
from .reading import Broken, read_json
from .records import (
    CONFIG_KEY, LAUNCHES, MAX_CONFIG_BYTES, MAX_HEARTBEAT_BYTES, STATE, WORKERS, CorruptRecord, check_safe_name,
    dumps, is_safe_name, loads,
)
from .runinfo_format import (
    CONFIG_SEAL_KEY, MAX_SEAL_BYTES, check_heartbeat, check_launch, check_seal, config_digest, seal_record,
)


@dataclass(frozen=True)
class ConfigSeal:
    """Whether ``config.json`` is the one ``evo init`` wrote (its SHA-256 recorded in
    ``state/config.sha256``).

    ``state``: ``verified`` (it matches), ``legacy`` (no seal: a run made before evo
    recorded one, or an init that died between the two writes), ``changed`` (it does not
    match) or ``unusable`` (the seal cannot be read or is not one). ``problem``: one line
    for any state but ``verified``.
    """

    state: str
    problem: str = ""

    @property
    def trusted(self) -> bool:
        """True when the config may be acted on: verified, or a legacy run's."""
        return self.state in ("verified", "legacy")


class RunInfo:
    """What a run records besides its individuals (the store's ``runinfo`` facet): its config,
    workers' heartbeats, one-time markers and launchers' records of scheduler jobs.

    Contract: ``config.json`` is written once (create-if-absent) and read bounded; marks are
    created once; heartbeats and launch records are overwritten by their one writer and read
    leniently (broken ones are left out, never raised).
    """

    def __init__(self, core: StoreCore):
        self._core = core
        self._backend = core.backend

    # ----- the run's config -----
    def init_config(self, text: str) -> bool:
        """Store ``config.json`` if there is none yet; True iff this call stored it. The call
        that stores it also records its seal (``state/config.sha256``, overwriting the seal
        of a config that is gone: ``evo init --force-new-config``)."""
        if not self._backend.create(CONFIG_KEY, text.encode("utf-8")):
            return False
        self._backend.write(CONFIG_SEAL_KEY, dumps(seal_record(text, self._core.now())))
        return True

    def seal_config(self, text: str) -> bool:
        """Record the seal of ``config.json`` = ``text`` if none is recorded (create-once);
        True iff this call recorded it. For a legacy run whose config its user has just
        confirmed (``evo init`` with the same options); never for a config read alone."""
        return self._backend.create(CONFIG_SEAL_KEY, dumps(seal_record(text, self._core.now())))

    def config_seal(self, text: str) -> ConfigSeal:
        """Whether ``text`` (as :meth:`read_config` returned it) is the config ``evo init``
        wrote: see :class:`ConfigSeal`. Never raises for what the store holds."""
        where = f"{self._core.url}/{CONFIG_KEY}"
        try:
            raw = self._backend.read(CONFIG_SEAL_KEY, MAX_SEAL_BYTES)
        except FileNotFoundError:
            return ConfigSeal("legacy", f"{where} has no seal ({CONFIG_SEAL_KEY}): a run made before evo "
                                        "recorded one; a changed config.json cannot be detected")
        except UnreadableEntry as exc:
            return ConfigSeal("unusable", f"{where} cannot be verified: {exc}")
        except OSError as exc:
            return ConfigSeal("unusable", f"{where} cannot be verified: {CONFIG_SEAL_KEY}: {exc.strerror or exc}")
        try:
            recorded = check_seal(loads(raw, "config seal", MAX_SEAL_BYTES))
        except CorruptRecord as exc:
            return ConfigSeal("unusable", f"{where} cannot be verified: {exc}")
        if recorded != config_digest(text):
            return ConfigSeal("changed", f"{where} changed since 'evo init' (its SHA-256 is not the one "
                                         f"recorded in {CONFIG_SEAL_KEY}); restore it, or see docs/layout.md")
        return ConfigSeal("verified")

    def has_config(self) -> bool:
        """True if something has the name ``config.json`` (one stat; nothing is read)."""
        return self._backend.exists(CONFIG_KEY)

    def read_config(self) -> str:
        """The text of ``config.json``; StoreError if this is not a population directory."""
        url = self._core.url
        try:
            raw = self._backend.read(CONFIG_KEY, MAX_CONFIG_BYTES)
        except FileNotFoundError:
            raise StoreError(f"{url}: no config.json "
                             "(not a population directory; run 'evo init')") from None
        except UnreadableEntry as exc:
            raise StoreError(f"{url}/{exc}") from None
        except OSError as exc:  # the store itself is unreachable or forbidden
            raise StoreError(f"{url}: cannot read config.json: {exc.strerror or exc}") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError(f"{url}/config.json is not UTF-8 text") from None

    # ----- workers, marks, launches -----
    def heartbeat(self, worker_id: str, info: dict[str, Any] | None = None) -> None:
        """Record that ``worker_id`` is alive now (overwrites its previous heartbeat)."""
        check_safe_name(worker_id, "worker id")
        self._backend.write(f"{WORKERS}/{worker_id}.json",
                           dumps({"worker": worker_id, "time": self._core.now(), "info": info or {}}))

    def list_workers(self) -> list[dict[str, Any]]:
        """Latest heartbeat of every worker (``worker``, ``time``, ``info``), by worker id.

        Heartbeats that are unreadable, oversized, malformed or out of bounds (dated in the
        future, absurd counts: :func:`storage.runinfo_format.check_heartbeat`) are left out.
        """
        return self.read_workers()[0]

    def read_workers(self) -> tuple[list[dict[str, Any]], list[Broken]]:
        """(:meth:`list_workers`, the heartbeats it left out, each a Broken saying why)."""
        return self._read_named(WORKERS, "heartbeat", check_heartbeat)

    def mark(self, name: str) -> bool:
        """Create marker ``state/{name}`` if absent; True iff this call created it."""
        check_safe_name(name, "marker name")
        return self._backend.create(f"{STATE}/{name}", dumps({"time": self._core.now()}))

    def has_mark(self, name: str) -> bool:
        """True if marker ``state/{name}`` exists."""
        check_safe_name(name, "marker name")
        return self._backend.exists(f"{STATE}/{name}")

    def record_launch(self, name: str, info: dict[str, Any]) -> None:
        """Write ``launches/{name}.json`` (``name``, ``time``, ``info``): what a launcher started,
        e.g. a SLURM array's job id, so that ``evo status`` can ask the scheduler about it."""
        check_safe_name(name, "launch name")
        self._backend.write(f"{LAUNCHES}/{name}.json", dumps({"name": name, "time": self._core.now(), "info": info}))

    def list_launches(self) -> list[dict[str, Any]]:
        """Every launch record (``name``, ``time``, ``info``), by name; unreadable ones and
        ones out of bounds (:func:`storage.runinfo_format.check_launch`) are skipped."""
        return self._read_named(LAUNCHES, "launch record", check_launch)[0]

    def _read_named(self, dirname: str, what: str, check: Callable[[str, Any, float], dict[str, Any]],
                    ) -> tuple[list[dict[str, Any]], list[Broken]]:
        """The records ``{dirname}/{safe name}.json`` that ``check`` passes (against the
        reader's clock), by name, and the ones it does not (as Broken)."""
        keys = [f"{dirname}/{n}" for n in self._backend.list(dirname)
                if n.endswith(".json") and is_safe_name(n[:-len(".json")])]
        now = self._core.now()
        good: list[dict[str, Any]] = []
        broken: list[Broken] = []
        for key, obj in read_json(self._backend, sorted(keys), what, max_bytes=MAX_HEARTBEAT_BYTES):
            if isinstance(obj, Broken):
                broken.append(obj)
                continue
            try:
                good.append(check(key, obj, now))
            except CorruptRecord as exc:
                broken.append(Broken(key, str(exc)))
        return good, broken

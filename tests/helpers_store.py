"""Helpers shared by the storage tests and by the worker scripts they start as subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save as save_safetensors

import dna
import storage
from storage.backend import MAX_RECORD_BYTES, Backend, Entry
from storage.records import parse_payload_name

TESTS = Path(__file__).resolve().parent
POLL_SECONDS = 0.01  # how often waits for a file or process look again (each wait has a deadline)
REPO = TESTS.parent


def weights_blob(rng: np.random.Generator, n: int = 64) -> bytes:
    """A small, unique safetensors blob (two tensors of random floats)."""
    return save_safetensors({"edges.e2.weight": rng.standard_normal(n).astype(np.float32),
                             "classifier.bias": rng.standard_normal(10).astype(np.float32)})


def dna_dict(rng: np.random.Generator, mutation: str = "initial") -> dict[str, Any]:
    """A valid large_scale DNA as a JSON object, with a random learning rate."""
    lr = float(np.exp(rng.uniform(np.log(1e-3), np.log(0.5))))
    return dna.initial(lr).replace(mutation=mutation).to_dict()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish_random(store: storage.PopulationStore, rng: np.random.Generator, worker: str = "t",
                   parent: str | None = None, fitness: float | None = None,
                   ) -> tuple[storage.IndividualInfo, bytes, dict]:
    """Publish one random individual; return its info, weights and DNA."""
    weights = weights_blob(rng)
    d = dna_dict(rng)
    info = store.population.publish(d, weights, parent=parent, mutation="initial",
                         fitness=float(rng.uniform(0, 1)) if fitness is None else fitness,
                         worker=worker, metrics={"steps": 0})
    return info, weights, d


class DelegatingBackend(Backend):
    """Passes every primitive to a real backend; subclasses change or observe one of them."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.url = inner.url

    def read(self, key: str, max_bytes: int = MAX_RECORD_BYTES) -> bytes:
        return self.inner.read(key, max_bytes)

    def read_many(self, keys, max_bytes: int = MAX_RECORD_BYTES):
        return self.inner.read_many(keys, max_bytes)

    def write(self, key: str, data: bytes) -> None:
        self.inner.write(key, data)

    def create(self, key: str, data: bytes) -> bool:
        return self.inner.create(key, data)

    def delete(self, key: str) -> bool:
        return self.inner.delete(key)

    def list(self, dirname: str) -> list[str]:
        return self.inner.list(dirname)

    def list_detail(self, dirname: str) -> list[Entry]:
        return self.inner.list_detail(dirname)

    def stat(self, key: str) -> Entry | None:
        return self.inner.stat(key)

    def list_foreign(self, dirname: str):
        return self.inner.list_foreign(dirname)

    def move_aside(self, dirname: str, name: str, target: str | None = None) -> str:
        return self.inner.move_aside(dirname, name, target)

    def delete_temp(self, dirname: str, name: str) -> bool:
        return self.inner.delete_temp(dirname, name)


class CountingBackend(DelegatingBackend):
    """A real backend with call counters (instrumentation, not a mock: every call goes through)."""

    def __init__(self, inner: Backend):
        super().__init__(inner)
        self.calls: Counter[str] = Counter()

    def read(self, key: str, max_bytes: int = MAX_RECORD_BYTES) -> bytes:
        self.calls["read"] += 1
        return super().read(key, max_bytes)

    def read_many(self, keys, max_bytes: int = MAX_RECORD_BYTES):
        keys = list(keys)
        self.calls["read"] += len(keys)
        return super().read_many(keys, max_bytes)

    def write(self, key: str, data: bytes) -> None:
        self.calls["write"] += 1
        super().write(key, data)

    def create(self, key: str, data: bytes) -> bool:
        self.calls["create"] += 1
        return super().create(key, data)

    def delete(self, key: str) -> bool:
        self.calls["delete"] += 1
        return super().delete(key)

    def list(self, dirname: str) -> list[str]:
        self.calls["list"] += 1
        return super().list(dirname)

    def list_detail(self, dirname: str) -> list[Entry]:
        self.calls["list"] += 1
        return super().list_detail(dirname)

    def stat(self, key: str) -> Entry | None:
        self.calls["stat"] += 1
        return super().stat(key)


class OverwritingCreate(DelegatingBackend):
    """WRONG on purpose (negative control): 'create' that overwrites, like os.rename or an
    unconditional upload. Every racer believes it won."""

    def create(self, key: str, data: bytes) -> bool:
        self.inner.write(key, data)
        return True


class CheckThenWriteCreate(DelegatingBackend):
    """WRONG on purpose (negative control): look whether the name exists, then write it.
    Two racers can both look before either writes."""

    def create(self, key: str, data: bytes) -> bool:
        if self.inner.exists(key):
            return False
        self.inner.write(key, data)
        return True


class WeightsAfterCommit(DelegatingBackend):
    """WRONG on purpose (negative control for the crash tests): weights are written only
    after the next create, i.e. the commit becomes visible before its payload exists."""

    def __init__(self, inner: Backend, fault: storage.FaultHook | None = None):
        super().__init__(inner)
        self._pending: list[tuple[str, bytes]] = []
        self._fault = fault or (lambda point: None)

    def write(self, key: str, data: bytes) -> None:
        if key.startswith("payload/"):
            self._pending.append((key, data))
        else:
            self.inner.write(key, data)

    def create(self, key: str, data: bytes) -> bool:
        won = self.inner.create(key, data)
        self._fault("publish:after_commit")  # the publish's own point comes too late here
        for pending in self._pending:
            self.inner.write(*pending)
        self._pending.clear()
        return won


PRIMITIVES = {"correct": None, "overwrite": OverwritingCreate, "check_then_write": CheckThenWriteCreate,
              "weights_after_commit": WeightsAfterCommit}


def open_test_store(url: str, primitive: str = "correct", fault: storage.FaultHook | None = None,
                    **kwargs: Any) -> storage.PopulationStore:
    """A store on ``url`` whose create primitive is the real one or a deliberately wrong one;
    ``fault``: its fault hook (the backend's and the store's)."""
    backend = storage.open_backend(url, fault=fault)
    wrong = PRIMITIVES[primitive]
    if wrong is WeightsAfterCommit:
        backend = WeightsAfterCommit(backend, fault)
    elif wrong is not None:
        backend = wrong(backend)
    return storage.PopulationStore(backend, fault=fault, **kwargs)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for helper subprocesses: this one (emulator variables included)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    env.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    env.update(extra)
    return env


def start_helper(script: str, *args: str, env: dict[str, str] | None = None,
                 stdout: Any = subprocess.PIPE) -> subprocess.Popen:
    """Start ``tests/<script>`` in a fresh Python process."""
    return subprocess.Popen([sys.executable, str(TESTS / script), *args],
                            env=env or subprocess_env(), stdout=stdout,
                            stderr=subprocess.PIPE, text=True)


def wait_for_file(path: Path, timeout: float, procs: list[subprocess.Popen] = ()) -> None:
    """Wait until ``path`` exists; fail early if a helper process died."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                raise AssertionError(f"helper exited with {p.returncode}: {err[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(POLL_SECONDS)


def all_payload_names(store: storage.PopulationStore) -> set[str]:
    return set(store.backend.list("payload"))


def referenced_payloads(store: storage.PopulationStore) -> set[str]:
    """Payload names in use: named by live commits or kept markers, or of a quarantined id."""
    quarantined = {q["id"] for q in store.history.list_quarantine()}
    names = {n for n in store.backend.list("payload") if parse_payload_name(n) in quarantined}
    for info in store.population.list_alive():
        commit = json.loads(store.backend.read(info.key))
        names.add(commit["payload"].split("/", 1)[1])
    for info in store.history.list_kept():
        marker = json.loads(store.backend.read(info.key))
        names.add(marker["payload"].split("/", 1)[1])
    return names


def temp_files(store: storage.PopulationStore) -> list[str]:
    """Leftover temp files anywhere in the store (only the local backend writes any)."""
    out = []
    for d in ("", "alive", "payload", "history", "quarantine", "workers", "kept", "state"):
        out += [f"{d}/{n}" for n in store.backend.list(d) if n.startswith(storage.TEMP_PREFIX)]
    return out

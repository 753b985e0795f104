"""``evo check URL [--repair] [--grace S] [--deep] [--json]`` as a user runs it (a real process)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

import dna
import storage
from evo.config import RunConfig
from helpers_store import REPO, publish_random, start_helper, subprocess_env


def evo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch", *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)


def _population(url: str, **config) -> tuple[storage.PopulationStore, list[storage.IndividualInfo]]:
    store = storage.open_store(url)
    assert store.runinfo.init_config(RunConfig(**config).to_json())
    rng = np.random.default_rng(0)
    return store, [publish_random(store, rng)[0] for _ in range(3)]


def _crash_publisher(url: str) -> None:
    proc = start_helper("helpers_store_crash.py", "--crash-at", "publish:after_payload", "publish", url, "1")
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.slow)])
def url(request, tmp_path):
    return str(tmp_path / "pop") if request.param == "local" else request.getfixturevalue("gcs_bucket_url")


def test_healthy_population_exits_0_with_the_promised_json(url):
    store, infos = _population(url)
    store.population.kill(infos[0], worker="w")
    r = evo("check", url, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True
    assert {k: report[k] for k in ("alive", "torn", "orphans", "quarantined", "zombies", "history")} == \
        {"alive": 2, "torn": 0, "orphans": 0, "quarantined": 0, "zombies": 0, "history": 1}
    assert all(isinstance(report[k], int) for k in ("alive", "torn", "orphans", "quarantined"))


@pytest.mark.slow  # processes killed mid-step
def test_crash_leftovers_are_reported_then_repaired(url):
    store, _ = _population(url)
    _crash_publisher(url)

    r = evo("check", url, "--json")  # default grace: a fresh leftover may be a publish in progress
    assert r.returncode == 0 and json.loads(r.stdout)["pending"] == 1

    r = evo("check", url, "--grace", "0", "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 1 and report["ok"] is False and report["orphans"] == 1
    assert any("referenced by nothing" in p for p in report["problems"])

    r = evo("check", url, "--repair", "--grace", "0", "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["ok"] is True and report["repaired"] == {"orphans": 1}

    r = evo("check", url, "--grace", "0")
    assert r.returncode == 0 and ": ok" in r.stdout.splitlines()[0]


@pytest.mark.slow  # processes killed mid-step
def test_zombie_and_human_output(url):
    store, (victim, *_) = _population(url)
    proc = start_helper("helpers_store_crash.py", "--crash-at", "kill:after_claim", "kill", url, victim.id)
    proc.communicate(timeout=120)
    r = evo("check", url, "--grace", "0")
    assert r.returncode == 1
    assert "PROBLEMS" in r.stdout and "zombies 1" in r.stdout and "killed but still listed" in r.stdout
    r = evo("check", url, "--repair", "--grace", "0")
    assert r.returncode == 0 and "repaired:" in r.stdout
    assert victim not in store.population.list_alive()


@pytest.mark.slow  # several evo processes (~5 s on a loaded 2-core machine)
def test_deep_check_reads_the_weights(tmp_path):
    url = str(tmp_path / "pop")
    store, (a, *_) = _population(url)
    payload = json.loads(store.backend.read(a.key))["payload"]
    blob = bytearray(store.backend.read(payload))
    blob[-1] ^= 0xFF
    store.backend.write(payload, bytes(blob))
    assert evo("check", url).returncode == 0  # same size: only --deep can tell
    r = evo("check", url, "--deep", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["corrupt"] == 1


@pytest.mark.slow  # several evo processes (~5 s on a loaded 2-core machine)
def test_check_uses_the_run_bounds_from_config(tmp_path):
    url = str(tmp_path / "pop")
    _population(url)
    assert evo("check", url).returncode == 0
    tight = storage.open_store(str(tmp_path / "tight"))
    tight.runinfo.init_config(RunConfig(bounds=dna.Bounds(min_learning_rate=1e-4, max_learning_rate=1e-3)).to_json())
    publish_random(tight, np.random.default_rng(1))
    r = evo("check", str(tmp_path / "tight"), "--json")
    assert r.returncode == 1 and "outside bounds" in " ".join(json.loads(r.stdout)["problems"])


@pytest.mark.parametrize("args, message", [
    (["check", "NOPE"], "no config.json"),
    (["check", "s3://bucket/x"], "unsupported store URL scheme 's3'"),
    (["check", "{tmp}", "--grace", "-1"], "--grace must be"),
])
def test_user_errors_are_one_line_with_exit_2(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)).replace("NOPE", str(tmp_path / "nope")) for a in args]
    r = evo(*args)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_broken_config_is_a_problem_not_a_crash(tmp_path):
    url = str(tmp_path / "pop")
    storage.open_store(url).runinfo.init_config('{"population_size": "many"')
    r = evo("check", url, "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["ok"] is False
    assert "config.json does not parse" in json.loads(r.stdout)["problems"][0]

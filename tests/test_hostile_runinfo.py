"""Issue 23, the run's own records: ``workers/`` heartbeats (and ``launches/``, ``state/``)
and ``config.json``, planted by someone who can write the store.

- heartbeats dated in the future or holding absurd numbers are broken entries, never an
  active worker or a 300-digit status column; ``check`` names them, ``--repair`` moves them
  aside, and the real workers' heartbeats stay;
- a ``config.json`` that is nested, huge, NaN, truncated, oversized or not a regular file
  makes every command say so in one line naming it;
- a ``config.json`` replaced after ``evo init`` (its seal, ``state/config.sha256``, no
  longer matches) stops workers from starting, and ``check --repair`` repairs nothing.

Commands run as real processes without root's permission bypass (tests/helpers_hostile.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import storage
from evo.config import RunConfig
from helpers_hostile import CAN_DROP_BYPASS, NO_BYPASS_REASON, WITHOUT_BYPASS, evo_cmd, peak_rss_mib, run_evo
from helpers_store import POLL_SECONDS, REPO, publish_random, subprocess_env
from launch.cli import main
from launch.views.snapshot import take_snapshot
from launch.views.status import status_report
from storage.runinfo_format import CONFIG_SEAL_KEY, MAX_CLOCK_SKEW, MAX_COUNT

needs_no_bypass = pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
INIT = ("--dataset", "synthetic", "-P", "6", "--synthetic-train-seconds", "0.01")


def _beat(worker: str, when: float, **info) -> bytes:
    return json.dumps({"worker": worker, "time": when,
                       "info": {"host": "h", "pid": 1, "state": "idle", "interval": 10, **info}}).encode()


def _plant_heartbeats(store: storage.PopulationStore) -> set[str]:
    """Heartbeats no reader may take for an active worker; returns their keys."""
    now = time.time()
    planted = {
        "workers/future.json": _beat("future", now + 10 * 365 * 86400),
        "workers/just-future.json": _beat("just-future", now + MAX_CLOCK_SKEW + 600),
        "workers/huge-count.json": _beat("huge-count", now, individuals=1e300),
        "workers/negative.json": _beat("negative", now, kills=-5),
        "workers/big-int.json": _beat("big-int", now, race_losses=MAX_COUNT + 1),
        "workers/digits.json": b'{"worker":"digits","time":' + b"9" * 300 + b',"info":{}}',
        "workers/fitness.json": _beat("fitness", now, best_fitness=1e308),
        "workers/bad-pid.json": _beat("bad-pid", now, pid=2**70),
        "workers/not-its-name.json": _beat("someone-else", now),
        "workers/ancient.json": _beat("ancient", -1e300),
        "workers/long-host.json": _beat("long-host", now, host="h" * 5000),
        "workers/scheduler.json": _beat("scheduler", now, scheduler={"kind": "slurm", "job_id": "1" * 1000}),
        "workers/info-list.json": json.dumps({"worker": "info-list", "time": now, "info": [1]}).encode(),
        "workers/nested.json": b"[" * 10000 + b"]" * 10000,
    }
    for key, raw in planted.items():
        store.backend.write(key, raw)
    return set(planted)


# ----- item 1: heartbeats (fast units) -----

def test_out_of_bounds_heartbeats_are_broken_never_active(store_url):
    store = storage.open_store(store_url)
    store.runinfo.init_config(RunConfig(dataset="synthetic").to_json())
    store.runinfo.heartbeat("real", {"state": "idle", "interval": 10, "individuals": 3, "started": time.time()})
    store.backend.write("workers/skewed.json", _beat("skewed", time.time() + MAX_CLOCK_SKEW / 2))
    planted = _plant_heartbeats(store)
    beats, broken = store.runinfo.read_workers()
    assert sorted(b["worker"] for b in beats) == ["real", "skewed"]   # a little clock skew is fine
    assert {b.key for b in broken} == planted
    assert all(len(b.problem) < 200 and "\n" not in b.problem for b in broken)
    assert "in the future" in next(b.problem for b in broken if b.key == "workers/future.json")

    snap = take_snapshot(store_url, spinner=False)
    assert {b.key for b in snap.broken} == planted                  # status: "broken entries"
    report = status_report(snap, None)
    assert sorted(w["worker"] for w in report["workers"]) == ["real", "skewed"]
    assert report["workers_active"] == 2 and report["broken"] == len(planted)
    numbers = [v for w in report["workers"] for v in w.values() if isinstance(v, (int, float))]
    assert all(abs(v) < 1e12 for v in numbers)


def test_check_names_bad_heartbeats_and_repair_moves_only_them(store_url):
    store = storage.open_store(store_url)
    store.runinfo.init_config(RunConfig(dataset="synthetic").to_json())
    store.runinfo.heartbeat("real", {"state": "idle", "interval": 10})
    store.runinfo.record_launch("slurm-12", {"kind": "slurm", "job_id": "12", "tasks": 2, "command": "evo"})
    planted = _plant_heartbeats(store)
    store.backend.write("launches/slurm-13.json", json.dumps(
        {"name": "slurm-13", "time": time.time() + 1e9, "info": {"kind": "slurm", "job_id": "13"}}).encode())
    store.backend.write("state/not-a-marker", b"{}")
    report = store.check(grace_seconds=0)
    assert not report.ok
    text = "\n".join(report.problems)
    for key in planted | {"launches/slurm-13.json"}:
        assert key in text
    assert "state/not-a-marker" in text
    assert "workers/real.json" not in text and "launches/slurm-12.json" not in text

    repaired = store.check(repair=True, grace_seconds=0)
    assert repaired.repaired.get("corrupt", 0) + repaired.repaired.get("unreadable", 0) == len(planted) + 1
    assert sorted(store.backend.list("workers")) == ["real.json"]
    assert [r["name"] for r in store.runinfo.list_launches()] == ["slurm-12"]
    after = store.check(grace_seconds=0)
    assert [p for p in after.problems if "workers/" in p or "launches/" in p] == []


# ----- item 3: the config's seal (fast units) -----

def test_the_seal_tells_verified_changed_unusable_and_legacy(store_url):
    store = storage.open_store(store_url)
    text = RunConfig(dataset="synthetic").to_json()
    assert store.runinfo.init_config(text)
    assert store.runinfo.config_seal(text).state == "verified"
    assert not store.runinfo.init_config(text)                      # created once
    changed = store.runinfo.config_seal(text.replace("synthetic", "digits"))
    assert changed.state == "changed" and not changed.trusted and "config.json changed" in changed.problem
    store.backend.write(CONFIG_SEAL_KEY, b"[" * 5000)
    assert store.runinfo.config_seal(text).state == "unusable"
    store.backend.delete(CONFIG_SEAL_KEY)
    legacy = store.runinfo.config_seal(text)
    assert legacy.state == "legacy" and legacy.trusted
    assert store.runinfo.seal_config(text) and not store.runinfo.seal_config("{}")   # never replaced
    assert store.runinfo.config_seal(text).state == "verified"


def _tight(config_text: str) -> str:
    """The same config with bounds no individual of the run fits."""
    d = json.loads(config_text)
    d["bounds"]["min_learning_rate"], d["bounds"]["max_learning_rate"] = 1e-5, 2e-4
    return json.dumps(d, indent=2)


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    """``evo ARGV`` in this process (the quick tier): (exit code, stdout, stderr)."""
    sigterm = signal.getsignal(signal.SIGTERM)   # `evo worker` installs its own handler
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_replaced_config_is_refused_by_workers_and_check_repairs_nothing(tmp_path, capsys):
    url = str(tmp_path / "pop")
    assert _main(capsys, "init", url, *INIT)[0] == 0
    store = storage.open_store(url)
    rng = np.random.default_rng(0)
    for _ in range(3):
        publish_random(store, rng)
    (tmp_path / "pop" / "config.json").write_text(_tight(store.runinfo.read_config()))
    code, _, err = _main(capsys, "worker", url, "--max-individuals", "1")
    assert code == 2 and err.count("\n") == 1 and "config.json changed since 'evo init'" in err
    code, out, err = _main(capsys, "check", url, "--repair", "--json")
    report = json.loads(out)
    assert code == 1 and report["repaired"] == {} and "nothing repaired" in report["problems"][1]
    assert len(store.population.list_alive()) == 3 and store.history.list_quarantine() == []
    code, _, err = _main(capsys, "retrain", url, "--top", "1", "--no-train")
    assert code == 2 and err.count("\n") == 1 and "evo retrain refuses" in err
    assert store.backend.list("retrain") == []
    code, out, err = _main(capsys, "status", url)
    assert code == 0 and err.startswith("warning: ") and "changed since" in err   # readers go on, warned


def test_init_seals_a_legacy_run_it_confirms_and_force_new_config_reseals(tmp_path, capsys):
    root = tmp_path / "pop"
    url = str(root)
    assert _main(capsys, "init", url, *INIT)[0] == 0
    text = (root / "config.json").read_text()
    seal = (root / CONFIG_SEAL_KEY).read_bytes()
    assert _main(capsys, "init", url, *INIT)[0] == 0 and (root / CONFIG_SEAL_KEY).read_bytes() == seal
    (root / CONFIG_SEAL_KEY).unlink()                               # a run made before seals
    code, out, _ = _main(capsys, "check", url, "--json")
    assert code == 0 and json.loads(out)["config_seal"] == "legacy" and json.loads(out)["warnings"]
    code, _, err = _main(capsys, "init", url, *INIT, "-P", "7")     # a different config: refused,
    assert code == 2 and not (root / CONFIG_SEAL_KEY).exists()       # and nothing sealed
    assert _main(capsys, "init", url, *INIT)[0] == 0                # the user confirms it
    assert storage.open_store(url).runinfo.config_seal(text).state == "verified"
    publish_random(storage.open_store(url), np.random.default_rng(0))
    (root / "config.json").unlink()
    assert _main(capsys, "init", url, *INIT, "-P", "7", "--force-new-config")[0] == 0
    store = storage.open_store(url)
    assert store.runinfo.config_seal(store.runinfo.read_config()).state == "verified"
    assert json.loads(_main(capsys, "check", url, "--json")[1])["config_seal"] == "verified"


@pytest.mark.slow  # a dozen evo processes
@needs_no_bypass
def test_a_replaced_config_stops_workers_and_repair(tmp_path):
    root = tmp_path / "pop"
    url = str(root)
    assert run_evo("init", url, *INIT).returncode == 0
    store = storage.open_store(url)
    rng = np.random.default_rng(0)
    for _ in range(4):
        publish_random(store, rng)
    good = (root / "config.json").read_text()
    tight = tmp_path / "tight.json"
    tight.write_text(_tight(good))
    (root / "config.json").write_text(tight.read_text())

    worker = run_evo("worker", url, "--max-individuals", "1")
    assert worker.returncode == 2 and "Traceback" not in worker.stderr
    assert worker.stderr.count("\n") == 1 and "config.json changed since 'evo init'" in worker.stderr
    repaired = run_evo("check", url, "--repair", "--json")
    assert repaired.returncode == 1 and "Traceback" not in repaired.stderr
    report = json.loads(repaired.stdout)
    assert report["config_seal"] == "changed" and report["repaired"] == {}
    assert any("nothing repaired" in p for p in report["problems"])
    assert len(store.population.list_alive()) == 4 and store.history.list_quarantine() == []
    adopt = run_evo("init", url, "--config", str(tight))
    assert adopt.returncode == 2 and "does not adopt it" in adopt.stderr       # even when asked to

    # the same tight config in a run without a seal (made before seals) is judged as before
    (root / CONFIG_SEAL_KEY).unlink()
    legacy = json.loads(run_evo("check", url, "--json").stdout)
    assert legacy["corrupt"] == 4 and legacy["warnings"]          # what a sealed run is spared

    (root / "config.json").write_text(good)
    assert run_evo("init", url, *INIT).returncode == 0             # confirms it: sealed again
    assert store.runinfo.config_seal(good).state == "verified"
    ok = run_evo("check", url, "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["alive"] == 4


# ----- item 2: config.json that is not a config -----

def _plant_config(root: Path, kind: str, good: str) -> None:
    path = root / "config.json"
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "deep":
        path.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "huge-number":
        path.write_text(good.replace('"seed": 0', '"seed": 1' + "0" * 400, 1))
    elif kind == "nan":
        path.write_text(good.replace('"seed": 0', '"seed": NaN', 1))
    elif kind == "truncated":
        path.write_text(good[:len(good) // 2])
    elif kind == "oversized":
        with open(path, "wb") as f:
            f.truncate(2**30)                      # sparse: 1 GiB that costs no disk
    elif kind == "symlink":
        os.symlink("/etc/passwd", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()


CONFIG_KINDS = ("deep", "huge-number", "nan", "truncated", "oversized", "symlink", "fifo", "dir")
COMMANDS = (("worker", "{url}", "--max-individuals", "1"), ("status", "{url}"), ("check", "{url}"),
            ("check", "{url}", "--repair"), ("report", "{url}", "-o", "{tmp}/r.html"),
            ("plot", "{url}", "-o", "{tmp}/p.png"), ("lineage", "{url}", "best"), ("audit", "{url}"),
            ("retrain", "{url}", "--top", "1", "--no-train"), ("best", "{url}"))


def _one_line_about_config(args: tuple[str, ...], root: Path, tmp: Path) -> None:
    argv = [a.format(url=root, tmp=tmp) for a in args]
    done, peak = peak_rss_mib(["timeout", "60", *evo_cmd(*argv)])
    out = done.stdout + done.stderr
    assert done.returncode in (1, 2), (argv, out[-2000:])
    assert "Traceback" not in out and "config.json" in out, (argv, out[-2000:])
    if done.returncode == 2:
        assert done.stderr.count("\n") == 1, (argv, done.stderr[-2000:])
    assert peak < 500, (argv, peak)


@pytest.mark.parametrize("kind", CONFIG_KINDS)
def test_a_bad_config_is_one_line_for_every_command(tmp_path, capsys, kind):
    root = tmp_path / "pop"
    assert _main(capsys, "init", str(root), *INIT)[0] == 0
    _plant_config(root, kind, (root / "config.json").read_text())
    for args in COMMANDS:
        code, out, err = _main(capsys, *(a.format(url=root, tmp=tmp_path) for a in args))
        assert code in (1, 2) and "Traceback" not in out + err and "config.json" in out + err, (args, out, err)
        assert code == 1 or err.count("\n") == 1, (args, err)


@pytest.mark.slow  # 4 processes
@needs_no_bypass
def test_a_deeply_nested_config_is_one_line_for_worker_status_and_check(tmp_path):
    root = tmp_path / "pop"
    assert run_evo("init", str(root), *INIT).returncode == 0
    _plant_config(root, "deep", (root / "config.json").read_text())
    for args in COMMANDS[:4]:
        _one_line_about_config(args, root, tmp_path)


@pytest.mark.slow  # 10 commands, each a process (the quick tier runs them in-process)
@needs_no_bypass
@pytest.mark.parametrize("kind", ("deep", "oversized", "fifo"))
def test_every_command_says_in_one_line_what_is_wrong_with_config_json(tmp_path, kind):
    root = tmp_path / "pop"
    assert run_evo("init", str(root), *INIT).returncode == 0
    assert run_evo("worker", str(root), "--max-individuals", "3").returncode == 0
    _plant_config(root, kind, (root / "config.json").read_text())
    for args in COMMANDS:
        _one_line_about_config(args, root, tmp_path)


# ----- item 1 with real workers: local (no bypass) and the GCS emulator -----

def _start_workers(url: str, logs: Path, n: int = 2) -> list[tuple[subprocess.Popen, Path]]:
    procs = []
    for i in range(n):
        log = logs / f"worker-{i}.log"
        with open(log, "wb") as f:
            procs.append((subprocess.Popen([*WITHOUT_BYPASS, sys.executable, "-m", "launch", "worker", url,
                                            "--index", str(i), "--heartbeat-seconds", "1"],
                                           cwd=REPO, env=subprocess_env(), stdout=f, stderr=subprocess.STDOUT),
                          log))
    return procs


def _born(store: storage.PopulationStore) -> int:
    return len(store.population.list_alive()) + store.history.count_history()


def _wait(predicate, procs, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for p, log in procs:
            assert p.poll() is None, f"a worker exited ({p.returncode}) while {what}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out while {what}"
        time.sleep(POLL_SECONDS * 10)


def _stop(procs) -> str:
    logs = []
    for p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p, log in procs:
        p.wait(timeout=60)
        logs.append(log.read_text())
    return "\n".join(logs)


def _workers_survive_planted_heartbeats(url: str, tmp_path: Path, plant_more=None) -> None:
    assert run_evo("init", url, *INIT).returncode == 0
    store = storage.open_store(url)
    procs = _start_workers(url, tmp_path)
    try:
        _wait(lambda: _born(store) >= 6 and len(store.runinfo.list_workers()) == 2, procs, 120, "seeding")
        planted = _plant_heartbeats(store)
        planted |= plant_more(store) if plant_more else set()
        target = _born(store) + 15
        _wait(lambda: _born(store) >= target, procs, 120, "publishing among planted heartbeats")

        done, peak = peak_rss_mib(["timeout", "60", *evo_cmd("status", url, "--json")])
        assert done.returncode == 0 and "Traceback" not in done.stderr and peak < 500, done.stderr[-2000:]
        report = json.loads(done.stdout)
        assert report["workers_active"] == 2 and len(report["workers"]) == 2
        assert all(abs(v) < 1e12 for w in report["workers"] for v in w.values() if isinstance(v, (int, float)))
        text = run_evo("status", url).stdout
        assert max(len(word) for word in text.split()) < 80        # no 300-digit column

        done, peak = peak_rss_mib(["timeout", "60", *evo_cmd("check", url, "--json")])
        assert done.returncode == 1 and "Traceback" not in done.stderr and peak < 500, done.stderr[-2000:]
        problems = "\n".join(json.loads(done.stdout)["problems"])
        assert all(key in problems for key in planted), problems
        done, peak = peak_rss_mib(["timeout", "60", *evo_cmd("check", url, "--repair", "--json")])
        assert "Traceback" not in done.stderr and peak < 500
        assert json.loads(done.stdout)["ok"], done.stdout[-3000:]
        assert sorted(n[:-5] for n in store.backend.list("workers")) == \
            sorted(b["worker"] for b in store.runinfo.list_workers())
        assert len(store.runinfo.list_workers()) == 2                # the real workers' heartbeats stay
        target = _born(store) + 5
        _wait(lambda: _born(store) >= target, procs, 120, "publishing after the repair")
    finally:
        logs = _stop(procs)
    assert "Traceback" not in logs, logs[-3000:]


@pytest.mark.slow  # two real workers among planted heartbeats
@needs_no_bypass
def test_local_workers_keep_publishing_among_planted_heartbeats(tmp_path):
    root = tmp_path / "pop"

    def foreign(store) -> set[str]:
        (root / "workers" / "link.json").symlink_to("/dev/zero")
        os.mkfifo(root / "workers" / "fifo.json")
        (root / "workers" / "dir.json").mkdir()
        unreadable = root / "workers" / "unreadable.json"
        unreadable.write_bytes(_beat("unreadable", time.time()))
        unreadable.chmod(0)
        return {"workers/link.json", "workers/fifo.json", "workers/dir.json", "workers/unreadable.json"}

    _workers_survive_planted_heartbeats(str(root), tmp_path, foreign)


@pytest.mark.slow  # two real workers on the emulator
def test_gcs_workers_keep_publishing_among_planted_heartbeats(gcs_bucket_url, tmp_path):
    _workers_survive_planted_heartbeats(gcs_bucket_url, tmp_path)

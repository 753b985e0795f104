"""`evo audit`: a run's invariants proven from the store (and the workers' event log).

Clean runs of real worker processes pass; each kind of damage the audit claims to detect
(a lost individual, a double kill, a phantom kill, a missing parent, a population out of its
bounds, a torn event line) is made for real and must be reported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import dna
from evo.audit import EventLog, audit_store, estimate_workers, read_events
from evo.config import RunConfig
from evo.train.synthetic import SyntheticSettings
from evo.train.synthetic import safetensors_blob
from storage import open_store
from storage.records import HISTORY

REPO = Path(__file__).resolve().parent.parent


def init(url: str, population: int = 12) -> None:
    config = RunConfig(dataset="synthetic", population_size=population, seed=1,
                       plugins={"synthetic": SyntheticSettings(weight_bytes=128)})
    assert open_store(url).runinfo.init_config(config.to_json())


def run_workers(url: str, n: int, each: int, events: Path, extra_args: tuple[str, ...] = ()) -> list[int]:
    procs = [subprocess.Popen([sys.executable, "-m", "launch", "worker", url, "--max-individuals", str(each),
                               "--quiet", "--index", str(i), "--event-log", str(events), *extra_args],
                              cwd=REPO, env=dict(os.environ),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(n)]
    return [p.wait(timeout=120) for p in procs]


def evo_audit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch", "audit", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


@pytest.fixture(scope="module")
def clean_run_once(tmp_path_factory) -> Path:
    """A finished run of 3 concurrent worker processes with an event log, made once per module."""
    folder = tmp_path_factory.mktemp("clean-run")
    init(str(folder / "pop"))
    assert run_workers(str(folder / "pop"), 3, 30, folder / "events.jsonl") == [0, 0, 0]
    return folder


@pytest.fixture
def clean_run(clean_run_once, tmp_path):
    """A finished run of 3 concurrent worker processes with an event log: this test's own copy
    (tests damage it), so the workers run once for all of them."""
    shutil.copytree(clean_run_once / "pop", tmp_path / "pop", symlinks=True)
    shutil.copy2(clean_run_once / "events.jsonl", tmp_path / "events.jsonl")
    return str(tmp_path / "pop"), tmp_path / "events.jsonl"


@pytest.mark.slow  # real worker processes
def test_a_clean_concurrent_run_passes(clean_run):
    url, events = clean_run
    out = evo_audit(url, "--json", "--workers", "3", "--events", str(events))
    assert out.returncode == 0, out.stdout + out.stderr
    r = json.loads(out.stdout)
    assert r["ok"] and r["violations"] == []
    assert r["born"] == 90 and r["alive"] + r["dead"] == 90 and r["zombies"] == 0
    e = r["events"]
    assert e["publishes"] == 90 and e["kills"] == r["dead"] and e["unlogged_births"] == 0
    assert e["lost"] == e["double_kills"] == e["phantom_kills"] == e["mismatched"] == 0
    assert r["population_min"] >= 12 - 3 and r["population_max"] <= 12 + 3
    assert r["seeding_end"] is not None and r["births_after_seeding"] > 0


@pytest.mark.slow  # real worker processes
def test_human_output_and_worker_estimate_from_heartbeats(clean_run):
    url, _ = clean_run
    out = evo_audit(url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0].endswith(": ok")
    r = json.loads(evo_audit(url, "--json").stdout)
    assert r["workers_source"] == "heartbeats" and 1 <= r["workers"] <= 3 and r["workers_seen"] == 3


@pytest.mark.slow  # real worker processes
def test_a_vanished_individual_is_reported_lost(clean_run):
    url, events = clean_run
    store = open_store(url)
    victim = store.population.list_alive()[0]
    store.backend.delete(victim.key)          # gone without a history record
    out = evo_audit(url, "--json", "--workers", "3", "--events", str(events))
    r = json.loads(out.stdout)
    assert out.returncode == 1 and "lost" in r["violations"] and r["events"]["lost"] == 1
    assert any(victim.id in p for p in r["problems"])


@pytest.mark.slow  # real worker processes
def test_a_second_winning_killer_is_a_double_kill(clean_run):
    url, events = clean_run
    dead = open_store(url).history.read_history()[0]
    EventLog(events).write("kill", id=dead["id"], worker="intruder-1", time=dead["death"])
    r = json.loads(evo_audit(url, "--json", "--events", str(events)).stdout)
    assert not r["ok"] and r["events"]["double_kills"] == 1 and "double_kill" in r["violations"]


@pytest.mark.slow  # real worker processes
def test_a_logged_kill_without_a_record_is_a_phantom_kill(clean_run):
    url, events = clean_run
    alive = open_store(url).population.list_alive()[0]
    EventLog(events).write("kill", id=alive.id, worker="liar-1", time=0.0)
    r = json.loads(evo_audit(url, "--json", "--events", str(events)).stdout)
    assert not r["ok"] and r["events"]["phantom_kills"] == 1


@pytest.mark.slow  # real worker processes
def test_a_parent_that_never_existed_is_reported(clean_run):
    url, _ = clean_run
    store = open_store(url)
    history = store.history.read_history()
    children = [r for r in history + [{"parent": store.population.read_individual(i).parent} for i in store.population.list_alive()]
                if r["parent"]]
    parent = children[0]["parent"]
    assert store.backend.delete(f"{HISTORY}/{parent}.json") or store.backend.delete(store.population.find(parent).key)
    r = json.loads(evo_audit(url, "--json").stdout)
    assert not r["ok"] and r["missing_parents"] >= 1 and "missing_parent" in r["violations"]


def test_population_bounds_are_checked_after_seeding():
    url = f"memory://audit-bounds-{uuid.uuid4().hex}"
    store = open_store(url)
    clock = [1_800_000_000.0]
    store = type(store)(store.backend, clock=lambda: clock[0])

    def publish():
        clock[0] += 1.0
        return store.population.publish(dna.initial().to_dict(), safetensors_blob(b"\0" * 16), parent=None,
                             mutation="initial", fitness=0.5, worker="w")

    for _ in range(10):       # seeding: 10 individuals, never counted against the bounds
        publish()
    for _ in range(5):        # then five more without any kill: 15 alive
        publish()
    loose = audit_store(store, population_size=10, workers=5)
    tight = audit_store(store, population_size=10, workers=4)
    assert loose.ok and (loose.population_min, loose.population_max) == (10, 15)
    assert not tight.ok and tight.violations == ("population_out_of_bounds",)
    first = store.population.list_alive()[0]
    clock[0] += 1.0
    assert store.population.kill(first, worker="w")
    after = audit_store(store, population_size=10, workers=5)
    assert after.population_final == 14 and after.dead == 1 and after.seeding_end is not None


def test_workers_are_estimated_from_overlapping_heartbeats():
    beats = [{"time": 10.0, "info": {"started": 0.0}}, {"time": 20.0, "info": {"started": 5.0}},
             {"time": 9.0, "info": {"started": 8.0}},            # three at once during [8, 9]
             {"time": 30.0, "info": {"started": 21.0}}, {"time": 25.0, "info": {"started": 22.0}},
             {"bad": 1}, {"time": "x", "info": {}}]
    assert estimate_workers(beats) == 3
    assert estimate_workers(beats[3:]) == 2
    assert estimate_workers([]) == 0


@pytest.mark.slow  # real worker processes
def test_event_lines_of_many_processes_never_interleave(tmp_path):
    path = tmp_path / "events.jsonl"
    code = ("import sys; from evo.audit import EventLog; log = EventLog(sys.argv[1]); "
            "[log.write('publish', id='20260101T000000.000000Z-0000abcd', worker=sys.argv[2], pad='x' * 900, n=i) "
            "for i in range(1500)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"w{i}"], cwd=REPO) for i in range(6)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 6
    events, bad = read_events(path)
    assert bad == 0 and len(events) == 6 * 1500
    assert {(e["worker"], e["n"]) for e in events} == {(f"w{i}", n) for i in range(6) for n in range(1500)}


@pytest.mark.slow  # real worker processes
def test_a_torn_event_line_is_a_violation(clean_run):
    url, events = clean_run
    with open(events, "ab") as f:
        f.write(b'{"event":"publish","id":"2026')
    r = json.loads(evo_audit(url, "--json", "--events", str(events)).stdout)
    assert not r["ok"] and r["events"]["bad_lines"] == 1 and "bad_event_lines" in r["violations"]


@pytest.mark.slow  # real worker processes
def test_a_zombie_left_by_a_crashed_killer_is_debris_not_a_violation(tmp_path):
    url = str(tmp_path / "pop")
    init(url, population=5)
    events = tmp_path / "events.jsonl"
    assert run_workers(url, 1, 5, events) == [0]            # seeded
    codes = run_workers(url, 1, 3, events, ("--crash-at", "kill:after_claim"))
    assert codes == [-9]                                     # died holding its claim
    r = json.loads(evo_audit(url, "--json", "--events", str(events)).stdout)
    assert r["ok"], r["problems"]
    assert r["zombies"] == 1 and r["events"]["unlogged_births"] == 0
    # the next worker is not blocked by it: it unlists the zombie and carries on
    assert run_workers(url, 1, 5, events) == [0]
    r = json.loads(evo_audit(url, "--json", "--events", str(events)).stdout)
    assert r["ok"] and r["born"] == 11


@pytest.mark.slow  # real worker processes on the GCS emulator
def test_gcs_store_audits_too(gcs_bucket_url, tmp_path):
    init(gcs_bucket_url, population=6)
    events = tmp_path / "events.jsonl"
    assert run_workers(gcs_bucket_url, 2, 10, events) == [0, 0]
    r = json.loads(evo_audit(gcs_bucket_url, "--json", "--events", str(events), env=dict(os.environ)).stdout)
    assert r["ok"] and r["born"] == 20 and r["events"]["publishes"] == 20


@pytest.mark.parametrize("args, message", [
    (["{tmp}/nothing"], "no config.json"),
    (["{pop}", "--events", "{tmp}/missing.jsonl"], "cannot read the event log"),
    (["{pop}", "--workers", "0"], "--workers must be at least 1"),
    (["ftp://x/y"], "unsupported store URL scheme"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    pop = str(tmp_path / "pop")
    init(pop)
    out = evo_audit(*[a.format(tmp=tmp_path, pop=pop) for a in args])
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evo audit: error:") and message in lines[0], out.stderr


def test_one_planted_id_years_old_keeps_the_timeline_bounded():
    """An id's date is its writer's choice: a garbage history entry named for 2001 must not
    make the births timeline hundreds of millions of 10-second bins (evo audit hung)."""
    import numpy as np
    from evo.audit import MAX_BINS
    from helpers_store import publish_random
    from storage.records import new_id

    store = open_store(f"memory://audit-old-id-{uuid.uuid4().hex}")
    rng = np.random.default_rng(1)
    for _ in range(3):
        publish_random(store, rng)
    old = new_id(1e9)[0]                       # 2001-09-09
    store.backend.write(f"{HISTORY}/{old}.json", b"\x80 planted")
    report = audit_store(store, population_size=3, workers=1)
    assert report.first_birth is not None and report.first_birth < 1.1e9
    assert 0 < len(report.births_timeline) <= MAX_BINS
    assert sum(n for _, n in report.births_timeline) == report.born

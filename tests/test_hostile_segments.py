"""Issue 23, the rows about history segments, history/ and quarantine/ ids: a planted segment or
record never outweighs the living, ids with impossible dates are no ids, segments and metrics
are bounded, and a broken segment is decoded once per read.

Each row has a quick in-process test (a local store) and a slow one with real commands (and,
for the row about the living, real workers) run without root's permission bypass.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dna
import storage
import storage.immutable
from helpers_hostile import CAN_DROP_BYPASS, NO_BYPASS_REASON, WITHOUT_BYPASS, evo_cmd, peak_rss_mib, run_evo
from helpers_store import POLL_SECONDS, REPO, publish_random, subprocess_env, weights_blob
from storage.records import MAX_METRIC_TEXT, is_id, loads, metrics_problem, parse_record_name
from storage.segments import SEGMENTS, encode_segment, parse_segment_name

BAD_DATE = "20261301T000000.000000Z-deadbeef"     # month 13
BAD_HOUR = "20261207T250000.000000Z-deadbeef"     # 25 o'clock


# ----- helpers -----

def _store(tmp_path: Path, live: int = 6, dead: int = 2) -> tuple[str, storage.PopulationStore, list, list]:
    """A local store with ``live`` listed and ``dead`` killed individuals (in-process)."""
    url = str(tmp_path / "pop")
    store = storage.open_store(url)
    store.runinfo.init_config("{}")
    rng = np.random.default_rng(7)
    infos = [publish_random(store, rng)[0] for _ in range(live + dead)]
    for info in infos[live:]:
        assert store.population.kill(info, worker="w")
    return url, store, infos[:live], infos[live:]


def _records_of(store: storage.PopulationStore, infos: list) -> list[dict]:
    """History records as a kill writes them (the commit plus its death) for live ``infos``."""
    out = []
    for info in infos:
        try:
            commit = loads(store.backend.read(info.key), "commit")
        except FileNotFoundError:   # killed since the listing (workers are running)
            continue
        out.append(dict(commit, death=time.time(), killer="attacker", reason="selection"))
    return out


def _plant_segment(store: storage.PopulationStore, records: list[dict], tail: bytes = b"") -> str:
    name, data = encode_segment(records)
    store.backend.write(name.key, data + tail)
    return name.key


def _renamed(record: dict, ident: str) -> dict:
    """``record`` as if it were the record of ``ident`` (its payload key follows the id)."""
    return dict(record, id=ident, payload=f"payload/{ident}.{'0' * 16}.safetensors")


def _alive_ids(url: str) -> set[str]:
    return {i.id for i in storage.open_store(url).population.list_alive()}


def _no_traceback(done: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]


# ----- row: a segment (or record) that records the living as dead -----

def test_a_valid_segment_naming_the_living_never_makes_them_dead(tmp_path):
    url, store, live, dead = _store(tmp_path)
    key = _plant_segment(store, _records_of(store, live))
    census = storage.open_store(url).history.census()
    assert {r["id"] for r in census.history} == {i.id for i in dead}
    assert [b.key for b in census.contradicted] == [key]
    assert not census.quarantine
    # check names the segment and fails; repair moves it aside, unlisting and quarantining nobody
    report = storage.open_store(url).check(grace_seconds=0)
    assert not report.ok and report.zombies == 0 and report.alive == len(live)
    assert any(key in p for p in report.problems), report.problems
    before = _alive_ids(url)
    repaired = storage.open_store(url).check(repair=True, grace_seconds=0)
    assert repaired.repaired.get("zombies", 0) == 0 and repaired.repaired["corrupt"] == 1
    assert _alive_ids(url) == before == {i.id for i in live}
    assert not storage.open_store(url).backend.list(SEGMENTS)
    assert not {parse_record_name(n) for n in store.backend.list("quarantine")} & before
    assert storage.open_store(url).check(grace_seconds=0).ok


def test_a_broken_segment_or_foreign_kill_marker_naming_the_living_quarantines_nobody(tmp_path):
    url, store, live, _ = _store(tmp_path)
    records = _records_of(store, live)
    broken = _plant_segment(store, records[:3], tail=b"junk after the gzip stream")
    # a kill marker that does not hold its individual's commit (another payload digest)
    forged = dict(records[4], payload_sha256="0" * 64)
    store.backend.write(f"history/{live[4].id}.json", json.dumps(forged).encode())
    census = storage.open_store(url).history.census()
    assert f"history/{live[4].id}.json" in {b.key for b in census.contradicted}
    report = storage.open_store(url).check(grace_seconds=0)
    assert not report.ok and report.zombies == 0
    assert any(broken in p for p in report.problems) and any(live[4].id in p for p in report.problems)
    before = _alive_ids(url)
    storage.open_store(url).check(repair=True, grace_seconds=0)
    assert _alive_ids(url) == before
    assert not {parse_record_name(n) for n in store.backend.list("quarantine")} & before
    assert not store.backend.exists(f"history/{live[4].id}.json") and not store.backend.list(SEGMENTS)
    assert storage.open_store(url).check(grace_seconds=0).ok


def test_a_zombie_with_its_own_kill_marker_is_still_unlisted(tmp_path):
    # the legitimate case: a killer died after its claim (history record = the commit + death)
    url, store, live, _ = _store(tmp_path)
    record = _records_of(store, live[:1])[0]
    store.backend.create(f"history/{live[0].id}.json", json.dumps(record).encode())
    census = storage.open_store(url).history.census()
    assert live[0].id in {r["id"] for r in census.history} and not census.contradicted
    repaired = storage.open_store(url).check(repair=True, grace_seconds=0)
    assert repaired.repaired["zombies"] == 1
    assert _alive_ids(url) == {i.id for i in live[1:]}


@pytest.mark.parametrize("planted", ["forged", "garbage", "fifo"])
def test_a_killer_never_takes_a_planted_kill_marker_for_a_death(tmp_path, planted):
    """A worker that picks a victim whose kill marker someone planted (a record that is not
    the victim's very commit, garbage, or a FIFO) moves it aside and kills properly; it never
    just unlists a live individual on another entry's word."""
    import os
    url, store, live, _ = _store(tmp_path)
    victim = live[2]
    marker = tmp_path / "pop" / "history" / f"{victim.id}.json"
    if planted == "forged":
        marker.write_text(json.dumps(dict(_records_of(store, [victim])[0], payload_sha256="0" * 64)))
    elif planted == "garbage":
        marker.write_bytes(b"\x80 planted")
    else:
        os.mkfifo(marker)
    assert store.population.kill(victim, worker="w") is True
    record = loads(store.backend.read(f"history/{victim.id}.json"), "record")
    assert record["killer"] == "w" and record["payload_sha256"] != "0" * 64
    assert victim.id not in _alive_ids(url)
    assert len(store.backend.list_detail("quarantine/moved")) + len(store.backend.list_foreign("quarantine/moved")) == 1


def test_a_killer_that_cannot_move_a_planted_marker_leaves_the_victim_alive(tmp_path):
    url, store, live, _ = _store(tmp_path)
    victim = live[1]
    store.backend.write(f"history/{victim.id}.json", b"\x80 planted")

    def refuse(*args, **kwargs):   # stand-in for a store that forbids the move (root cannot be refused)
        raise PermissionError("moving is not allowed here")

    store.backend.move_aside = refuse
    assert store.population.kill(victim, worker="w") is False
    assert victim.id in _alive_ids(url)


def test_a_second_killer_still_unlists_a_victim_the_first_one_killed(tmp_path):
    url, store, live, _ = _store(tmp_path)
    victim = live[0]
    record = _records_of(store, [victim])[0]
    store.backend.create(f"history/{victim.id}.json", json.dumps(dict(record, killer="first")).encode())
    assert store.population.kill(victim, worker="second") is False     # already dead: not ours
    assert victim.id not in _alive_ids(url)
    assert loads(store.backend.read(f"history/{victim.id}.json"), "record")["killer"] == "first"


# ----- row: ids with impossible dates -----

def test_ids_with_impossible_dates_are_no_ids():
    assert is_id("20261207T045959.123456Z-0123abcd") and is_id("20240229T000000.000000Z-0123abcd")
    for bad in (BAD_DATE, BAD_HOUR, "20250229T000000.000000Z-0123abcd", "00001207T000000.000000Z-0123abcd",
                "20261207T046000.000000Z-0123abcd"):
        assert not is_id(bad) and parse_record_name(f"{bad}.json") is None
        with pytest.raises(ValueError):
            storage.birth_of(bad)


def _plant_bad_dates(store: storage.PopulationStore, dead: list) -> tuple[str, str, str]:
    """history/, quarantine/ and a segment holding ids that no calendar has."""
    record = json.loads(store.backend.read(f"history/{dead[0].id}.json"))
    store.backend.write(f"history/{BAD_DATE}.json", json.dumps(_renamed(record, BAD_DATE)).encode())
    store.backend.write(f"quarantine/{BAD_HOUR}.json",
                        json.dumps({"schema": 1, "id": BAD_HOUR, "reason": "x", "time": 1.0}).encode())
    # a segment whose name is well-formed (first and last ids exist) holding a month-13 id
    last = _renamed(record, "20270101T000000.000000Z-0000beef")
    seg = _plant_segment(store, [record, _renamed(record, BAD_DATE.replace("beef", "bee0")), last])
    return f"history/{BAD_DATE}.json", f"quarantine/{BAD_HOUR}.json", seg


def test_impossible_dates_are_broken_entries_reported_and_moved_aside(tmp_path):
    url, store, _, dead = _store(tmp_path)
    planted = _plant_bad_dates(store, dead)
    census = storage.open_store(url).history.census(history_dna=False)   # what audit reads
    assert all(is_id(r["id"]) for r in census.history)
    assert all(b.id is None or is_id(b.id) for b in census.broken_history + census.broken_quarantine)
    report = storage.open_store(url).check(grace_seconds=0)
    assert not report.ok
    for key in planted:
        assert any(key in p for p in report.problems), (key, report.problems)
    storage.open_store(url).check(repair=True, grace_seconds=0)
    names = store.backend.list("quarantine") + store.backend.list("history")
    assert not [n for n in names if n.endswith(".json") and parse_record_name(n) is None]
    assert storage.open_store(url).check(grace_seconds=0).ok


# ----- row: huge metrics -----

def test_metrics_are_bounded_in_count_and_size():
    assert metrics_problem({"train_s": 1.5, "diverged": False, "graph_fallback": None, "device": "cpu",
                            "policy_choices": [1, 2, 3], "policy_logp": -3.2}) is None
    assert metrics_problem({f"k{i}": 1 for i in range(65)})
    assert metrics_problem({"s": "x" * (MAX_METRIC_TEXT + 1)})
    assert metrics_problem({"l": list(range(5000))})
    assert metrics_problem({"nested": [[1]]}) and metrics_problem({"d": {"a": {"b": 1}}})
    assert metrics_problem({f"s{i}": "x" * 1000 for i in range(40)})   # each short, too many in all


def _huge_metrics_segment(store: storage.PopulationStore, dead: list, records: int, width: int) -> str:
    """A segment of ``records`` well-formed records whose metrics hold ``width`` numbers each."""
    base = json.loads(store.backend.read(f"history/{dead[0].id}.json"))
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(base["birth"] - 3600))
    recs = [dict(_renamed(base, f"{stamp}.{i:06d}Z-{i:08x}"), metrics={"m": [i % 7 + 0.5] * width})
            for i in range(records)]
    return _plant_segment(store, recs)


def test_a_segment_of_huge_metrics_is_broken_and_reported(tmp_path):
    url, store, live, dead = _store(tmp_path)
    key = _huge_metrics_segment(store, dead, 20, 5000)
    census = storage.open_store(url).history.census(history_dna=False)
    assert key in {b.key for b in census.broken_history}
    report = storage.open_store(url).check(grace_seconds=0)
    assert not report.ok and any(key in p and "metrics" in p for p in report.problems), report.problems
    storage.open_store(url).check(repair=True, grace_seconds=0)
    assert _alive_ids(url) == {i.id for i in live} and storage.open_store(url).check(grace_seconds=0).ok


def test_publish_fits_metrics_a_worker_writes_into_the_bounds(tmp_path):
    url, store, _, _ = _store(tmp_path, live=1, dead=0)
    rng = np.random.default_rng(3)
    info = store.population.publish(dna.initial().to_dict(), weights_blob(rng),
                                    parent=None, mutation="initial", fitness=0.5, worker="w",
                                    metrics={"graph_fallback": "e" * 5000, "choices": (1, 2)})
    got = storage.open_store(url).population.read_individual(info)
    assert got is not None and len(got.metrics["graph_fallback"]) == MAX_METRIC_TEXT and got.metrics["choices"] == [1, 2]


# ----- row: a broken segment is decoded once per read -----

def test_a_broken_segment_is_decoded_once_for_many_ids(tmp_path, monkeypatch):
    url, store, live, dead = _store(tmp_path, live=2, dead=6)
    records = [json.loads(store.backend.read(f"history/{i.id}.json")) for i in dead]
    bad = [dict(r, dna=dict(r["dna"], learning_rate="fast")) for r in records]   # DNA fails validation
    key = _plant_segment(store, bad)
    for i in dead:
        store.backend.delete(f"history/{i.id}.json")
    calls = []
    real = storage.immutable.decode_segment
    monkeypatch.setattr(storage.immutable, "decode_segment", lambda *a, **k: calls.append(1) or real(*a, **k))
    reader = storage.open_store(url).with_run(bounds=dna.DEFAULT_BOUNDS)
    assert reader.history.dna_of([i.id for i in dead]) == {}
    assert len(calls) == 1
    assert key in {b.key for b in reader.history.census().broken_history} and len(calls) == 1
    for _ in range(2):   # without the DNA (which alone fails): decoded once more, its first half, then remembered
        assert {r["id"] for r in reader.history.census(history_dna=False).history} == {i.id for i in dead}
    assert len(calls) == 2


# ----- real commands, real workers (slow) -----

def _init(url: str) -> None:
    done = run_evo("init", url, "--dataset", "synthetic", "-P", "8", "--synthetic-train-seconds", "0.02")
    assert done.returncode == 0, done.stderr


def _workers(url: str, logs: Path, n: int = 2) -> list[tuple[subprocess.Popen, Path]]:
    procs = []
    for i in range(n):
        log = logs / f"worker-{i}.log"
        with open(log, "wb") as f:
            procs.append((subprocess.Popen([*WITHOUT_BYPASS, sys.executable, "-m", "launch", "worker", url,
                                            "--index", str(i)], cwd=REPO, env=subprocess_env(),
                                           stdout=f, stderr=subprocess.STDOUT), log))
    return procs


def _born(store: storage.PopulationStore) -> int:
    return len(store.population.list_alive()) + store.history.count_history()


def _wait_for(predicate, procs, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for p, log in procs:
            assert p.poll() is None, f"a worker exited ({p.returncode}) while {what}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out while {what}"
        time.sleep(POLL_SECONDS * 10)


def _stop(procs) -> str:
    for p, _ in procs:
        p.send_signal(signal.SIGTERM)
    out = []
    for p, log in procs:
        p.wait(timeout=60)
        assert p.returncode in (0, 128 + signal.SIGTERM), log.read_text()[-2000:]
        out.append(log.read_text())
    return "\n".join(out)


def _status_alive(url: str) -> int:
    done = run_evo("status", url, "--json")
    _no_traceback(done)
    return json.loads(done.stdout)["alive"]


def _living_fleet(url: str, tmp_path: Path) -> None:
    """Workers keep publishing with a valid segment that records every listed individual as
    dead planted among them; with one planted while they are stopped, status counts the
    living, check names the segment and repair moves it aside without unlisting anyone;
    new workers then publish."""
    _init(url)
    store = storage.open_store(url).with_run(bounds=dna.DEFAULT_BOUNDS)
    procs = _workers(url, tmp_path)
    try:
        _wait_for(lambda: len(store.population.list_alive()) >= 8, procs, 120, "seeding")
        key = _plant_segment(store, _records_of(store, store.population.list_alive()))
        target = _born(store) + 3
        _wait_for(lambda: _born(store) >= target, procs, 120, "publishing after the planted segment")
    finally:
        logs = _stop(procs)
    # aging selection killed the planted (oldest) ones meanwhile: plant again, workers stopped
    key = _plant_segment(store, _records_of(store, store.population.list_alive()))
    before = _alive_ids(url)
    # P = 8; a worker stopped between its kill and its publish leaves one fewer (P - W bound)
    assert _status_alive(url) == len(before) >= 6
    check = run_evo("check", url, "--json")
    _no_traceback(check)
    assert check.returncode != 0 and key in check.stdout
    repaired = run_evo("check", url, "--repair", "--json")
    _no_traceback(repaired)
    assert not json.loads(repaired.stdout)["repaired"].get("zombies") and key in repaired.stdout
    assert _alive_ids(url) == before and not store.backend.exists(key)
    assert not {parse_record_name(n) for n in store.backend.list("quarantine")} & before
    procs = _workers(url, tmp_path)
    try:
        target = _born(store) + 10
        _wait_for(lambda: _born(store) >= target, procs, 120, "publishing after check --repair")
    finally:
        logs += _stop(procs)
    assert "Traceback" not in logs, logs[-3000:]
    assert _status_alive(url) == len(_alive_ids(url)) >= 6


@pytest.mark.slow
@pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
def test_workers_keep_publishing_with_a_segment_that_records_the_living_dead(tmp_path):
    _living_fleet(str(tmp_path / "pop"), tmp_path)


@pytest.mark.slow
def test_gcs_workers_keep_publishing_with_a_segment_that_records_the_living_dead(gcs_bucket_url, tmp_path):
    _living_fleet(gcs_bucket_url, tmp_path)


def _worker_population(url: str) -> storage.PopulationStore:
    """A small population made by a real worker (12 births, so some are dead)."""
    _init(url)
    done = subprocess.run(evo_cmd("worker", url, "--max-individuals", "12"), cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return storage.open_store(url).with_run(bounds=dna.DEFAULT_BOUNDS)


def _every_command(url: str, tmp_path: Path, planted: list[str]) -> None:
    """No command prints a traceback; check names each planted entry and fails; repair
    removes them and leaves every live one listed."""
    some = next(iter(_alive_ids(url)))
    for args in (("status", url), ("audit", url), ("lineage", url, some), ("plot", url, "-o", str(tmp_path / "p.png")),
                 ("report", url, "-o", str(tmp_path / "r.html"))):
        _no_traceback(run_evo(*args))
    check = run_evo("check", url)
    _no_traceback(check)
    assert check.returncode != 0
    for key in planted:
        assert key in check.stdout + check.stderr, (key, check.stdout[-3000:])
    before = _alive_ids(url)
    _no_traceback(run_evo("check", url, "--repair"))
    assert _alive_ids(url) == before
    done = run_evo("check", url)
    assert done.returncode == 0, done.stdout[-3000:]
    audit = run_evo("audit", url, "--json")
    _no_traceback(audit)


@pytest.mark.slow
@pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
def test_commands_with_impossible_dates_in_the_store(tmp_path):
    url = str(tmp_path / "pop")
    store = _worker_population(url)
    dead = [storage.IndividualInfo(r["id"], r["fitness"], r["birth"], "") for r in store.history.read_history()]
    planted = _plant_bad_dates(store, dead)
    audit = run_evo("audit", url, "--json")
    _no_traceback(audit)
    _every_command(url, tmp_path, list(planted))


@pytest.mark.slow
@pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
def test_commands_stay_small_with_huge_metrics_segments(tmp_path):
    url = str(tmp_path / "pop")
    store = _worker_population(url)
    dead = [storage.IndividualInfo(r["id"], r["fitness"], r["birth"], "") for r in store.history.read_history()]
    # one near the bound on records without their DNA, one of few records of ~1 MiB each
    keys = [_huge_metrics_segment(store, dead, 1000, 3000), _huge_metrics_segment(store, dead[1:], 40, 250_000)]
    for args in (("status", url), ("report", url, "-o", str(tmp_path / "r.html"))):
        done, peak = peak_rss_mib(evo_cmd(*args), timeout=300)
        _no_traceback(done)
        assert done.returncode == 0 and peak < 500, (args[0], peak, done.stderr[-2000:])
    _every_command(url, tmp_path, keys)


@pytest.mark.slow
@pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
def test_report_with_a_broken_segment_of_invalid_dna(tmp_path):
    url = str(tmp_path / "pop")
    store = _worker_population(url)
    records = [json.loads(store.backend.read(f"history/{n}")) for n in store.backend.list("history")]
    base = records[0]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(base["birth"] - 3600))
    bad = [dict(_renamed(base, f"{stamp}.{i:06d}Z-{i:08x}"), dna=dict(base["dna"], learning_rate="fast"))
           for i in range(300)]
    key = _plant_segment(store, bad)
    assert parse_segment_name(key.split("/", 1)[1]) is not None
    done = run_evo("report", url, "-o", str(tmp_path / "r.html"), "--top", "50", timeout=300)
    _no_traceback(done)
    assert done.returncode == 0, done.stderr[-2000:]
    _every_command(url, tmp_path, [key])

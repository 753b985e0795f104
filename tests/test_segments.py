"""History segments (storage.segments, storage.rollup): every record read exactly once whether
it is in history/, in a segment or in both; roll-ups killed with SIGKILL at each step; racing
rollers; hostile segments (truncated, planted, zip bombs) cost that segment, never a reader;
evo check verifies and repairs them; the local read cache of gs:// stores.
"""

from __future__ import annotations

import gzip
import json
import signal
import threading

import numpy as np
import pytest

import storage
import storage.history
import storage.readcache
from helpers_store import publish_random, start_helper
from storage.segments import SEGMENTS, encode_segment, parse_segment_name, segment_name


def _dead_store(url: str, n: int, **kwargs) -> tuple[storage.PopulationStore, list[str]]:
    """A store with ``n`` dead individuals (and 2 alive); the dead ids, sorted."""
    store = storage.open_store(url, **kwargs)
    store.runinfo.init_config("{}")
    rng = np.random.default_rng(1)
    infos = [publish_random(store, rng)[0] for _ in range(n + 2)]
    for info in infos[:n]:
        assert store.population.kill(info, worker="w")
    return store, sorted(i.id for i in infos[:n])


def _history_once(url: str, dead: list[str]) -> None:
    """A fresh reader sees every dead id exactly once, with its DNA and without, and nothing broken."""
    for with_dna in (True, False):
        store = storage.open_store(url)
        records, broken = store.history.scan_history(with_dna=with_dna)
        ids = [r["id"] for r in records]
        assert sorted(ids) == dead and not broken, (len(ids), len(dead), broken[:3])
        assert all(("dna" in r) == with_dna for r in records)
    census = storage.open_store(url).history.census(history_dna=False)
    assert census.dead_ids == frozenset(dead)
    assert storage.open_store(url).history.count_history() == len(dead)


def test_roll_up_keeps_every_record_once_and_counts(tmp_path):
    url = str(tmp_path / "pop")
    store, dead = _dead_store(url, 25)
    done = store.history.roll_up(min_age=0, segment_records=10)
    assert (done.segments, done.records) == (2, 20)           # full segments only
    layout = store.history.history_layout()
    assert layout == {"segments": 2, "broken_segments": 0, "in_segments": 20, "files": 5,
                      "files_also_in_segments": 0}
    _history_once(url, dead)
    assert len(storage.open_store(url).history.births()) == 27
    # records younger than min_age, or of individuals still listed, are never rolled up
    assert store.history.roll_up(min_age=3600, segment_records=1).records == 0
    report = store.check(grace_seconds=0)
    assert report.ok and report.history == 25 and report.segments == 2, report.problems


def test_kept_weights_of_a_rolled_up_individual_stay_readable(tmp_path):
    url = str(tmp_path / "pop")
    store, dead = _dead_store(url, 4, keep_best=4)
    store.history.roll_up(min_age=0, segment_records=4)
    assert store.history.history_layout()["files"] == 0
    kept = store.history.list_kept()
    assert kept and all(store.history.read_kept(i) is not None for i in kept)


@pytest.mark.slow  # processes killed mid-step
@pytest.mark.parametrize("point", ["rollup:after_segment", "rollup:after_first_delete"])
def test_a_roll_up_killed_at_each_step_leaves_every_record_readable_once(tmp_path, point):
    url = str(tmp_path / "pop")
    _, dead = _dead_store(url, 12)
    proc = start_helper("helpers_store_crash.py", "--crash-at", point, "rollup", url, "6")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    layout = storage.open_store(url).history.history_layout()
    assert layout["segments"] == 1 and layout["files_also_in_segments"] >= 5
    _history_once(url, dead)
    # evo check calls the leftovers orphans (past the grace), and --repair deletes them
    store = storage.open_store(url)
    report = store.check(grace_seconds=0)
    assert not report.ok and report.orphans == layout["files_also_in_segments"]
    assert store.check(repair=True, grace_seconds=0).repaired["orphans"] == report.orphans
    _history_once(url, dead)
    assert storage.open_store(url).history.history_layout()["files_also_in_segments"] == 0
    assert store.check(grace_seconds=0).ok
    assert storage.open_store(url).history.roll_up(min_age=0, segment_records=6).records == 6   # the second one
    _history_once(url, dead)


def test_a_roller_that_finds_its_segment_made_deletes_the_originals(tmp_path):
    url = str(tmp_path / "pop")
    store, dead = _dead_store(url, 6)
    records, _ = store.history.scan_history()
    name, data = encode_segment(records)
    assert store.backend.create(name.key, data)          # as if a roller died after its create
    done = store.history.roll_up(min_age=0, segment_records=6)
    assert (done.segments, done.joined, done.records) == (0, 1, 6)
    _history_once(url, dead)


def test_racing_rollers_and_a_reader_during_the_roll_up(tmp_path, monkeypatch):
    url = str(tmp_path / "pop")
    _, dead = _dead_store(url, 40)
    reader = storage.open_store(url)
    # a reader that lists history/ before a roll-up and reads after it (the originals vanished)
    real = storage.history.read_immutable

    def roll_up_first(*args, **kwargs):
        monkeypatch.setattr(storage.history, "read_immutable", real)   # once: the reader's first read
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            storage.open_store(url).history.roll_up(min_age=0, segment_records=20))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # racers with the same view make one segment each set; one that saw some records
        # vanish makes an overlapping one: allowed, readers take each record once
        assert sum(r.segments for r in results) >= 2
        return real(*args, **kwargs)

    monkeypatch.setattr(storage.history, "read_immutable", roll_up_first)
    records, broken = reader.history.scan_history()
    assert sorted(r["id"] for r in records) == dead and not broken
    _history_once(url, dead)


def _plant(store: storage.PopulationStore, name: str, data: bytes) -> str:
    key = f"{SEGMENTS}/{name}"
    store.backend.write(key, data)
    return key


HOSTILE = {
    "garbage": lambda body, name: (name, b"\x00not gzip at all"),
    "truncated": lambda body, name: (name, gzip.compress(body)[:-20]),
    "trailing data": lambda body, name: (name, gzip.compress(body) + b"junk"),
    "wrong ids": lambda body, name: (name.replace(name.split("~")[3][:16], "0" * 16), gzip.compress(body)),
    "bad record": lambda body, name: (name, gzip.compress(body.replace(b'"fitness":', b'"fitness":"x","f":', 1))),
    "zip bomb": lambda body, name: (name, gzip.compress(b" " * (8 * 2**20), compresslevel=1)),  # one long line
    "inflate bound": lambda body, name: (name, gzip.compress(body)),   # over the bound the test sets
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_segments_cost_that_segment_never_the_reader(tmp_path, kind, monkeypatch):
    if kind == "inflate bound":
        monkeypatch.setattr(storage.segments, "MAX_SEGMENT_INFLATED", 1000)
    url = str(tmp_path / "pop")
    store, dead = _dead_store(url, 6)
    records, _ = store.history.scan_history()
    name, data = encode_segment(records[:3])
    body = gzip.decompress(data)
    bad_name, bad = HOSTILE[kind](body, name.key.split("/", 1)[1])
    key = _plant(store, bad_name, bad)
    # the originals are all still in history/: nothing is lost, one broken entry is shown
    fresh = storage.open_store(url)
    got, broken = fresh.history.scan_history()
    assert sorted(r["id"] for r in got) == dead
    assert [b.key for b in broken] == [key]
    # once the originals are gone, the segment's records are broken entries, by id where it parsed
    for r in records[:3]:
        store.backend.delete(f"history/{r['id']}.json")
    census = storage.open_store(url).history.census()
    assert {r["id"] for r in census.history} == set(dead) - {r["id"] for r in records[:3]}
    assert key in {b.key for b in census.broken_history}
    report = storage.open_store(url).check(grace_seconds=0)
    assert not report.ok and (report.corrupt + report.unreadable) == 1, report.problems
    repaired = storage.open_store(url).check(repair=True, grace_seconds=0)
    assert repaired.repaired.get("corrupt", 0) + repaired.repaired.get("unreadable", 0) == 1
    assert storage.open_store(url).check(grace_seconds=0).ok
    assert not storage.open_store(url).backend.list(SEGMENTS)


def test_segment_names_state_their_content():
    name = segment_name(["20260101T000000.000002Z-00000000", "20260101T000000.000001Z-00000000"])
    assert name.first < name.last and name.count == 2
    assert parse_segment_name(name.key.split("/", 1)[1]) == name
    for bad in ("x.jsonl.gz", name.key.split("/", 1)[1].replace("~2~", "~0~"),
                f"{name.last}~{name.first}~2~{name.digest}.jsonl.gz"):
        assert parse_segment_name(bad) is None


@pytest.mark.slow  # the GCS emulator
def test_the_read_cache_of_a_gcs_store_saves_the_gets(gcs_bucket_url, tmp_path, monkeypatch):
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path / "cache"))
    store, dead = _dead_store(gcs_bucket_url, 12)
    store.history.roll_up(min_age=0, segment_records=5)
    _history_once(gcs_bucket_url, dead)          # cold: fills the cache
    warm = storage.open_store(gcs_bucket_url)
    reads: list[str] = []
    real = warm.backend.read_many
    warm.backend.read_many = lambda keys, *a, **k: (reads.extend(keys), real(keys, *a, **k))[1]
    census = warm.history.census(history_dna=False)
    assert census.dead_ids == frozenset(dead) and not reads     # nothing read again
    # a cached object that was tampered with locally is read afresh, never trusted
    cached = next((tmp_path / "cache").rglob("*.jsonl.gz"))
    cached.write_bytes(b"tampered")
    assert storage.open_store(gcs_bucket_url).history.census().dead_ids == frozenset(dead)
    # a cache folder that cannot be made means no cache, not an error
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path / "file" / "cache"))
    assert storage.open_store(gcs_bucket_url).history.census().dead_ids == frozenset(dead)
    monkeypatch.setenv("EVO_CACHE_DIR", "off")
    assert storage.readcache.cache_for(gcs_bucket_url) is None


@pytest.mark.slow  # real worker processes
def test_workers_roll_up_in_passing(tmp_path):
    """Real worker processes with the hidden --rollup setting make segments while they run."""
    import subprocess
    import sys

    from helpers_store import REPO, subprocess_env

    url = str(tmp_path / "pop")
    env = subprocess_env()
    init = subprocess.run([sys.executable, "-m", "launch", "init", url, "--dataset", "synthetic", "-P", "4",
                           "--synthetic-train-seconds", "0"], env=env, cwd=REPO, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    worker = subprocess.run([sys.executable, "-m", "launch", "worker", url, "--quiet", "--max-individuals", "40",
                             "--rollup", "0,0.001,5"], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert worker.returncode == 0, worker.stderr[-2000:]
    layout = storage.open_store(url).history.history_layout()
    assert layout["segments"] >= 1 and layout["broken_segments"] == 0, layout
    audit = subprocess.run([sys.executable, "-m", "launch", "audit", url, "--json"], env=env, cwd=REPO,
                           capture_output=True, text=True)
    result = json.loads(audit.stdout)
    assert audit.returncode == 0 and result["born"] == 40, result
    assert result["dead"] == 40 - result["alive"] == layout["in_segments"] + layout["files"], result


def test_a_second_census_on_one_store_reads_only_what_is_new(tmp_path):
    """What ``evo status --watch`` relies on: records never change, so the store object
    remembers them; a refresh reads the listings and the new objects only."""
    url = str(tmp_path / "pop")
    store, dead = _dead_store(url, 8)
    store.history.roll_up(min_age=0, segment_records=4)
    watcher = storage.open_store(url)
    reads: list[str] = []
    real = watcher.backend.read_many
    watcher.backend.read_many = lambda keys, *a, **k: (reads.extend(keys), real(keys, *a, **k))[1]
    first = watcher.history.census(history_dna=False, alive_dna=False)
    assert len(first.history) == 8 and len(reads) == 2 + 2     # 2 segments, 2 commits
    reads.clear()
    rng = np.random.default_rng(7)
    child = publish_random(store, rng)[0]
    assert store.population.kill(first.listed[0], worker="w")
    second = watcher.history.census(history_dna=False, alive_dna=False)
    assert {r["id"] for r in second.history} == set(dead) | {first.listed[0].id}
    assert sorted(reads) == sorted([f"history/{first.listed[0].id}.json", child.key])


def test_readers_that_do_not_use_the_dna_do_not_check_it_and_readers_that_do_always_do(tmp_path, monkeypatch):
    """Status, plot, lineage and audit read the dead without their DNA: a segment is read only
    up to its records' other fields (still checked) and no DNA is validated; a reader of the
    DNA (``evo check``, ``read_history``) validates every one, also on a second read."""
    import storage.immutable as readers   # where history records are checked

    url = str(tmp_path / "pop")
    store, dead = _dead_store(url, 6)
    store.history.roll_up(min_age=0, segment_records=4)    # one segment of 4, two records left as files
    calls: list[int] = []
    real = readers.check_dna
    monkeypatch.setattr(readers, "check_dna", lambda *a: (calls.append(1), real(*a))[1])
    census = storage.open_store(url).history.census(history_dna=False, alive_dna=False)
    assert census.dead_ids == frozenset(dead) and all("dna" not in r for r in census.history)
    assert calls == []
    for _ in range(2):
        census = storage.open_store(url).history.census(history_dna=True, alive_dna=False)
        assert census.dead_ids == frozenset(dead) and all("dna" in r for r in census.history)
        assert len(calls) == 6
        calls.clear()


def test_a_segment_with_a_bad_dna_is_read_by_status_and_caught_by_check(tmp_path):
    """The split of labour the no-DNA readers rely on: a segment whose records check out but
    one DNA does not is whole to ``evo status`` (which never reads the DNA) and corrupt to
    every reader of the DNA and to ``evo check``, which moves it aside."""
    url = str(tmp_path / "pop")
    store, dead = _dead_store(url, 4)
    records, _ = store.history.scan_history()
    name, data = encode_segment(records)
    lines = gzip.decompress(data).splitlines()
    dna_line = json.loads(lines[len(records)])
    lines[len(records)] = json.dumps({"dna": {"not": "a genome"}, "id": dna_line["id"]},
                                     sort_keys=True, separators=(",", ":")).encode()
    key = _plant(store, name.key.split("/", 1)[1], gzip.compress(b"\n".join(lines) + b"\n"))
    for r in records:
        store.backend.delete(f"history/{r['id']}.json")
    assert storage.open_store(url).history.census(history_dna=False).dead_ids == frozenset(dead)
    with_dna = storage.open_store(url).history.census()
    assert not with_dna.history and key in {b.key for b in with_dna.broken_history}
    report = storage.open_store(url).check(grace_seconds=0)
    assert report.corrupt == 1, report.problems


def test_dna_of_reads_a_few_dnas_from_commits_files_and_segments(tmp_path):
    """What ``evo report`` uses after a census without DNA: the checked DNA of the few it
    draws, wherever each record is; ids without a readable record are left out."""
    url = str(tmp_path / "pop")
    store, dead = _dead_store(url, 6)
    store.history.roll_up(min_age=0, segment_records=4)
    layout = store.history.history_layout()
    assert layout["in_segments"] == 4 and layout["files"] == 2, layout
    alive = [i.id for i in store.population.list_alive()]
    expected = {r["id"]: r["dna"] for r in store.history.census().history}
    expected.update({i.id: c["dna"] for i, c in store.population.scan_alive()})
    got = storage.open_store(url).history.dna_of(dead + alive + ["20990101T000000.000000Z-00000000"])
    assert got == expected and len(got) == 8

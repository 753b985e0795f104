"""One contract for the population store, run against every backend: memory, a local
directory and GCS on a real emulator (fake-gcs-server). Plus the backend-specific facts the
contract rests on (the emulator's preconditions and known gaps, NFS link resend, gcsfs retry)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

import dna
import storage
from helpers_store import (
    CountingBackend, DelegatingBackend, dna_dict, publish_random, temp_files, weights_blob,
)
from storage.records import birth_of

# --------------------------------------------------------------------------------------
# Backend primitives


@pytest.fixture
def backend(store_url):
    return storage.open_backend(store_url)


def test_read_of_missing_key_raises_file_not_found(backend):
    with pytest.raises(FileNotFoundError):
        backend.read("alive/nothing.json")
    assert backend.stat("alive/nothing.json") is None
    assert not backend.exists("alive/nothing.json")


def test_write_overwrites_whole(backend):
    backend.write("workers/a.json", b"first version, longer")
    backend.write("workers/a.json", b"second")
    assert backend.read("workers/a.json") == b"second"
    assert backend.stat("workers/a.json").size == len(b"second")


def test_create_is_create_if_absent_and_keeps_the_first_content(backend):
    assert backend.create("history/x.json", b"winner") is True
    assert backend.create("history/x.json", b"loser") is False
    assert backend.read("history/x.json") == b"winner"


def test_delete_reports_whether_the_object_was_there(backend):
    backend.write("payload/p", b"x")
    assert backend.delete("payload/p") is True
    assert backend.delete("payload/p") is False
    with pytest.raises(FileNotFoundError):
        backend.read("payload/p")
    assert backend.create("payload/p", b"again") is True  # a deleted name can be created anew


def test_list_shows_direct_children_only_and_missing_dirs_are_empty(backend):
    assert backend.list("alive") == []
    backend.write("alive/a.json", b"1")
    backend.write("alive/b.json", b"22")
    backend.write("alive/sub/c.json", b"333")
    backend.write("alivex/d.json", b"4")
    assert sorted(backend.list("alive")) == ["a.json", "b.json"]
    detail = {e.name: e for e in backend.list_detail("alive")}
    assert set(detail) == {"a.json", "b.json"}
    assert detail["b.json"].size == 2
    assert abs(detail["a.json"].mtime - time.time()) < 60
    assert "config.json" not in backend.list("")


def test_read_many_returns_none_for_missing(backend):
    backend.write("history/a.json", b"A")
    backend.write("history/b.json", b"B")
    got = backend.read_many(["history/a.json", "history/b.json", "history/c.json"])
    assert got == {"history/a.json": b"A", "history/b.json": b"B", "history/c.json": None}


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/./b", "../x", "a\\b",
                                 "alive/.tmp-x", "alive/x y", "a/b/"])
def test_unsafe_keys_are_refused(backend, key):
    with pytest.raises(ValueError):
        backend.write(key, b"x")


def test_threads_racing_to_create_one_key_have_exactly_one_winner(backend):
    n = 16
    barrier = threading.Barrier(n)

    def attempt(i):
        barrier.wait()
        return backend.create("history/race.json", f"thread {i}".encode())

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(attempt, range(n)))
    assert results.count(True) == 1
    assert backend.read("history/race.json") == f"thread {results.index(True)}".encode()


def test_a_second_instance_sees_a_publish_at_once(store_url):
    rng = np.random.default_rng(0)
    writer, reader = storage.open_store(store_url), storage.open_store(store_url)
    assert reader.population.list_alive() == []
    info, weights, _ = publish_random(writer, rng)
    assert reader.population.list_alive() == [info]
    assert reader.population.read_individual(info).weights == weights
    assert reader.population.kill(info, worker="reader") is True
    assert writer.population.list_alive() == []


# --------------------------------------------------------------------------------------
# The population store


@pytest.fixture
def store(store_url):
    return storage.open_store(store_url)


def test_config_is_created_once(store):
    with pytest.raises(storage.StoreError, match="no config.json"):
        store.runinfo.read_config()
    assert store.runinfo.init_config('{"population_size": 10}') is True
    assert store.runinfo.init_config('{"population_size": 99}') is False
    assert json.loads(store.runinfo.read_config()) == {"population_size": 10}


def test_publish_then_read_round_trips_everything(store):
    rng = np.random.default_rng(1)
    child = dna.initial(0.05).replace(mutation="alter_learning_rate")
    weights = weights_blob(rng)
    before = time.time()
    info = store.population.publish(child.to_dict(), weights, parent=None, mutation="alter_learning_rate",
                         fitness=0.8125, worker="w-1", metrics={"train_seconds": 1.5, "steps": 100})
    assert store.population.list_alive() == [info]
    assert info.fitness == 0.8125 and info.key.startswith("alive/" + info.id)
    assert before - 1e-3 <= info.birth <= time.time() and info.birth == birth_of(info.id)
    ind = store.population.read_individual(info, bounds=dna.DEFAULT_BOUNDS)
    assert ind is not None
    assert ind.id == info.id and ind.parent is None and ind.mutation == "alter_learning_rate"
    assert dna.from_dict(ind.dna) == child
    assert ind.dna_hash == child.content_hash() == storage.dna_hash(child.to_dict())
    assert ind.fitness == 0.8125 and ind.birth == info.birth and ind.worker == "w-1"
    assert ind.metrics == {"train_seconds": 1.5, "steps": 100}
    assert ind.weights == weights
    assert set(load_safetensors(ind.weights)) == {"edges.e2.weight", "classifier.bias"}
    assert store.population.read_individual(info.id) == ind  # by id too
    assert temp_files(store) == []


def test_exact_fitness_is_kept_while_the_listing_rounds_it(store):
    rng = np.random.default_rng(2)
    info = store.population.publish(dna_dict(rng), weights_blob(rng), parent=None, mutation="initial",
                         fitness=1 / 3, worker="w", metrics={})
    assert info.fitness == 0.333333
    assert store.population.read_individual(info).fitness == 1 / 3


def test_ids_sort_by_birth_and_listing_is_oldest_first(store):
    rng = np.random.default_rng(3)
    infos = [publish_random(store, rng)[0] for _ in range(5)]
    listed = store.population.list_alive()
    assert listed == sorted(infos, key=lambda i: i.birth)
    assert [i.id for i in listed] == sorted(i.id for i in infos)
    assert all(storage.is_id(i.id) for i in listed)


def test_listing_the_population_reads_nothing(store_url):
    rng = np.random.default_rng(4)
    counting = CountingBackend(storage.open_backend(store_url))
    store = storage.PopulationStore(counting)
    for _ in range(6):
        publish_random(store, rng)
    counting.calls.clear()
    listed = store.population.list_alive()
    assert len(listed) == 6
    assert dict(counting.calls) == {"list": 1}


def test_parent_and_child_and_lineage_fields(store):
    rng = np.random.default_rng(5)
    parent, _, _ = publish_random(store, rng, worker="a")
    child = store.population.publish(dna_dict(rng, "identity"), weights_blob(rng), parent=parent.id,
                          mutation="identity", fitness=0.5, worker="b", metrics={"inherited": 1.0})
    ind = store.population.read_individual(child)
    assert ind.parent == parent.id and ind.mutation == "identity" and ind.worker == "b"


def test_kill_succeeds_once_and_leaves_a_history_record(store):
    rng = np.random.default_rng(6)
    victim, _, d = publish_random(store, rng, worker="publisher")
    other, _, _ = publish_random(store, rng)
    assert store.population.kill(victim, worker="killer-1") is True
    assert store.population.kill(victim, worker="killer-2") is False
    assert store.population.kill(victim.id, worker="killer-3") is False
    assert store.population.list_alive() == [other]
    assert store.population.read_individual(victim) is None
    assert store.history.list_quarantine() == []  # gone is not corrupt
    (rec,) = store.history.read_history()
    assert rec["id"] == victim.id and rec["killer"] == "killer-1" and rec["reason"] == "selection"
    assert rec["worker"] == "publisher" and rec["dna"] == d and rec["parent"] is None
    assert rec["birth"] == victim.birth <= rec["death"] <= time.time()
    assert store.history.count_history() == 1
    # the weights of the dead are deleted
    other_payload = json.loads(store.backend.read(other.key))["payload"]
    assert store.backend.list("payload") == [other_payload.split("/")[1]]


def test_threads_racing_to_kill_one_individual_have_one_winner(store):
    rng = np.random.default_rng(12)
    victim, _, _ = publish_random(store, rng)
    barrier = threading.Barrier(12)

    def attempt(i):
        barrier.wait()
        return store.population.kill(victim, worker=f"t{i}")

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(attempt, range(12)))
    assert results.count(True) == 1
    assert store.history.read_history()[0]["killer"] == f"t{results.index(True)}"
    assert store.population.list_alive() == [] and store.backend.list("payload") == []


def test_kill_by_id_and_of_unknown_ids(store):
    rng = np.random.default_rng(7)
    victim, _, _ = publish_random(store, rng)
    assert store.population.kill("20200101T000000.000000Z-00000000", worker="w") is False
    assert store.population.kill(victim.id, worker="w", reason="aging") is True
    assert store.history.read_history()[0]["reason"] == "aging"
    with pytest.raises(ValueError):
        store.population.kill("../etc/passwd", worker="w")


def test_keep_best_keeps_the_weights_of_the_best_dead(store_url):
    rng = np.random.default_rng(8)
    store = storage.open_store(store_url, keep_best=2)
    store.runinfo.init_config("{}")
    published = {}
    for fitness in (0.3, 0.9, 0.1, 0.7, 0.8):
        info, weights, _ = publish_random(store, rng, fitness=fitness)
        published[info.id] = (info, weights)
    for info, _ in published.values():
        assert store.population.kill(info, worker="w") is True
    kept = store.history.list_kept()
    assert [k.fitness for k in kept] == [0.9, 0.8]
    for k in kept:
        ind = store.history.read_kept(k)
        assert ind is not None and ind.weights == published[k.id][1] and ind.fitness == k.fitness
    # exactly the kept weights remain
    assert len(store.backend.list("payload")) == 2
    assert store.check(grace_seconds=0).ok
    assert len(store.history.read_history()) == 5


def test_heartbeats_overwrite_and_list(store):
    store.runinfo.heartbeat("host-1:123", {"step": 1})
    store.runinfo.heartbeat("host-2:456", {"step": 5})
    store.runinfo.heartbeat("host-1:123", {"step": 2})
    beats = {b["worker"]: b for b in store.runinfo.list_workers()}
    assert set(beats) == {"host-1:123", "host-2:456"}
    assert beats["host-1:123"]["info"] == {"step": 2}
    assert abs(beats["host-2:456"]["time"] - time.time()) < 60
    with pytest.raises(ValueError):
        store.runinfo.heartbeat("../evil", {})


def test_markers_are_created_once(store):
    assert not store.runinfo.has_mark("selection_started")
    assert store.runinfo.mark("selection_started") is True
    assert store.runinfo.mark("selection_started") is False
    assert store.runinfo.has_mark("selection_started")
    with pytest.raises(ValueError):
        store.runinfo.mark("a/b")


def test_quarantine_moves_an_individual_aside_with_its_reason(store):
    rng = np.random.default_rng(9)
    store.runinfo.init_config("{}")
    info, _, _ = publish_random(store, rng)
    assert store.population.quarantine(info, "looked at it funny") is True
    assert store.population.quarantine(info, "again") is False
    assert store.population.list_alive() == []
    (rec,) = store.history.list_quarantine()
    assert rec["id"] == info.id and rec["reason"] == "looked at it funny"
    assert rec["commit"]["id"] == info.id
    report = store.check(grace_seconds=0)
    assert report.ok and report.quarantined == 1 and report.orphans == 0  # weights kept, not orphans


def test_census_reads_every_individual_once_and_names_what_is_broken(store):
    rng = np.random.default_rng(12)
    assert not store.runinfo.has_config() and not store.population.has_individuals()
    store.runinfo.init_config("{}")
    assert store.runinfo.has_config() and not store.population.has_individuals()
    dead, quarantined, broken, whole = (publish_random(store, rng)[0] for _ in range(4))
    assert store.population.has_individuals()
    store.population.kill(dead, worker="w")
    store.population.quarantine(quarantined, "test")
    store.backend.write(broken.key, b"{not json")
    lost = "20250101T000000.000000Z-0badf00d"
    store.backend.write(f"history/{lost}.json", b"[]")  # a history entry that is no record

    census = store.history.census()
    assert census.listed == (broken, whole)
    assert census.commits[whole.id]["id"] == whole.id
    assert isinstance(census.commits[broken.id], storage.Broken)
    assert census.commits[broken.id].id == broken.id and "JSON" in census.commits[broken.id].problem
    assert [h["id"] for h in census.history] == [dead.id] and census.history[0]["killer"] == "w"
    assert [q["id"] for q in census.quarantine] == [quarantined.id]
    assert [b.id for b in census.broken_history] == [lost] and census.broken_quarantine == ()
    assert census.dead_ids == {dead.id, lost} and census.quarantined_ids == {quarantined.id}
    assert store.population.list_alive() == [broken, whole]  # a census reads; it quarantines nothing
    assert store.history.census(read_alive=False).commits == {}
    assert store.history.births() == sorted(birth_of(i) for i in (dead.id, lost, broken.id, whole.id))


class _KillsAfterTheListing(DelegatingBackend):
    """A real backend on which another worker kills ``victim`` right after the first listing
    of ``alive/`` (the moment a reader is most exposed to losing it)."""

    def __init__(self, inner, victim):
        super().__init__(inner)
        self.victim = victim

    def list(self, dirname: str) -> list[str]:
        names = self.inner.list(dirname)
        if dirname == "alive" and self.victim is not None:
            victim, self.victim = self.victim, None
            assert storage.PopulationStore(self.inner).population.kill(victim, worker="meanwhile")
        return names


def test_an_individual_killed_during_a_census_is_dead_never_missing(store_url):
    rng = np.random.default_rng(13)
    store = storage.open_store(store_url)
    victim, other = (publish_random(store, rng)[0] for _ in range(2))
    census = storage.PopulationStore(_KillsAfterTheListing(store.backend, victim)).history.census()
    assert census.listed == (victim, other)
    assert census.commits[victim.id] is None  # gone before its commit was read...
    assert victim.id in census.dead_ids       # ...and found in the history listed after


@pytest.mark.parametrize("bad, match", [
    (dict(fitness=math.nan), "fitness"),
    (dict(fitness=math.inf), "fitness"),
    (dict(fitness=1e12), "fitness"),
    (dict(fitness=True), "fitness"),
    (dict(weights=b"not safetensors"), "safetensors"),
    (dict(weights=b""), "safetensors"),
    (dict(parent="not-an-id"), "id"),
    (dict(metrics={"loss": math.nan}), "JSON"),
    (dict(dna=[1, 2]), "dna"),
])
def test_publish_rejects_bad_arguments_and_writes_nothing(store, bad, match):
    rng = np.random.default_rng(10)
    args = dict(dna=dna_dict(rng), weights=weights_blob(rng), parent=None, mutation="initial",
                fitness=0.5, worker="w", metrics={})
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        store.population.publish(args.pop("dna"), args.pop("weights"), **args)
    assert store.backend.list("payload") == [] and store.population.list_alive() == []


def test_check_of_a_healthy_store(store):
    rng = np.random.default_rng(11)
    store.runinfo.init_config("{}")
    infos = [publish_random(store, rng)[0] for _ in range(4)]
    store.population.kill(infos[0], worker="w")
    store.runinfo.heartbeat("w", {})
    report = store.check(grace_seconds=0)
    assert report.ok, report.problems
    assert (report.alive, report.history, report.torn, report.orphans, report.zombies,
            report.quarantined, report.workers) == (3, 1, 0, 0, 0, 0, 1)
    d = report.to_dict()
    assert d["ok"] is True and isinstance(d["problems"], list)


def test_check_without_config_is_not_ok(store):
    report = store.check()
    assert not report.ok and not report.config


# --------------------------------------------------------------------------------------
# URLs


def test_url_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.open_backend("relative/pop").root == str(tmp_path / "relative" / "pop")
    assert storage.open_backend(str(tmp_path / "a")).root == str(tmp_path / "a")
    assert storage.open_backend(f"file://{tmp_path}/b").root == str(tmp_path / "b")
    assert storage.open_backend("file://localhost/x/y").root == "/x/y"
    assert storage.open_backend("memory://abc").url == "memory://abc"
    (tmp_path / "afile").write_text("x")
    for bad in ["s3://bucket/x", "", "file://otherhost/x", "memory://", "gs://", "gs://B/x",
                "gs://bucket/../x", str(tmp_path / "afile")]:
        with pytest.raises(storage.StoreError):
            storage.open_backend(bad)


@pytest.mark.slow  # the GCS emulator
def test_gs_url_opens_against_the_emulator(gcs_bucket_url):
    backend = storage.open_backend(gcs_bucket_url + "/")
    assert backend.url == gcs_bucket_url
    backend.write("state/x", b"1")
    assert storage.open_backend(gcs_bucket_url).read("state/x") == b"1"


def test_importing_storage_imports_neither_torch_nor_gcsfs():
    code = ("import sys, dna, storage; s = storage.open_store('memory://x'); "
            "print('torch' in sys.modules, 'gcsfs' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------------------
# Facts the GCS backend rests on, checked against the emulator itself


def _raw_gcsfs(emulator_url):
    from gcsfs.core import GCSFileSystem
    return GCSFileSystem(token="anon", endpoint_url=emulator_url, use_listings_cache=False,
                         skip_instance_cache=True)


@pytest.mark.slow  # the GCS emulator
def test_emulator_refuses_a_second_generation_match_zero_create(gcs_bucket_url, gcs_emulator):
    fs = _raw_gcsfs(gcs_emulator)
    path = gcs_bucket_url[len("gs://"):] + "/claim"
    fs.pipe_file(path, b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(path, b"second", mode="create")
    assert fs.cat_file(path) == b"first"


@pytest.mark.slow  # the GCS emulator
def test_emulator_has_one_winner_among_concurrent_creates(gcs_bucket_url, gcs_emulator):
    fs = _raw_gcsfs(gcs_emulator)
    path = gcs_bucket_url[len("gs://"):] + "/race"
    barrier = threading.Barrier(16)

    def attempt(i):
        barrier.wait()
        try:
            fs.pipe_file(path, f"{i}".encode(), mode="create")
            return True
        except FileExistsError:
            return False

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(attempt, range(16)))
    assert results.count(True) == 1
    assert fs.cat_file(path) == str(results.index(True)).encode()


@pytest.mark.slow  # the GCS emulator
@pytest.mark.xfail(strict=True, reason="fake-gcs-server v1.54.0 ignores ifGenerationMatch=0 on "
                   "resumable uploads (real GCS enforces it); the store only creates small objects "
                   "with single-request uploads")
def test_emulator_enforces_generation_match_on_resumable_uploads(gcs_bucket_url, gcs_emulator):
    fs = _raw_gcsfs(gcs_emulator)
    path = gcs_bucket_url[len("gs://"):] + "/big"
    fs.pipe_file(path, b"first", mode="create")
    with pytest.raises(FileExistsError):
        with fs.open(path, "xb") as f:  # open(..., "xb") goes through a resumable upload
            f.write(b"second")


@pytest.mark.slow  # the GCS emulator
@pytest.mark.xfail(strict=True, reason="fake-gcs-server v1.54.0 does not enforce ifGenerationMatch "
                   "on DELETE (real GCS does); the store never depends on a conditional delete")
def test_emulator_enforces_conditional_delete(gcs_bucket_url, gcs_emulator):
    fs = _raw_gcsfs(gcs_emulator)
    bucket, _, prefix = gcs_bucket_url[len("gs://"):].partition("/")
    fs.pipe_file(f"{bucket}/{prefix}/obj", b"x")
    generation = int(fs.info(f"{bucket}/{prefix}/obj")["generation"])
    with pytest.raises(FileExistsError):  # 412 Precondition Failed
        fs.call("DELETE", "b/{}/o/{}", bucket, f"{prefix}/obj", ifGenerationMatch=str(generation + 1))


@pytest.mark.slow  # the GCS emulator
def test_gcs_create_whose_reply_was_lost_still_wins(gcs_bucket_url, gcs_emulator):
    """gcsfs retries a create whose first try landed; the retry gets 412. The nonce wins it."""
    from helpers_store_proxy import LosingProxy
    from storage.gcs import GCSBackend

    with LosingProxy(gcs_emulator) as proxy:
        fs = _raw_gcsfs(proxy.url)
        backend = GCSBackend(gcs_bucket_url, fs=fs)
        proxy.arm()
        assert backend.create("history/lost.json", b"mine") is True
        assert proxy.lost == 1
        assert backend.read("history/lost.json") == b"mine"
        # A real loser still loses, through the same path.
        assert backend.create("history/lost.json", b"other") is False
        # Control: without the nonce read-back, the lost reply turns a win into a loss.
        proxy.arm()
        path = gcs_bucket_url[len("gs://"):] + "/history/naive.json"
        with pytest.raises(FileExistsError):
            fs.pipe_file(path, b"mine", mode="create")
        assert proxy.lost == 2 and fs.cat_file(path) == b"mine"


# --------------------------------------------------------------------------------------
# Facts the local backend rests on


def test_local_create_counts_an_nfs_resent_link_as_a_win(tmp_path, monkeypatch):
    """On NFS a LINK whose reply was lost is resent and answered EEXIST although it worked."""
    backend = storage.LocalBackend(tmp_path)
    real_link = os.link

    def link_then_lose_reply(src, dst, **kwargs):
        real_link(src, dst, **kwargs)
        raise FileExistsError(17, "File exists", dst)

    monkeypatch.setattr(os, "link", link_then_lose_reply)
    assert backend.create("history/x.json", b"mine") is True
    assert backend.create("history/x.json", b"other") is False  # a genuine loser: nlink stays 1
    assert backend.read("history/x.json") == b"mine"
    assert temp_files(storage.PopulationStore(backend)) == []


def test_local_rename_is_not_create_if_absent(tmp_path):
    """Why create uses link: os.replace silently overwrites (every racer would win)."""
    a, b, final = tmp_path / "a", tmp_path / "b", tmp_path / "final"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    os.replace(a, final)
    os.replace(b, final)  # no error: the first "winner" was overwritten
    assert final.read_bytes() == b"B"


# --------------------------------------------------------------------------------------
# The safetensors check (no torch)


def _arrays(draw_shapes):
    rng = np.random.default_rng(0)
    dtypes = [np.float32, np.float16, np.int64, np.uint8, np.float64, np.bool_]
    return {f"t{i}": rng.standard_normal(shape).astype(dtypes[i % len(dtypes)])
            for i, shape in enumerate(draw_shapes)}


shapes = st.lists(st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple), min_size=0, max_size=4)


@settings(deadline=None, max_examples=60)
@given(shapes=shapes, cut=st.floats(0, 1, exclude_max=True))
def test_safetensors_check_accepts_whole_files_and_refuses_every_truncation(shapes, cut):
    blob = save_safetensors(_arrays(shapes))
    assert storage.safetensors_header_ok(blob)
    truncated = blob[:int(cut * len(blob))]
    assert not storage.safetensors_header_ok(truncated)
    with pytest.raises(Exception):
        load_safetensors(truncated)


@settings(deadline=None, max_examples=150)
@given(shapes=shapes, pos=st.integers(0, 10**6), value=st.integers(0, 255))
def test_safetensors_check_never_accepts_what_the_library_refuses(shapes, pos, value):
    blob = bytearray(save_safetensors(_arrays(shapes)))
    n = int.from_bytes(blob[:8], "little")
    pos %= 8 + n  # damage the length or the header
    blob[pos] = value
    if storage.safetensors_header_ok(bytes(blob)):
        load_safetensors(bytes(blob))  # must not raise


@pytest.mark.parametrize("blob, reason", [
    (b"", "too short"),
    ((2**40).to_bytes(8, "little") + b"{}", "too large"),
    ((100).to_bytes(8, "little") + b"{}", "truncated"),
    ((2).to_bytes(8, "little") + b"[]", "not a JSON object"),
    ((2).to_bytes(8, "little") + b"{]", "not valid JSON"),
    ((2).to_bytes(8, "little") + b"{}" + b"x", "trailing"),
])
def test_safetensors_problem_names_the_problem(blob, reason):
    assert reason in storage.safetensors_problem(blob)


# --------------------------------------------------------------------------------------
# The live listing's memo (storage.core.LiveNames): the same answer as parsing afresh

_ALIVE_NAMES = st.builds(
    lambda day, sec, us, tag, fit: f"2026112{day}T{sec:06d}.{us:06d}Z-{tag:08x}~{fit:.6f}.json",
    st.integers(0, 9), st.integers(0, 235959), st.integers(0, 999999), st.integers(0, 3),
    st.sampled_from([0.1, 0.5, -2.25]))
_OTHER_NAMES = st.sampled_from([".tmp-x.json.1a", "20261124T000000.000000Z-00000000~0.5.json",
                                "20261324T000000.000000Z-00000000~0.500000.json", "notes.txt"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.one_of(_ALIVE_NAMES, _OTHER_NAMES), max_size=90, unique=True), min_size=1, max_size=6))
def test_live_listing_memo_equals_a_fresh_parse(listings):
    """Merged or rebuilt, each listing's answer is what parsing and sorting it afresh gives
    (same id with two fitnesses, foreign and impossible names included), and nothing of a name
    that left the listing is kept."""
    from storage.core import LiveNames
    from storage.records import parse_alive_name

    live = LiveNames()
    for names in listings:
        fresh = sorted((i for i in map(parse_alive_name, names) if i is not None), key=lambda i: i.key)
        assert live.update(list(names)) == fresh
        assert set(live._info) == set(names)

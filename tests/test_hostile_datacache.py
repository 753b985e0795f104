"""The decoded dataset's room (``data/``) under attack: damaged manifests, records dated in
the future, generations numbered far beyond the chain, non-files at claim names, and sparse
parts of 1 GiB. Real worker processes (without root's permission bypass) keep publishing,
no command prints a traceback, ``evo check`` names every planted entry and ``--repair``
moves it aside without touching the run's own generation, and memory stays bounded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest

import storage
from evo.config import DataSettings, RunConfig
from evo.data.cache import cache_key, cache_status
from evo.data.cacheformat import content_id
from evo.data.userdata import prepare_data
from helpers_hostile import CAN_DROP_BYPASS, NO_BYPASS_REASON, evo_cmd, peak_rss_mib, run_evo
from helpers_images import make_image_folder
from storage.backend import UnreadableEntry

SIDE = 22          # what the image folder below decodes to: 3x22x22
PER_IMAGE = 3 * SIDE * SIDE + 8


# ----- helpers ------------------------------------------------------------------------

def _run(tmp_path: Path, *, decode: bool = True) -> tuple[str, RunConfig, str]:
    """A run on a tiny image folder: (url, config, cache key); decoded by evo init unless not."""
    root = make_image_folder(tmp_path / "imgs", per_class=4, corrupt=0)
    url = str(tmp_path / "pop")
    done = run_evo("init", url, "--dataset", f"imagefolder={root}", "-P", "2", "--steps", "2",
                   "--batch-size", "4", *(() if decode else ("--defer-decode",)))
    assert done.returncode == 0, done.stderr
    config = RunConfig.from_json(storage.open_store(url).runinfo.read_config())
    return url, config, cache_key(config.dataset, config.data)


def _in_process_run(tmp_path: Path) -> tuple[storage.PopulationStore, RunConfig, str]:
    root = make_image_folder(tmp_path / "imgs", per_class=4, corrupt=0)
    url = str(tmp_path / "pop")
    config = RunConfig(dataset=f"imagefolder={root}", data=DataSettings(), population_size=2)
    store = storage.open_store(url)
    assert store.runinfo.init_config(config.to_json())
    return store, config, cache_key(config.dataset, config.data)


def _claim(root: Path, key: str, g: int, **fields) -> Path:
    path = root / "data" / f"{key}.g{g}.claim.json"
    path.write_text(json.dumps({"worker": "attacker", "host": "h", "pid": 1, "time": time.time(), **fields}))
    return path


def _plant_damaged_generation(root: Path, key: str, legit: dict, g: int, *, sparse_train: bool = False) -> Path:
    """A valid claim and a well-formed manifest of generation ``g`` whose parts are copies of
    ``legit``'s with one flipped byte (or, with ``sparse_train``, a 1 GiB sparse train part
    that the manifest's shapes allow); returns the manifest's path."""
    _claim(root, key, g)
    parts = {}
    for split, part in legit["parts"].items():
        name = f"data/{key}.g{g}.{split}.{'ab' * 8}.safetensors"
        if sparse_train and split == "train":
            images = 2**30 // PER_IMAGE
            with open(root / name, "wb") as f:
                f.truncate(2**30)
            parts[split] = {"key": name, "size": 2**30, "sha256": "0" * 64, "images": images}
            continue
        blob = bytearray((root / part["key"]).read_bytes())
        blob[-1] ^= 0xFF
        (root / name).write_bytes(bytes(blob))
        parts[split] = {**part, "key": name}
    manifest = {**legit, "generation": g, "parts": parts, "data_sha256": content_id(parts)}
    path = root / "data" / f"{key}.g{g}.json"
    path.write_text(json.dumps(manifest))
    return path


def _published(url: str) -> int:
    store = storage.open_store(url)
    return len(store.population.list_alive()) + store.history.count_history()


def _worker(url: str, index: int = 0):
    return peak_rss_mib(evo_cmd("worker", url, "--max-individuals", "2", "--device", "cpu", "--index", str(index)),
                        timeout=240)


def _assert_clean(done, what: str) -> None:
    assert "Traceback" not in done.stdout + done.stderr, f"{what}: {done.stderr[-3000:]}"


def _snapshot(root: Path, key: str, g: int) -> dict[str, bytes]:
    manifest = json.loads((root / "data" / f"{key}.g{g}.json").read_text())
    names = [f"data/{key}.g{g}.json", f"data/{key}.g{g}.claim.json"] + [p["key"] for p in manifest["parts"].values()]
    return {n: (root / n).read_bytes() for n in names}


# ----- the storage primitive: read_verified ----------------------------------------------

def test_read_verified_checks_before_it_holds(store_url):
    backend = storage.open_backend(store_url)
    blob = os.urandom(3 * 2**20 + 5)
    digest = hashlib.sha256(blob).hexdigest()
    backend.write("data/x.bin", blob)
    assert backend.read_verified("data/x.bin", len(blob), digest) == blob
    for size, sha, words in [(len(blob), "0" * 64, "SHA-256 does not match"),
                             (len(blob) + 1, digest, f"has {len(blob)} bytes, {len(blob) + 1} expected"),
                             (len(blob) - 1, digest, "too large")]:
        with pytest.raises(UnreadableEntry) as exc:
            backend.read_verified("data/x.bin", size, sha)
        assert words in str(exc.value) and "\n" not in str(exc.value) and str(exc.value).startswith("data/x.bin")
    with pytest.raises(FileNotFoundError):
        backend.read_verified("data/none.bin", 1, digest)
    with pytest.raises(ValueError):
        backend.read_verified("data/x.bin", -1, digest)


def test_read_verified_refuses_non_files_and_reads_a_planted_size_in_chunks(tmp_path):
    backend = storage.LocalBackend(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "outside").write_bytes(b"secret")
    os.symlink(tmp_path / "outside", tmp_path / "data" / "link")
    os.mkfifo(tmp_path / "data" / "fifo")
    (tmp_path / "data" / "dir").mkdir()
    digest = hashlib.sha256(b"secret").hexdigest()
    for name, words in (("link", "symbolic link"), ("fifo", "FIFO"), ("dir", "directory")):
        with pytest.raises(UnreadableEntry, match=words):
            backend.read_verified(f"data/{name}", 6, digest)
    with open(tmp_path / "data" / "sparse", "wb") as f:
        f.truncate(256 * 2**20)
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableEntry, match="SHA-256 does not match"):
            backend.read_verified("data/sparse", 256 * 2**20, "0" * 64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"{peak} bytes held for a planted 256 MiB object"


# ----- row 1: damaged manifests ----------------------------------------------------------

def test_damaged_generations_fall_back_to_the_intact_one(tmp_path):
    store, config, key = _in_process_run(tmp_path)
    first = prepare_data(config.dataset, config.data, store.datacache)
    root = Path(store.url.removeprefix("file://"))
    legit = store.datacache.read_data_manifest(key, 0)
    planted = [_plant_damaged_generation(root, key, legit, g) for g in (1, 2, 3)]
    before = _snapshot(root, key, 0)
    again = prepare_data(config.dataset, config.data, store.datacache)
    assert again.data_id == first.data_id and store.datacache.data_state(key).manifests == {0, 1, 2, 3}, \
        "generations 3, 2 and 1 are damaged: generation 0 is used, nothing decoded again"
    report = store.check(grace_seconds=0)
    assert not report.ok and report.corrupt == 3, report.problems
    for path in planted:
        assert any(f"data/{path.name}" in p for p in report.problems), report.problems
    assert store.check(repair=True, grace_seconds=0).repaired["corrupt"] == 3
    assert store.check(grace_seconds=0).ok
    assert _snapshot(root, key, 0) == before, "the intact generation is untouched"


@pytest.mark.slow  # real worker processes
@pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
def test_workers_survive_three_damaged_manifests(tmp_path):
    url, config, key = _run(tmp_path)
    root = Path(url)
    legit = json.loads((root / "data" / f"{key}.g0.json").read_text())
    planted = [_plant_damaged_generation(root, key, legit, g) for g in (1, 2, 3)]
    before = _snapshot(root, key, 0)
    done, _ = _worker(url)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_clean(done, "worker")
    assert _published(url) == 2 and "generation 0" in done.stderr
    check = run_evo("check", url)
    assert check.returncode == 1 and all(f"data/{p.name}" in check.stdout for p in planted), check.stdout
    _assert_clean(check, "check")
    repair = run_evo("check", url, "--repair", "--grace", "0")
    _assert_clean(repair, "check --repair")
    assert run_evo("check", url).returncode == 0, run_evo("check", url).stdout
    assert not any(p.exists() for p in planted) and _snapshot(root, key, 0) == before


# ----- row 2: records dated in the future, generations far beyond the chain -------------

def test_future_records_and_far_generations_are_foreign(tmp_path):
    store, config, key = _in_process_run(tmp_path)
    root = Path(store.url.removeprefix("file://"))
    (root / "data").mkdir()
    # nothing decoded yet: a "failed" progress record from the future, a claim far ahead
    (root / "data" / f"{key}.g0.progress.json").write_text(json.dumps(
        {"worker": "attacker", "failed": "PLANTED failure", "time": time.time() + 10**7}))
    _claim(root, key, 1000000)
    (root / "data" / f"{key}.g1000000.progress.json").write_text(json.dumps(
        {"worker": "attacker", "failed": "PLANTED failure", "time": time.time()}))
    status = cache_status(store.datacache, config.dataset, config.data)
    assert status["state"] == "not decoded", status
    report = store.check(grace_seconds=0)
    assert not report.ok and report.foreign == 3, report.problems
    assert any("g1000000.claim.json is outside the verified chain" in p for p in report.problems)
    host = prepare_data(config.dataset, config.data, store.datacache)
    state = store.datacache.data_state(key)
    assert state.committed == {0} and len(host.train_y) == 12
    # the run's generation is damaged: the next is numbered from the chain, not from 1000000
    manifest = store.datacache.read_data_manifest(key, 0)
    part = root / manifest["parts"]["train"]["key"]
    part.write_bytes(part.read_bytes()[:-1] + b"\0")
    (root / "data" / f"{key}.g1.claim.json").write_text(json.dumps(
        {"worker": "attacker", "time": time.time() + 10**7}))     # dated in the future: foreign
    again = prepare_data(config.dataset, config.data, store.datacache)
    assert again.data_id == host.data_id and store.datacache.data_state(key).committed == {0, 1}
    assert any(n.startswith("data~") for n in os.listdir(root / "quarantine" / "moved")), \
        "the writer moved the foreign claim at the name it needed aside"
    repaired = store.check(repair=True, grace_seconds=0).repaired
    assert repaired["foreign"] == 2 and repaired["corrupt"] == 1, repaired   # g1000000's two; g0's manifest
    final = store.check(grace_seconds=0)
    assert final.ok, final.problems
    assert store.datacache.data_state(key).committed == {1}, "the newest intact generation stays"


def test_a_non_file_at_the_next_claim_name_is_moved_aside_or_skipped(tmp_path):
    store, config, key = _in_process_run(tmp_path)
    root = Path(store.url.removeprefix("file://"))
    (root / "data").mkdir()
    (root / "outside").write_text("secret")
    os.symlink(root / "outside", root / "data" / f"{key}.g0.claim.json")
    host = prepare_data(config.dataset, config.data, store.datacache)
    assert store.datacache.data_state(key).committed == {0} and len(host.train_y) == 12
    # a store that does not let the writer move it: skipped past
    from storage.memory import MemoryBackend, drop_memory_store

    class NoMoves(MemoryBackend):
        def move_aside(self, dirname, name, target=None):
            raise PermissionError("not allowed")

    try:
        mem = storage.PopulationStore(NoMoves("no-moves-datacache"))
        mem.backend.write(f"data/{key}.g0.claim.json", b"[1, 2")     # not a claim
        assert mem.runinfo.init_config(config.to_json())
        host = prepare_data(config.dataset, config.data, mem.datacache)
        assert mem.datacache.data_state(key).committed == {1} and len(host.train_y) == 12
    finally:
        drop_memory_store("no-moves-datacache")


@pytest.mark.slow  # real worker processes
@pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
def test_workers_survive_future_records_and_far_generations(tmp_path):
    url, config, key = _run(tmp_path, decode=False)
    root = Path(url)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / f"{key}.g0.progress.json").write_text(json.dumps(
        {"worker": "attacker", "failed": "PLANTED failure", "time": time.time() + 10**7}))
    (root / "outside").write_text("secret")
    os.symlink(root / "outside", root / "data" / f"{key}.g0.claim.json")
    _claim(root, key, 1000000)
    (root / "data" / f"{key}.g1000000.progress.json").write_text(json.dumps(
        {"worker": "attacker", "failed": "PLANTED failure", "time": time.time()}))
    status = run_evo("status", url)
    _assert_clean(status, "status")
    assert "data: not decoded" in status.stdout, status.stdout
    done, _ = _worker(url)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_clean(done, "worker")
    assert _published(url) == 2 and "PLANTED" not in done.stderr
    before = _snapshot(root, key, 0)
    (root / "data" / f"{key}.g0.progress.json").write_text(json.dumps(      # after the decode
        {"worker": "attacker", "failed": "PLANTED failure", "time": time.time() + 10**7}))
    done, _ = _worker(url, 1)
    assert done.returncode == 0 and _published(url) == 4, done.stderr[-3000:]
    check = run_evo("check", url)
    _assert_clean(check, "check")
    assert check.returncode == 1, check.stdout
    for name in (f"{key}.g1000000.claim.json", f"{key}.g1000000.progress.json", f"{key}.g0.progress.json"):
        assert f"data/{name}" in check.stdout, check.stdout
    repair = run_evo("check", url, "--repair", "--grace", "0")
    _assert_clean(repair, "check --repair")
    assert run_evo("check", url).returncode == 0
    assert _snapshot(root, key, 0) == before
    status = run_evo("status", url)
    assert "data: 3 classes" in status.stdout, status.stdout


# ----- row 3: a sparse part of 1 GiB -----------------------------------------------------

def test_a_part_larger_than_its_arrays_is_refused_unread(tmp_path):
    store, config, key = _in_process_run(tmp_path)
    first = prepare_data(config.dataset, config.data, store.datacache)
    root = Path(store.url.removeprefix("file://"))
    legit = store.datacache.read_data_manifest(key, 0)
    path = _plant_damaged_generation(root, key, legit, 1)
    manifest = json.loads(path.read_text())
    big = root / manifest["parts"]["train"]["key"]
    with open(big, "wb") as f:
        f.truncate(2**30)
    manifest["parts"]["train"]["size"] = 2**30        # 12 images need far less
    manifest["data_sha256"] = content_id(manifest["parts"])
    path.write_text(json.dumps(manifest))
    tracemalloc.start()
    try:
        again = prepare_data(config.dataset, config.data, store.datacache)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert again.data_id == first.data_id and peak < 64 * 2**20


@pytest.mark.slow  # real worker processes, and 1 GiB hashed
@pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
def test_a_sparse_gigabyte_part_costs_no_memory(tmp_path):
    url, config, key = _run(tmp_path)
    root = Path(url)
    legit = json.loads((root / "data" / f"{key}.g0.json").read_text())
    planted = _plant_damaged_generation(root, key, legit, 1, sparse_train=True)
    before = _snapshot(root, key, 0)
    done, peak = _worker(url)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_clean(done, "worker")
    assert _published(url) == 2 and peak < 500, peak
    check, peak = peak_rss_mib(evo_cmd("check", url))
    assert check.returncode == 1 and f"data/{planted.name}" in check.stdout and "SHA-256" in check.stdout, check.stdout
    assert peak < 500, peak
    repair, peak = peak_rss_mib(evo_cmd("check", url, "--repair", "--grace", "0"))
    _assert_clean(repair, "check --repair")
    assert peak < 500 and run_evo("check", url).returncode == 0
    assert not planted.exists() and _snapshot(root, key, 0) == before
    assert [n for n in os.listdir(root / "data") if ".g1." in n] == [f"{key}.g1.claim.json"], \
        "its parts went as orphans; a claim that checks out is the chain's (it may be the run's own)"
    shutil.rmtree(root / "quarantine", ignore_errors=True)


@pytest.mark.slow  # the GCS emulator
def test_read_verified_on_gcs_hashes_in_ranged_reads(gcs_bucket_url):
    backend = storage.open_backend(gcs_bucket_url)
    blob = b"\0" * (48 * 2**20)
    backend.write("data/big.bin", blob)
    digest = hashlib.sha256(blob).hexdigest()
    del blob
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableEntry, match="SHA-256 does not match"):
            backend.read_verified("data/big.bin", 48 * 2**20, "0" * 64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"{peak} bytes held for a 48 MiB object that does not check out"
    with pytest.raises(UnreadableEntry, match="too large"):
        backend.read_verified("data/big.bin", 2**20, digest)     # refused from its size, unread
    assert len(backend.read_verified("data/big.bin", 48 * 2**20, digest)) == 48 * 2**20

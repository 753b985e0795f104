"""Decoded once per run: the data cache in the population directory (evo.data.cache over
storage.datacache). Concurrent processes decode a dataset exactly once; a decoder killed at
any step, a damaged cache and bad data never leave anything a later worker trusts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import storage
from evo.config import DataSettings, RunConfig
from evo.data.base import DatasetError
from evo.data.datasets import read_dataset
from evo.data.device import to_device
from evo.data.cache import cache_key, cache_status
from evo.data.userdata import prepare_data
from helpers_images import make_image_folder

# A process that runs prepare_data on a population and counts every image it decodes (by
# wrapping the one function that decodes an image file), appending one line per decode to
# COUNT_FILE; it starts when GO_FILE exists, so that all of them race at once.
RACER = textwrap.dedent("""
    import hashlib, json, os, sys, time
    url, count_file, go_file = sys.argv[1:4]
    import evo.data.decoding as decoding
    real = decoding.preprocess_image
    def counted(data, prep):
        with open(count_file, "a") as f:
            f.write("1\\n")
        return real(data, prep)
    decoding.preprocess_image = counted
    import storage
    from evo.config import RunConfig
    from evo.data.userdata import prepare_data
    store = storage.open_store(url)
    config = RunConfig.from_json(store.runinfo.read_config())
    while not os.path.exists(go_file):
        time.sleep(0.01)
    host = prepare_data(config.dataset, config.data, store.datacache)
    arrays = b"".join(a.tobytes() for a in (host.train_x, host.train_y, host.val_x, host.val_y))
    print(json.dumps({"data_id": host.data_id, "arrays": hashlib.sha256(arrays).hexdigest(),
                      "test": len(host.test_y)}))
""")


def init(url: str, spec: str, **data) -> RunConfig:
    config = RunConfig(dataset=spec, data=DataSettings(**data), population_size=4)
    assert storage.open_store(url).runinfo.init_config(config.to_json())
    return config


@pytest.mark.slow  # 8 real processes on the GCS emulator
def test_eight_processes_decode_an_image_folder_in_a_bucket_exactly_once(tmp_path, gcs_bucket_url):
    import gcsfs

    local = make_image_folder(tmp_path / "imgs", per_class=10)
    bucket = gcs_bucket_url.removeprefix("gs://").split("/")[0]
    fs = gcsfs.GCSFileSystem()
    fs.put(str(local), f"{bucket}/imgs", recursive=True)
    config = init(gcs_bucket_url, f"imagefolder=gs://{bucket}/imgs")
    count, go = tmp_path / "decodes.txt", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, gcs_bucket_url, str(count), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    time.sleep(0.5)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    images = 3 * (10 + 3 + 3)      # every image file but the corrupt one, which fails to decode once
    assert len(count.read_text().splitlines()) == images + 1, "each image decoded exactly once, fleet-wide"
    assert len({r["data_id"] for r in results}) == 1 and len({r["arrays"] for r in results}) == 1
    assert all(r["test"] == 0 for r in results), "the search never reads the test split"
    store = storage.open_store(gcs_bucket_url)
    state = store.datacache.data_state(cache_key(config.dataset, config.data))
    assert state.claims == {0} and state.manifests == {0}
    assert cache_status(store.datacache, config.dataset, config.data)["data_sha256"] == results[0]["data_id"]
    direct = read_dataset(f"imagefolder={local}")
    host = prepare_data(config.dataset, config.data, store.datacache, splits=("train", "val", "test"))
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(host, f"{split}_x"), getattr(direct, f"{split}_x")), split
    assert store.check(grace_seconds=0).ok


DECODER = textwrap.dedent("""
    import sys
    import storage
    from evo.config import RunConfig
    from evo.data.userdata import prepare_data
    url, point = sys.argv[1:3]
    store = storage.open_store(url, fault=storage.crash_hook(point))
    config = RunConfig.from_json(store.runinfo.read_config())
    prepare_data(config.dataset, config.data, store.datacache)
""")


@pytest.mark.slow  # processes killed mid-step
@pytest.mark.parametrize("point", ["data:after_claim", "data:after_part#2", "data:before_commit"])
def test_a_decoder_killed_at_any_step_leaves_nothing_trusted(tmp_path, point):
    root = make_image_folder(tmp_path / "imgs", per_class=4, corrupt=0)
    url = str(tmp_path / "pop")
    config = init(url, f"imagefolder={root}")
    killed = subprocess.run([sys.executable, "-c", DECODER, url, point], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    store = storage.open_store(url)
    key = cache_key(config.dataset, config.data)
    state = store.datacache.data_state(key)
    assert state.claims == {0} and not state.manifests, "claimed, never committed"
    assert cache_status(store.datacache, config.dataset, config.data)["state"] == "decoding"
    t0 = time.monotonic()
    host = prepare_data(config.dataset, config.data, store.datacache, stale_after=1.0)   # the decoder went silent
    assert time.monotonic() - t0 >= 1.0
    state = store.datacache.data_state(key)
    assert state.manifests == {1} and state.claims == {0, 1}
    direct = read_dataset(config.dataset)
    assert np.array_equal(host.train_x, direct.train_x) and np.array_equal(host.val_y, direct.val_y)
    orphans = [k for k in state.parts.get(0, ())]
    report = store.check(grace_seconds=0)
    assert report.orphans == len(orphans) and (report.ok is (not orphans)), report.problems
    if orphans:
        assert store.check(repair=True, grace_seconds=0).ok
        assert store.datacache.data_state(key).parts.get(0, ()) == ()


def test_a_damaged_cache_is_decoded_again_never_used(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=4, corrupt=0)
    url = str(tmp_path / "pop")
    config = init(url, f"imagefolder={root}")
    store = storage.open_store(url)
    first = prepare_data(config.dataset, config.data, store.datacache)
    key = cache_key(config.dataset, config.data)
    manifest = store.datacache.read_data_manifest(key, 0)
    part = Path(url) / manifest["parts"]["train"]["key"]
    blob = bytearray(part.read_bytes())
    blob[-1] ^= 0xFF       # one flipped bit of pixel data: same size, another SHA-256
    part.write_bytes(bytes(blob))
    again = prepare_data(config.dataset, config.data, store.datacache)
    assert store.datacache.data_state(key).manifests == {0, 1}
    assert again.data_id == first.data_id, "decoding is deterministic: the new generation holds the same data"
    assert np.array_equal(again.train_x, first.train_x)
    # a planted manifest that names other data is not trusted either
    planted = dict(store.datacache.read_data_manifest(key, 1), generation=2)   # it names generation 1's parts
    assert store.datacache.commit_data(key, 2, planted)
    third = prepare_data(config.dataset, config.data, store.datacache)
    assert third.data_id == first.data_id and store.datacache.data_state(key).manifests == {0, 1, 2}, \
        "generation 2 does not check out: generation 1, whole, is used"


def test_bad_data_fails_the_decoder_and_its_waiters_with_one_line(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=4, corrupt=4)
    url = str(tmp_path / "pop")
    config = init(url, f"imagefolder={root}")
    store = storage.open_store(url)
    with pytest.raises(DatasetError) as first:
        prepare_data(config.dataset, config.data, store.datacache)
    assert "broken0.jpg" in str(first.value) and "\n" not in str(first.value)
    with pytest.raises(DatasetError) as waiter:   # the failure is recent: reported, not decoded again
        prepare_data(config.dataset, config.data, store.datacache)
    assert str(first.value) in str(waiter.value) and "which decoded the dataset" in str(waiter.value)
    key = cache_key(config.dataset, config.data)
    assert store.datacache.data_state(key).claims == {0} and not store.datacache.data_state(key).parts
    assert cache_status(store.datacache, config.dataset, config.data)["state"] == "failed"
    for f in (root / "train" / "cat").glob("broken*"):
        f.unlink()   # the user fixes the data; a later worker retries once the failure is old
    later = storage.PopulationStore(store.backend, clock=lambda: time.time() + 3600)
    host = prepare_data(config.dataset, config.data, later.datacache)
    assert later.datacache.data_state(key).manifests == {1} and len(host.train_y) == 12


def test_the_cache_is_named_by_the_runs_settings(tmp_path):
    a = cache_key("imagefolder=/x", DataSettings())
    assert a == cache_key("imagefolder=/x", DataSettings()) and len(a) == 16
    assert a != cache_key("imagefolder=/x", DataSettings(image_size=32))
    assert a != cache_key("imagefolder=/y", DataSettings())


def test_too_large_for_the_device_says_how_large_and_what_to_do(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=4, corrupt=0)
    host = read_dataset(f"imagefolder={root}", settings=DataSettings(image_size=64))
    with pytest.raises(DatasetError) as exc:
        to_device(host, "cpu", splits=("train", "val"), free=100_000)
    text = str(exc.value)
    assert "\n" not in text and "the dataset takes 252.2 KiB on cpu (train 144.1 KiB + val 108.1 KiB; 3x64x64" in text
    assert "97.7 KiB free" in text and "use a smaller --image-size" in text
    assert to_device(host, "cpu", splits=("train", "val")).train_x.shape == (12, 3, 64, 64)


def test_evo_check_knows_the_data_folder(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=4, corrupt=0)
    url = str(tmp_path / "pop")
    config = init(url, f"imagefolder={root}")
    store = storage.open_store(url)
    prepare_data(config.dataset, config.data, store.datacache)
    report = store.check(grace_seconds=0)
    assert report.ok and report.stray == 0 and report.foreign == 0, report.problems
    (Path(url) / "data" / "notes.txt").write_text("hello")
    assert store.check(grace_seconds=0).stray == 1
    assert os.path.isdir(Path(url) / "data")


# ----- the store's side: bounded, confined reads --------------------------------------

def test_the_store_reads_only_what_a_manifest_may_name(tmp_path):
    from storage import CorruptRecord

    store = storage.open_store(str(tmp_path / "pop"))
    key = "0123456789abcdef"
    part = store.datacache.write_data_part(key, 0, "train", b"some arrays")
    assert store.datacache.read_data_part(part) == b"some arrays"
    (tmp_path / "pop" / "alive").mkdir()
    (tmp_path / "pop" / "alive" / "secret.json").write_text("{}")
    for bad, words in [({**part, "key": "alive/secret.json"}, "names a bad part"),
                       ({**part, "key": f"data/{key}.g0.train.0123456789abcdef.safetensors/../x"}, "bad part"),
                       ({**part, "size": 10**15}, "impossible size"),
                       ({**part, "size": 4}, "too large"),
                       ({**part, "size": 20}, "has 11 bytes, 20 expected"),
                       ({**part, "sha256": "0" * 64}, "SHA-256 does not match"),
                       ({**part, "sha256": "nope"}, "states no SHA-256")]:
        with pytest.raises(CorruptRecord, match=words):
            store.datacache.read_data_part(bad)
    target = tmp_path / "outside"
    target.write_bytes(b"some arrays")
    link = tmp_path / "pop" / "data" / f"{key}.g0.val.0123456789abcdef.safetensors"
    link.symlink_to(target)
    with pytest.raises(CorruptRecord, match="symbolic link"):
        store.datacache.read_data_part({**part, "key": f"data/{link.name}"})
    (tmp_path / "pop" / "data" / f"{key}.g1.json").write_bytes(b"{" * (2**20 + 10))
    with pytest.raises(CorruptRecord, match="too large"):
        store.datacache.read_data_manifest(key, 1)
    with pytest.raises(ValueError, match="bad data cache key"):
        store.datacache.data_state("../x")
    assert storage.check_data_key(key) == key

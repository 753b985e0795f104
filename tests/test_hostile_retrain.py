"""A hostile ``retrain/`` queue (issue 23): requests naming data outside the store, requests
too large to build, claims and heartbeats dated in the future or numbered beyond the chain,
and a sparse checkpoint of 1 GiB.

Units first (the quick tier); then each row as a hostile store: ``evo retrain --pending``,
``evo status``, ``evo check`` and ``evo check --repair`` run as real processes without root's
permission bypass, with a legitimate request beside the planted entry that must still train.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

import storage
from helpers_hostile import SECRET, evo_cmd, peak_rss_mib, run_evo, store_bytes_contain, write_secret, absurd_dna
from storage.records import dna_hash
from storage.retrain_format import MAX_CELLS

SMALL = ["--cells", "1", "--filters", "4", "--preset", "tiny", "--epochs", "1", "--batch-size", "64"]


def _request(store, label: str, dataset: str = "digits", size=None, dna: dict | None = None) -> dict:
    from dna.published import published
    from evo.train.final_settings import TINY
    from evo.train.retrain_request import make_request

    d = dna or published("amoebanet-a").to_dict()
    return make_request(label=label, source={"kind": "arch", "name": label}, dna=d, dna_hash=dna_hash(d),
                        dataset=dataset, settings=TINY.with_changes(epochs=1, batch_size=64),
                        size=size if size is not None else {"cells": 1, "filters": 4})


def _claim_record(rid: str, n: int, t: float, lease: float = 86400.0) -> bytes:
    return json.dumps({"schema": 1, "rid": rid, "n": n, "time": t, "lease": lease, "owner": {"host": "evil"}}).encode()


# ----- units (quick tier) -----

def test_only_the_runs_own_or_given_dataset_is_admitted_by_text_alone():
    from evo.train.retrain_request import dataset_allowed

    run = ("imagefolder=/data/run-images",)
    assert dataset_allowed("imagefolder=/data/run-images", run)
    assert dataset_allowed("digits", run)
    for bad in ("imagefolder=/some/outside/folder", "npz=/etc/shadow", "cifar10=/data/run-images", "synthetic",
                "hf=gs://elsewhere/x", "nonsense=1", 7):
        assert not dataset_allowed(bad, run), bad


def test_a_request_for_outside_data_is_refused_before_it_is_claimed(tmp_path):
    from evo.train.retrain import RetrainRunner, RunnerOptions
    from evo.train.retrain_request import REFUSED_DATASET

    store = storage.open_store(str(tmp_path / "pop"))
    fifo = tmp_path / "outside.npz"
    os.mkfifo(fifo)   # opening it would block: the refusal must come from the text alone
    req = _request(store, "evil", dataset=f"npz={fifo}")
    assert store.retrains.put_retrain_request(req["rid"], req)
    said = []
    runner = RetrainRunner(store, exporter=lambda *a: {}, options=RunnerOptions(datasets=("digits",)),
                           progress=lambda rid, info: said.append(info))
    report = runner.run(req["rid"])
    assert report.status == "failed" and report.error.endswith(REFUSED_DATASET)
    assert str(fifo) not in REFUSED_DATASET and said == [{"state": "failed", "error": REFUSED_DATASET}]
    assert store.backend.list(f"retrain/{req['rid']}") == []   # no claim, no heartbeat


def test_sizes_are_capped_before_anything_is_built(tmp_path):
    from evo.train.retrain_request import MAX_TOTAL_STEPS, RefusedRequest, check_footprint

    store = storage.open_store(str(tmp_path / "pop"))
    huge = _request(store, "huge", size={"cells": 4096, "filters": 4096})
    with pytest.raises(ValueError, match=f"cells: 1..{MAX_CELLS}"):
        store.retrains.put_retrain_request(huge["rid"], huge)
    store.backend.write(f"retrain/{huge['rid']}.json", json.dumps(huge).encode())
    assert "cells: 1.." in store.retrains.read_retrain_request(huge["rid"]).problem
    wide = _request(store, "wide", size=None, dna=absurd_dna())   # a billion channels, built on meta
    with pytest.raises(RefusedRequest, match="activations"):
        check_footprint(wide, batch_size=32, epochs=1, train_images=100, input_shape=(1, 8, 8), num_classes=10,
                        aux_head=False)
    with pytest.raises(RefusedRequest, match="parameters"):
        check_footprint(_request(store, "deep", size={"cells": MAX_CELLS, "filters": 1024}), batch_size=1,
                        epochs=1, train_images=100, input_shape=(1, 8, 8), num_classes=10, aux_head=True)
    with pytest.raises(RefusedRequest, match=f"{MAX_TOTAL_STEPS:,}"):
        check_footprint(_request(store, "long"), batch_size=1, epochs=100_000, train_images=1437,
                        input_shape=(1, 8, 8), num_classes=10, aux_head=True)
    with pytest.raises(RefusedRequest, match="activations"):
        check_footprint(_request(store, "big", size={"cells": MAX_CELLS, "filters": 1024}), batch_size=64,
                        epochs=1, train_images=50_000, input_shape=(3, 32, 32), num_classes=10, aux_head=True)
    fine = _request(store, "fine")
    assert 0 < check_footprint(fine, batch_size=64, epochs=1, train_images=1437, input_shape=(1, 8, 8),
                               num_classes=10, aux_head=True) < 10**6


def test_future_dated_and_beyond_chain_claims_are_foreign(tmp_path):
    root = tmp_path / "pop"
    store = storage.open_store(str(root))
    req = _request(store, "legit")
    rid = req["rid"]
    store.retrains.put_retrain_request(rid, req)
    far = time.time() + 10**9
    store.backend.write(f"retrain/{rid}/claim-000000.json", _claim_record(rid, 0, far))
    store.backend.write(f"retrain/{rid}/beat-000000.json",
                        json.dumps({"schema": 1, "n": 0, "time": far, "info": {"state": "training"}}).encode())
    store.backend.write(f"retrain/{rid}/claim-999999.json", _claim_record(rid, 999999, time.time()))
    (root / "retrain" / rid / "claim-000001.json").mkdir()
    assert store.retrains.claim_chain(rid) == (None, 2, [0, 1])
    assert store.retrains.retrain_state(rid).state == "pending"
    claim = store.retrains.claim_retrain(rid, {"host": "me"}, 60)
    assert claim is not None and claim.n == 2
    assert store.retrains.retrain_still_mine(claim)   # claim-999999 takes nothing over
    assert store.retrains.retrain_state(rid).state == "training"
    assert store.retrains.claim_retrain(rid, {"host": "other"}, 60) is None
    store.retrains.retrain_beat(claim, {"state": "training", "eta_seconds": 1e308})
    from evo.train.retrain import eta_text
    assert eta_text(1e308) == "-" and eta_text(-5) == "-" and eta_text(65) == "1m05s"

    found = "\n".join(store.check().problems)
    for name in ("claim-000000.json", "beat-000000.json", "claim-999999.json", "claim-000001.json"):
        assert f"retrain/{rid}/{name}" in found, (name, found)
    assert f"retrain/{rid}/claim-000002.json" not in found and f"retrain/{rid}/beat-000002.json" not in found
    store.check(repair=True)
    assert [p for p in store.check().problems if "retrain/" in p] == []
    assert store.retrains.claim_chain(rid) == (2, 3, [])   # foreign places filled with dead claims
    assert store.retrains.retrain_still_mine(claim) and store.retrains.retrain_state(rid).state == "training"


def test_an_oversized_checkpoint_commit_is_skipped_without_reading_its_blob(tmp_path, monkeypatch):
    root = tmp_path / "pop"
    store = storage.open_store(str(root))
    req = _request(store, "legit")
    store.retrains.put_retrain_request(req["rid"], req)
    claim = store.retrains.claim_retrain(req["rid"], {"host": "me"}, 60)
    store.retrains.save_retrain_checkpoint(claim, 1, b"x" * 1000)
    folder = root / "retrain" / req["rid"]
    with open(folder / "ckpt-0000000005.0123456789abcdef.safetensors", "wb") as f:
        f.truncate(2**30)
    (folder / "ckpt-0000000005.json").write_text(json.dumps({
        "schema": 1, "step": 5, "claim": 0, "time": time.time(), "info": {}, "size": 2**30, "sha256": "0" * 64,
        "blob": "ckpt-0000000005.0123456789abcdef.safetensors"}))
    asked = []
    real = store.backend.read
    monkeypatch.setattr(store.backend, "read", lambda key, max_bytes=None: asked.append((key, max_bytes)) or real(
        key, max_bytes))
    commit, blob = store.retrains.load_retrain_checkpoint(req["rid"], max_size=10_000)
    assert commit["step"] == 1 and blob == b"x" * 1000
    assert not any(k.endswith(".safetensors") and (m or 0) > 10_000 for k, m in asked), asked


def test_the_checkpoint_bound_holds_a_whole_trainings_state():
    import torch

    from dna.build_nasnet import build_nasnet
    from dna.published import published
    from evo.data.datasets import load_dataset
    from evo.train.final import FinalTraining, state_to_bytes
    from evo.train.final_settings import TINY

    data = load_dataset("digits", "cpu")
    model = build_nasnet(published("amoebanet-a"), data.input_shape, data.num_classes, cells_per_stack=1,
                         filters=4, aux_head=True)
    t = FinalTraining(model, data, TINY, learning_rate=0.1, seed=0, device="cpu", aux_head=True)
    bound = t.checkpoint_size_bound()
    t.step = t.total_steps   # the state is largest at the end (every step's loss)
    t.metrics = [{"epoch": e, "loss": 1.0, "accuracy": 0.5, "lr": 0.1, "seconds": 1.0}
                 for e in range(TINY.epochs)]
    size = len(state_to_bytes(*t.state()))
    params = sum(p.numel() for p in model.parameters())
    assert size <= bound <= 2 * 4 * params + 8 * t.total_steps + 2**21 + 4096 * TINY.epochs + 64 * 1437, \
        (size, bound)
    del torch


# ----- hostile stores: real processes without root's bypass -----

@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A digits NASNet run with one legitimate tiny retrain request (not yet trained)."""
    root = tmp_path_factory.mktemp("retrain-base") / "pop"
    for args in (("init", str(root), "--dataset", "digits", "--search-space", "nasnet", "-P", "3", "--steps", "5",
                  "--nasnet-cells", "1", "--nasnet-filters", "4"),
                 ("retrain", str(root), "--arch", "amoebanet-a", *SMALL, "--no-train")):
        r = run_evo(*args)
        assert r.returncode == 0, r.stderr
    return root


def _legit(store) -> str:
    return next(r for r in store.retrains.list_retrains() if r.startswith("amoebanet-a-"))


def _plant(row: str, store, root: Path, outside: Path) -> list[str]:
    """Plant ``row``'s entries; the keys check must name."""
    rid = _legit(store)
    now = time.time()
    if row == "outside-data":
        secret = write_secret(outside)
        np_file = outside / "data.npz"
        np_file.write_bytes(SECRET.encode() * 100)
        keys = []
        for dataset in (f"imagefolder={outside}", f"npz={np_file}", f"npz={secret}", "npz=/etc/shadow"):
            req = _request(store, "evil", dataset=dataset)
            store.retrains.put_retrain_request(req["rid"], req)
            keys.append(f"retrain/{req['rid']}.json")
        return keys
    if row == "huge":
        req = _request(store, "huge")
        req["size"] = {"cells": 4096, "filters": 4096}
        key = f"retrain/{req['rid']}.json"
        store.backend.write(key, json.dumps(req).encode())
        return [key]
    if row == "future-claim":
        store.backend.write(f"retrain/{rid}/claim-000000.json", _claim_record(rid, 0, now + 10**9))
        store.backend.write(f"retrain/{rid}/beat-000000.json",
                            json.dumps({"schema": 1, "n": 0, "time": now + 10**9,
                                        "info": {"state": "training"}}).encode())
        store.backend.write(f"retrain/{rid}/claim-999999.json", _claim_record(rid, 999999, now))
        if root is not None:
            (root / "retrain" / rid / "claim-000001.json").mkdir()
        return [f"retrain/{rid}/claim-000000.json", f"retrain/{rid}/beat-000000.json",
                f"retrain/{rid}/claim-999999.json"] + ([f"retrain/{rid}/claim-000001.json"] if root else [])
    assert row == "sparse-ckpt"
    blob = "ckpt-0000000005.0123456789abcdef.safetensors"
    (root / "retrain" / rid).mkdir(exist_ok=True)
    with open(root / "retrain" / rid / blob, "wb") as f:
        f.truncate(2**30)
    store.backend.write(f"retrain/{rid}/ckpt-0000000005.json", json.dumps({
        "schema": 1, "step": 5, "claim": 0, "time": now, "blob": blob, "sha256": "0" * 64, "size": 2**30,
        "info": {}}).encode())
    return []   # the planted checkpoint is pruned when the legitimate training finishes


def _no_traceback(r) -> None:
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.slow  # four rows of real retrains (a few seconds each)
@pytest.mark.parametrize("row", ["outside-data", "huge", "future-claim", "sparse-ckpt"])
def test_hostile_retrain_row(row, base_run, tmp_path):
    root = tmp_path / "pop"
    shutil.copytree(base_run, root, symlinks=True)
    store = storage.open_store(str(root))
    rid = _legit(store)
    planted = _plant(row, store, root, tmp_path / "outside")

    status = run_evo("status", str(root))
    _no_traceback(status)
    assert status.returncode == 0 and f"{rid}  pending" in status.stdout   # never "training" for a planted claim

    check = run_evo("check", str(root))
    _no_traceback(check)
    for key in planted:
        assert key in check.stdout, (key, check.stdout)
    assert (check.returncode == 1) == bool(planted)

    done, peak = peak_rss_mib(evo_cmd("retrain", str(root), "--pending", "--device", "cpu"), timeout=300)
    _no_traceback(done)
    assert peak < 500, peak
    assert f"{rid}: done" in done.stdout, done.stdout + done.stderr
    assert done.returncode == (1 if row in ("outside-data", "huge") else 0)
    if row == "outside-data":
        assert done.stdout.count("FAILED: refused: the request names a dataset") == 4, done.stdout
    if row == "huge":
        assert "FAILED" in done.stdout and f"cells: 1..{MAX_CELLS}" in done.stdout, done.stdout
    result = (root / "retrain" / rid / "result.json").read_bytes()
    legit_claims = sorted(p.name for p in (root / "retrain" / rid).glob("claim-*.json") if p.is_file()
                          and json.loads(p.read_text()).get("owner", {}).get("host") != "evil")
    assert legit_claims
    assert store_bytes_contain(root, SECRET.encode()) == []
    requests = {k for k in planted if "/" not in k[len("retrain/"):]}
    for path in (str(tmp_path / "outside").encode(), b"/etc/shadow"):   # only in the planted requests
        assert set(store_bytes_contain(root, path)) <= requests

    repair = run_evo("check", str(root), "--repair")
    _no_traceback(repair)
    again = run_evo("check", str(root))
    assert again.returncode == 0, again.stdout
    for key in planted:
        assert not (root / key).exists() or (root / key).is_file() and "filled" in (root / key).read_text()
    assert (root / "retrain" / rid / "result.json").read_bytes() == result
    assert (root / "retrain" / f"{rid}.json").is_file()
    for name in legit_claims:
        assert (root / "retrain" / rid / name).is_file()
    assert store.retrains.retrain_state(rid).state == "done"


@pytest.mark.slow  # the GCS emulator and a real retrain
def test_outside_data_and_future_claims_on_gcs(gcs_bucket_url, tmp_path):
    url = gcs_bucket_url
    for args in (("init", url, "--dataset", "digits", "--search-space", "nasnet", "-P", "3", "--steps", "5",
                  "--nasnet-cells", "1", "--nasnet-filters", "4"),
                 ("retrain", url, "--arch", "amoebanet-a", *SMALL, "--no-train")):
        r = run_evo(*args)
        assert r.returncode == 0, r.stderr
    store = storage.open_store(url)
    rid = _legit(store)
    planted = _plant("outside-data", store, None, tmp_path / "outside") + _plant("future-claim", store, None, None)
    check = run_evo("check", url)
    assert check.returncode == 1 and all(k in check.stdout for k in planted), check.stdout
    done = run_evo("retrain", url, "--pending", "--device", "cpu", timeout=300)
    _no_traceback(done)
    assert f"{rid}: done" in done.stdout and "refused" in done.stdout, done.stdout + done.stderr
    assert store.retrains.retrain_state(rid).state == "done"
    for key in store.backend.list(f"retrain/{rid}"):
        assert SECRET.encode() not in store.backend.read(f"retrain/{rid}/{key}")
    repair = run_evo("check", url, "--repair")
    _no_traceback(repair)
    again = run_evo("check", url)
    assert again.returncode == 0, again.stdout
    names = set(store.backend.list(f"retrain/{rid}")) | set(store.backend.list("retrain"))
    for key in planted:
        name = key.rsplit("/", 1)[1]
        assert name not in names or b"filled" in store.backend.read(key), key
    assert store.retrains.retrain_state(rid).state == "done"

"""A hostile store: entries planted by someone else cost those entries, never a reader.

Symlinks (to files, folders, /dev/zero), FIFOs, devices, directories where objects belong,
oversized and sparse files, unreadable files (with root's permission bypass dropped), and
records whose DNA no run allows. Every read is bounded and confined to the store; nothing
from outside it is ever copied in.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import dna
import storage
from evo.config import RunConfig
from helpers_hostile import (
    CAN_DROP_BYPASS, NO_BYPASS_REASON, SECRET, WITHOUT_BYPASS, absurd_dna, alive_name, peak_rss_mib,
    plant_commit, plant_everything, run_evo, store_bytes_contain, write_secret,
)
from helpers_store import REPO, publish_random, subprocess_env
from storage import UnreadableEntry

needs_no_bypass = pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)


@pytest.fixture
def local(tmp_path):
    """(store, root path, a folder outside the store holding the secret)."""
    root = tmp_path / "pop"
    store = storage.open_store(str(root))
    store.runinfo.init_config(RunConfig(dataset="synthetic").to_json())
    for folder in ("alive", "history", "workers"):
        (root / folder).mkdir()
    outside = tmp_path / "outside"
    write_secret(outside)
    return store, root, outside


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# ----- the local backend never follows, never blocks, never reads without a bound -----

@pytest.mark.parametrize("target", ["file", "folder", "dev_zero"])
def test_symlinks_are_never_followed(local, target):
    store, root, outside = local
    publish_random(store, np.random.default_rng(1))
    name = alive_name(0.999999)
    dest = {"file": outside / "secret.txt", "folder": outside, "dev_zero": Path("/dev/zero")}[target]
    os.symlink(dest, root / "alive" / name)
    assert name not in store.backend.list("alive")
    assert [f.what for f in store.backend.list_foreign("alive")] == ["a symbolic link"]
    with pytest.raises(UnreadableEntry, match="symbolic link"):
        store.backend.read(f"alive/{name}")
    assert len(store.population.list_alive()) == 1


def test_a_fifo_neither_blocks_nor_is_listed(local):
    store, root, _ = local
    name = alive_name(0.5)
    os.mkfifo(root / "alive" / name)
    result: list = []
    reader = threading.Thread(target=lambda: result.append(_try_read(store, f"alive/{name}")), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading a planted FIFO blocked"
    assert "a FIFO" in result[0]
    assert store.backend.list("alive") == []
    assert [f.what for f in store.backend.list_foreign("alive")] == ["a FIFO"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
def test_a_device_node_is_refused_unread(local):
    store, root, _ = local
    name = alive_name(0.5)
    os.mknod(root / "alive" / name, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero's numbers
    before = _rss_kib()
    assert "a device" in _try_read(store, f"alive/{name}")
    assert _rss_kib() - before < 50 * 1024


def test_a_sparse_gigabyte_is_refused_before_reading(local):
    store, root, _ = local
    name = alive_name(0.999999)
    with open(root / "alive" / name, "wb") as f:
        f.truncate(2**30)
    before = _rss_kib()
    assert "too large (1073741824 bytes" in _try_read(store, f"alive/{name}")
    got = store.backend.read_many([f"alive/{name}", "config.json"])
    assert isinstance(got[f"alive/{name}"], UnreadableEntry) and got["config.json"]
    assert _rss_kib() - before < 50 * 1024


def test_a_symlinked_folder_is_neither_read_nor_written_through(local):
    store, root, outside = local
    os.rmdir(root / "history")
    os.symlink(outside, root / "history")
    assert store.backend.list("history") == []
    with pytest.raises(UnreadableEntry, match="not a folder of the store"):
        store.backend.read("history/secret.txt")
    with pytest.raises(UnreadableEntry):
        store.backend.create("history/x.json", b"{}")
    with pytest.raises(UnreadableEntry):
        store.backend.write("history/y.json", b"{}")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert ("history", "a symbolic link") in [(f.name, f.what) for f in store.backend.list_foreign("")]


def test_a_directory_where_an_object_belongs(local):
    store, root, _ = local
    name = alive_name(0.9)
    (root / "alive" / name).mkdir()
    assert store.backend.list("alive") == []
    assert "a directory" in _try_read(store, f"alive/{name}")
    assert store.backend.exists(f"alive/{name}")


def _try_read(store, key) -> str:
    try:
        store.backend.read(key)
    except UnreadableEntry as exc:
        return str(exc)
    raise AssertionError(f"{key} was read")


# ----- every backend: bounded reads, per-entry problems -----

def test_oversized_objects_are_refused_per_entry(store_url):
    store = storage.open_store(store_url)
    store.backend.write("history/big.json", b"x" * 5000)
    store.backend.write("history/small.json", b"{}")
    with pytest.raises(UnreadableEntry, match="too large"):
        store.backend.read("history/big.json", max_bytes=1000)
    got = store.backend.read_many(["history/big.json", "history/small.json", "history/gone.json"],
                                  max_bytes=1000)
    assert isinstance(got["history/big.json"], UnreadableEntry)
    assert got["history/small.json"] == b"{}" and got["history/gone.json"] is None


def test_a_non_json_commit_is_moved_aside_whole_and_never_copied(store_url):
    store = storage.open_store(store_url)
    store.runinfo.init_config("{}")
    info, _, _ = publish_random(store, np.random.default_rng(2))
    garbage = b"\xff\xfe not json " + SECRET.encode()
    store.backend.write(info.key, garbage)
    assert store.population.read_individual(info) is None
    (record,) = store.history.list_quarantine()
    assert record["commit"] is None and "not valid JSON" in record["reason"]
    assert SECRET not in json.dumps(record)
    assert store.backend.read(record["moved_to"]) == garbage  # kept, as it was
    assert store.population.list_alive() == []


def test_a_victim_with_an_absurd_dna_is_quarantined_not_buried(store_url):
    store = storage.open_store(store_url).with_run(bounds=dna.DEFAULT_BOUNDS)
    store.runinfo.init_config("{}")
    ident = plant_commit(store, absurd_dna(), 0.01)
    (victim,) = store.population.list_alive()
    assert store.population.kill(victim, worker="w") is False
    assert store.history.read_history() == []
    (record,) = store.history.list_quarantine()
    assert record["id"] == ident and "channels=1000000000 outside" in record["reason"]


def test_history_records_are_validated_before_anyone_ranks_them(store_url):
    store = storage.open_store(store_url).with_run(bounds=dna.DEFAULT_BOUNDS)
    store.runinfo.init_config("{}")
    rng = np.random.default_rng(3)
    info, _, _ = publish_random(store, rng, fitness=0.5)
    store.population.kill(info, worker="w")
    planted = plant_commit(store, absurd_dna(), 1.0, history=True)
    store.backend.write("history/20261130T000000.000000Z-00000000.json", b"\x80\x81 not utf-8")
    records, broken = store.history.scan_history()
    assert [r["id"] for r in records] == [info.id]
    assert {b.key for b in broken} == {f"history/{planted}.json", "history/20261130T000000.000000Z-00000000.json"}
    assert all(SECRET not in b.problem for b in broken)


# ----- the CLI on a store holding every hostile entry -----

@pytest.mark.slow  # several evo processes (5-9 s on a loaded 2-core machine)
@needs_no_bypass
def test_check_reports_every_hostile_entry_in_bounded_memory_and_repairs(local):
    store, root, outside = local
    plant_everything(store, root, outside)
    done, peak = peak_rss_mib(["timeout", "60", *WITHOUT_BYPASS, sys.executable, "-m", "launch",
                               "check", str(root), "--json"])
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert report["foreign"] == 7 and report["unreadable"] >= 2 and report["corrupt"] >= 2, report["problems"]
    assert peak < 150, f"evo check peaked at {peak:.0f} MiB on a store with a sparse 1 GiB commit"

    done = run_evo("check", str(root), "--repair", "--deep", "--json")
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    repaired = json.loads(done.stdout)
    assert repaired["ok"], repaired["problems"]
    again = run_evo("check", str(root), "--json")
    assert again.returncode == 0, again.stdout
    # nothing outside moved or changed; nothing of it inside
    assert (outside / "secret.txt").read_text().strip() == SECRET
    assert store_bytes_contain(root, SECRET.encode()) == []
    assert store_bytes_contain(root, b"root:x:0:0") == []
    assert os.path.islink(next(p for p in (root / "quarantine" / "moved").iterdir() if "~0.999999" in p.name))


@pytest.mark.slow  # several evo processes (5-9 s on a loaded 2-core machine)
@needs_no_bypass
def test_inspection_commands_show_broken_entries_and_go_on(local):
    store, root, outside = local
    plant_everything(store, root, outside)
    status = json.loads(run_evo("status", str(root), "--json").stdout)  # before `best` quarantines any
    assert status["broken"] >= 4 and status["best"]["fitness"] < 0.9, status["broken_entries"]
    for args in (("status",), ("status", "--json"), ("best",), ("lineage", "best"), ("audit", "--json")):
        done = run_evo(*args[:1], str(root), *args[1:])
        assert "Traceback" not in done.stderr, (args, done.stderr[-2000:])
        assert done.returncode in ((0, 1) if args[0] == "audit" else (0,)), (args, done.stderr[-1000:])
        assert "1.0000" not in done.stdout and SECRET not in done.stdout
    # the planted history record whose only fault is its DNA: a death like any other to the
    # audit (which never reads a DNA), corrupt to evo check (which validates every DNA)
    audit = json.loads(run_evo("audit", str(root), "--json").stdout)
    assert audit["violations"] == [] and audit["unreadable_history"] == 0, audit["violations"]
    check = json.loads(run_evo("check", str(root), "--json").stdout)
    assert any(p.startswith("corrupt: history/") and "DNA does not validate" in p for p in check["problems"]), \
        check["problems"]


@needs_no_bypass
def test_repairs_the_store_refuses_are_reported(local):
    store, root, outside = local
    publish_random(store, np.random.default_rng(5))
    os.symlink(outside / "secret.txt", root / "alive" / alive_name(0.9))
    os.chmod(root / "alive", 0o555)
    try:
        done = run_evo("check", str(root), "--repair")
    finally:
        os.chmod(root / "alive", 0o755)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "could not move" in done.stdout and "Permission denied" in done.stdout


@needs_no_bypass
def test_an_unreadable_commit_is_quarantined_by_moving_it(local):
    store, root, _ = local
    info, _, _ = publish_random(store, np.random.default_rng(6))
    os.chmod(root / info.key, 0)
    code = ("import sys, json, storage\n"
            "s = storage.open_store(sys.argv[1])\n"
            "(info,) = s.population.list_alive()\n"
            "print(json.dumps([s.population.read_individual(info) is None, s.population.list_alive() == []]))\n")
    done = subprocess.run([*WITHOUT_BYPASS, sys.executable, "-c", code, str(root)], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout) == [True, True], done.stderr
    assert "permission denied" in done.stderr and done.stderr.count("quarantined") == 1
    (record,) = store.history.list_quarantine()
    assert record["commit"] is None and record["moved_to"].startswith("quarantine/moved/")
    assert stat.S_IMODE(os.lstat(root / record["moved_to"]).st_mode) == 0  # as it was


@needs_no_bypass
def test_best_on_a_store_it_cannot_write_skips_a_broken_top_entry(local):
    store, root, _ = local
    rng = np.random.default_rng(7)
    good = publish_random(store, rng, fitness=0.5)[0]
    broken = publish_random(store, rng, fitness=0.9)[0]
    os.chmod(root / broken.key, 0)
    for folder in ("alive", "quarantine", "history"):
        (root / folder).mkdir(exist_ok=True)
        os.chmod(root / folder, 0o555)
    try:
        done = run_evo("best", str(root), "--json")
    finally:
        for folder in ("alive", "quarantine", "history"):
            os.chmod(root / folder, 0o755)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["id"] == good.id
    assert "could not quarantine" in done.stderr and "Traceback" not in done.stderr
    assert (root / broken.key).exists()    # left where it was: nothing written


def test_status_lists_foreign_entries_among_the_broken(local):
    store, root, outside = local
    publish_random(store, np.random.default_rng(8))
    os.symlink(outside / "secret.txt", root / "alive" / alive_name(0.99))
    os.symlink(outside, root / "history" / "20261130T000000.000000Z-00000001.json")
    status = json.loads(run_evo("status", str(root), "--json").stdout)
    foreign = [b for b in status["broken_entries"] if "symbolic link" in b["problem"]]
    assert len(foreign) == 2 and status["alive"] == 1


def test_plot_refuses_an_output_folder_that_is_not_there_before_writing(local, tmp_path):
    store, root, _ = local
    publish_random(store, np.random.default_rng(9))
    done = run_evo("plot", str(root), "-o", str(tmp_path / "ok.png"), "--arch", str(tmp_path / "nope" / "a.png"))
    assert done.returncode == 2 and "does not exist" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "ok.png").exists()

"""Hand-corrupted individuals are quarantined with a reason, logged once, and skipped; they
never crash a reader or a worker. On memory, local and GCS-emulator stores."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

import dna
import storage
from helpers_store import publish_random, referenced_payloads, start_helper, weights_blob
from storage.records import dna_hash


def _commit(store, info):
    return json.loads(store.backend.read(info.key))


def _rewrite(store, info, change, rehash=False):
    commit = _commit(store, info)
    change(commit)
    if rehash:
        commit["dna_hash"] = dna_hash(commit["dna"])
    store.backend.write(info.key, json.dumps(commit).encode())


def _payload(store, info):
    return _commit(store, info)["payload"]


def _add_back_edge(c):
    c["dna"]["edges"].append({"id": 3, "src": 1, "dst": 0, "kind": "identity"})
    c["dna"]["next_id"] = 4


def _edit_weights(store, info, edit):
    payload = _payload(store, info)
    store.backend.write(payload, edit(store.backend.read(payload)))


def _flip_last_byte(blob):
    return blob[:-1] + bytes([blob[-1] ^ 1])


def _garbage_weights_with_matching_checksum(store, info):
    import hashlib
    garbage = b"\x00" * 40
    store.backend.write(_payload(store, info), garbage)
    _rewrite(store, info, lambda c: c.update(payload_sha256=hashlib.sha256(garbage).hexdigest(),
                                             payload_size=len(garbage)))


def _field(**changes):
    return lambda s, i: _rewrite(s, i, lambda c: c.update(changes))


def _dna(change, rehash=True):
    return lambda s, i: _rewrite(s, i, lambda c: change(c["dna"]), rehash=rehash)


CORRUPTIONS = {  # case: (how to corrupt (store, info), what the reason must say)
    "commit is not JSON": (lambda s, i: s.backend.write(i.key, b'{"schema": 1, '), "not valid JSON"),
    "commit is not UTF-8": (lambda s, i: s.backend.write(i.key, b"\xff\xfe"), "not valid JSON"),
    "commit has NaN": (lambda s, i: s.backend.write(i.key, s.backend.read(i.key).replace(
        b'"fitness":', b'"fitness":NaN,"x":')), "not valid JSON"),
    "unknown commit schema": (_field(schema=99), "unknown commit schema 99"),
    "unknown commit field": (_field(pickle="x"), "unknown field"),
    "commit field missing": (lambda s, i: _rewrite(s, i, lambda c: c.pop("worker")), "missing field 'worker'"),
    "DNA does not parse": (_dna(lambda d: d["edges"][0].update(kind="teleport")),
                           "DNA does not validate: edge #0 has unknown kind"),
    "DNA has a cycle": (lambda s, i: _rewrite(s, i, _add_back_edge, rehash=True), "DNA does not validate"),
    "unknown DNA schema": (_dna(lambda d: d.update(schema=7)), "unknown DNA schema version 7"),
    "unknown DNA kind": (_dna(lambda d: d.update(kind="teleport")), "unknown DNA kind 'teleport'"),
    "DNA edited after hashing": (_dna(lambda d: d.update(learning_rate=0.2), rehash=False),
                                 "dna_hash does not match"),
    "weights truncated": (lambda s, i: _edit_weights(s, i, lambda b: b[:50]), "weights are truncated (50 of"),
    "weights flipped": (lambda s, i: _edit_weights(s, i, _flip_last_byte), "sha256"),
    "weights missing": (lambda s, i: s.backend.delete(_payload(s, i)), "weights are missing"),
    "weights not safetensors": (_garbage_weights_with_matching_checksum, "not valid safetensors"),
    "payload key escapes": (_field(payload="../../etc/passwd"), "bad payload key"),
    "id differs from name": (_field(id="20200101T000000.000000Z-00000000"), "does not match its name"),
    "fitness differs from name": (_field(fitness=0.99), "fitness 0.99 does not match"),
}


@pytest.fixture
def population(store_url):
    store = storage.open_store(store_url)
    store.runinfo.init_config("{}")
    rng = np.random.default_rng(0)
    infos = [publish_random(store, rng, fitness=f)[0] for f in (0.1, 0.4, 0.7)]
    return store, infos


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_individual_is_quarantined_with_its_reason(population, case, caplog):
    store, (healthy1, victim, healthy2) = population
    corrupt, reason = CORRUPTIONS[case]
    corrupt(store, victim)

    before = store.check(grace_seconds=0, deep=True)  # check sees it without touching it
    assert not before.ok and before.corrupt + before.torn == 1, before.problems
    assert victim in store.population.list_alive()

    with caplog.at_level(logging.DEBUG, logger="evo.storage"):
        assert store.population.read_individual(victim, bounds=dna.DEFAULT_BOUNDS) is None
        other = storage.open_store(store.url)
        assert other.population.read_individual(victim) is None  # a second reader: gone, not re-logged
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and victim.id in warnings[0].getMessage()
    assert reason in warnings[0].getMessage()

    assert store.population.list_alive() == [healthy1, healthy2]
    (q,) = store.history.list_quarantine()
    assert q["id"] == victim.id and reason in q["reason"] and q["alive_key"] == victim.key
    for h in (healthy1, healthy2):
        assert store.population.read_individual(h) is not None
    after = store.check(grace_seconds=0)
    assert after.ok and after.quarantined == 1, after.problems
    assert set(store.backend.list("payload")) == referenced_payloads(store)


@pytest.mark.parametrize("case", ["commit is not JSON", "DNA has a cycle", "weights truncated"])
def test_check_repair_quarantines_corrupt_individuals(population, case):
    store, (healthy1, victim, healthy2) = population
    CORRUPTIONS[case][0](store, victim)
    report = store.check(repair=True, grace_seconds=0)
    assert report.ok and report.quarantined == 1 and report.alive == 2, report.problems
    assert store.population.list_alive() == [healthy1, healthy2]
    assert CORRUPTIONS[case][1] in store.history.list_quarantine()[0]["reason"]


def test_kill_of_a_corrupt_individual_quarantines_it(population):
    store, (_, victim, _) = population
    store.backend.write(victim.key, b"garbage")
    assert store.population.kill(victim, worker="w") is False
    assert [q["id"] for q in store.history.list_quarantine()] == [victim.id]
    assert store.history.read_history() == []


def test_run_bounds_are_enforced_when_given(population):
    store, (_, victim, _) = population
    tight = dna.Bounds(max_learning_rate=1e-3, min_learning_rate=1e-4)
    assert store.population.read_individual(victim) is not None  # structure only: fine
    assert store.population.read_individual(victim, bounds=tight) is None
    assert "outside bounds" in store.history.list_quarantine()[0]["reason"]


def test_other_dna_kinds_go_through_the_given_validator(store_url):
    store = storage.open_store(store_url)
    rng = np.random.default_rng(1)
    seen = []

    def validate_nasnet(d):
        seen.append(d["kind"])
        if d.get("cells") != 5:
            raise ValueError("nasnet DNA needs 5 cells")

    good = store.population.publish({"kind": "nasnet", "schema": 1, "cells": 5}, weights_blob(rng), parent=None,
                         mutation="initial", fitness=0.5, worker="w", metrics={})
    bad = store.population.publish({"kind": "nasnet", "schema": 1, "cells": 4}, weights_blob(rng), parent=None,
                        mutation="initial", fitness=0.6, worker="w", metrics={})
    assert store.population.read_individual(good, dna_validator=validate_nasnet).dna["cells"] == 5
    assert store.population.read_individual(bad, dna_validator=validate_nasnet) is None
    assert store.history.list_quarantine()[0]["reason"] == "DNA does not validate: nasnet DNA needs 5 cells"
    assert seen == ["nasnet", "nasnet"]
    # the store-wide validator applies too, and large_scale DNA still gets its own checks
    with_validator = storage.open_store(store_url, dna_validator=validate_nasnet)
    assert with_validator.population.read_individual(good) is not None


def test_unreadable_history_and_heartbeat_records_are_skipped(population, caplog):
    store, (a, b, _) = population
    store.population.kill(a, worker="w")
    store.population.kill(b, worker="w")
    store.backend.write(f"history/{b.id}.json", b"\x00garbage")
    store.runinfo.heartbeat("ok-worker", {})
    store.backend.write("workers/bad.json", b"[1, 2")
    with caplog.at_level(logging.WARNING, logger="evo.storage"):
        assert [h["id"] for h in store.history.read_history()] == [a.id]
    assert [w["worker"] for w in store.runinfo.list_workers()] == ["ok-worker"]
    assert any(b.id in r.getMessage() for r in caplog.records)


def test_stray_files_are_reported_and_moved_aside_never_deleted(population):
    store, _ = population
    store.backend.write("alive/notes.txt", b"hello")
    store.backend.write("payload/backup.bin", b"x")
    assert store.check(grace_seconds=0).stray == 2          # without --repair: reported only
    assert store.backend.read("alive/notes.txt") == b"hello"
    report = store.check(repair=True, grace_seconds=0)
    assert report.ok and report.stray == 2 and report.repaired.get("stray") == 2   # found, and repaired
    moved = {name: store.backend.read(f"quarantine/moved/{name}")
             for name in store.backend.list("quarantine/moved")}
    assert sorted(moved.values()) == [b"hello", b"x"]        # kept as they were, out of the way
    assert store.check(grace_seconds=0).stray == 0
    assert len(store.population.list_alive()) == 3


@pytest.mark.slow  # real worker processes
def test_workers_keep_running_among_corrupt_individuals(tmp_path):
    """Two real worker processes run tournaments over a population with corrupt members."""
    url = str(tmp_path / "pop")
    store = storage.open_store(url)
    store.runinfo.init_config("{}")
    rng = np.random.default_rng(3)
    infos = [publish_random(store, rng)[0] for _ in range(14)]
    broken = {}
    for info, case in zip(infos[::2], ["commit is not JSON", "DNA has a cycle", "weights truncated",
                                       "weights missing", "unknown commit schema", "weights flipped",
                                       "payload key escapes"]):
        CORRUPTIONS[case][0](store, info)
        broken[info.id] = case
    workers = [start_helper("helpers_store_crash.py", "worker", url, str(seed), "40") for seed in (1, 2)]
    outputs = [w.communicate(timeout=120) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
        counts = json.loads(out)
        assert counts["steps"] > 0
    logged = re.findall(r"quarantined individual (\S+):", "".join(err for _, err in outputs))
    assert len(logged) == len(set(logged))  # each logged once, across both processes
    assert set(logged) <= set(broken)
    assert sum(json.loads(out)["unreadable"] for out, _ in outputs) >= 1
    # Whatever the workers did not stumble on, check --repair quarantines; nothing else is.
    store.check(repair=True, grace_seconds=0)
    assert {q["id"] for q in store.history.list_quarantine()} == set(broken)
    assert store.check(grace_seconds=0).ok
    for info in store.population.list_alive():
        assert store.population.read_individual(info) is not None

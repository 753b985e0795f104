"""The controller's ``policy/`` room against a hostile store (issue 23): a deeply nested
version, a well-formed version with a huge reward baseline, a valid version numbered
9999999999, and a symlink/FIFO at the next version number.

Fast units (memory:// and local stores, a strategy in this process) for the quick tier; then
each row with real RL worker processes without root's permission bypass: the workers keep
publishing and learning past the planted entry, no command prints a traceback or grows past
500 MB, ``check`` names the entry and exits 1, and ``check --repair`` moves it aside without
touching the chain's head. One row also runs on the GCS emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import storage
from evo.config import RunConfig
from evo.spaces import make_space
from evo.strategies import Proposal, Published, make_strategy
from evo.strategies.controller_settings import ControllerSettings
from evo.strategies.policy_chain import clusters, first_number, next_number
from evo.strategies.policy_report import read_policy_report
from evo.strategies.policy_state import MAX_PARAM, Intake, PolicyError, check_bounds, new_id, parse_policy
from helpers_hostile import (
    CAN_DROP_BYPASS, NO_BYPASS_REASON, SECRET, evo_cmd, peak_rss_mib, store_bytes_contain, write_secret,
)

NESTED = b"[" * 150_000 + b"]" * 150_000      # 300 KB of nesting
FAR = 9_999_999_999
MAX_MIB = 500


def version_name(v: int) -> str:
    return f"v{v:010d}.json"


# ----- planting (one function per row; each returns the planted name) -----

def plant_nested(store, root: Path | None, head) -> str:
    store.backend.write(f"policy/{version_name(head.version + 1)}", NESTED)
    return version_name(head.version + 1)


def plant_huge_baseline(store, root: Path | None, head) -> str:
    d = json.loads(head.to_bytes())
    d.update(version=head.version + 1, parent=head.version, parent_id=head.id, id=new_id(),
             baseline_num=1e308, baseline_den=1.0)
    store.backend.write(f"policy/{version_name(head.version + 1)}", json.dumps(d).encode())
    return version_name(head.version + 1)


def plant_far_number(store, root: Path | None, head) -> str:
    d = json.loads(head.to_bytes())
    d.update(version=FAR, parent=FAR - 1, parent_id=new_id(), id=new_id())
    store.backend.write(f"policy/{version_name(FAR)}", json.dumps(d).encode())
    return version_name(FAR)


def plant_symlink(store, root: Path | None, head) -> str:
    outside = root.parent / "outside"
    write_secret(outside)
    os.symlink(outside / "secret.txt", root / "policy" / version_name(head.version + 1))
    os.mkfifo(root / "policy" / version_name(head.version + 2))
    return version_name(head.version + 1)


# ----- fast units: a strategy in this process -----

def setup_run(url: str, selection: str = "rl", batch_size: int = 1):
    config = RunConfig(dataset="synthetic", search_space="nasbench201", population_size=4, selection=selection,
                       plugins={"controller": ControllerSettings(hidden_size=16, batch_size=batch_size)})
    store = storage.open_store(url)
    store.runinfo.init_config(config.to_json())
    space = make_space(config)
    return config, store.with_run(bounds=config.bounds, dna_validator=space.parse), space


def learn(strategy, space, n: int, rng=None) -> None:
    """``n`` updates, each from a fresh child of the current head."""
    rng = rng or np.random.default_rng(0)
    for _ in range(n):
        policy, _ = strategy.latest()
        choices, logp = strategy.model.sample(policy.params, rng)
        note = {"policy": strategy.name, "policy_version": policy.version, "policy_choices": list(choices),
                "policy_logp": logp}
        strategy.observe(Published(f"c-{uuid.uuid4().hex[:12]}", float(rng.uniform(0.2, 0.8)),
                                   space.from_decisions(choices), Proposal(note=note), {}, "w"))


def parse(strategy, data: bytes, version: int):
    return parse_policy(data, strategy=strategy.name, decisions=tuple(strategy.space.decisions),
                        shapes=strategy.shapes, version=version)


def unit_run(tmp_path, plant, local: bool = False):
    """A run with a head at version 3, ``plant`` applied, then a fresh strategy learning 5
    more updates; returns (store, head before, planted name, fresh strategy, space, config)."""
    root = tmp_path / "pop"
    config, store, space = setup_run(str(root) if local else f"memory://hostile-policy-{uuid.uuid4().hex}")
    first = make_strategy(config, store.policy, space)
    learn(first, space, 3)
    head, _ = first.latest()
    planted = plant(store, root, head)
    fresh = make_strategy(config, store.policy, space)   # nothing cached
    learn(fresh, space, 5, np.random.default_rng(1))
    return store, head, planted, fresh, space, config


def test_nested_version_is_one_unusable_entry(tmp_path):
    store, head, planted, fresh, _, config = unit_run(tmp_path, plant_nested)
    with pytest.raises(PolicyError, match="nested deeper"):
        parse(fresh, NESTED, head.version + 1)
    now, _ = fresh.latest()
    assert now.version == head.version + 6 and now.updates == head.updates + 5
    report = read_policy_report(store.policy, config)
    assert report.unusable == (head.version + 1,) and report.latest.version == now.version
    assert any(p.startswith(f"policy version {head.version + 1}: ") and "nested deeper" in p for p in report.problems)


def test_out_of_bounds_versions_are_unusable(tmp_path):
    store, head, planted, fresh, _, config = unit_run(tmp_path, plant_huge_baseline)
    now, _ = fresh.latest()
    assert now.version == head.version + 6 and now.updates == head.updates + 5
    assert now.baseline is not None and abs(now.baseline) <= 1
    assert all(np.isfinite(a).all() for a in now.params.values())
    report = read_policy_report(store.policy, config)
    assert report.unusable == (head.version + 1,)
    assert any("reward baseline" in p for p in report.problems)
    base = json.loads(head.to_bytes())
    for change in ({"baseline_num": 2e9, "baseline_den": 1.0}, {"baseline_num": 1e-3, "baseline_den": 0.0},
                   {"updates": 256 * head.version + 1}, {"steps": 10**6}, {"version": 200, "parent": 100}):
        with pytest.raises(PolicyError):
            parse(fresh, json.dumps({**base, **change}).encode(), change.get("version", head.version))
    big = {k: np.full_like(a, MAX_PARAM * 2) for k, a in head.params.items()}
    with pytest.raises(PolicyError, match="beyond"):
        check_bounds(replace(head, params=big))
    lopsided = {k: (np.full_like(a, 1.0) if k.startswith("m:") else np.zeros_like(a)) for k, a in head.moments.items()}
    with pytest.raises(PolicyError, match="out of proportion"):
        check_bounds(replace(head, moments=lopsided))
    future = replace(head, recent=(replace(head.recent[-1], time=store.policy.now() + 3600),))
    with pytest.raises(PolicyError, match="out of bounds"):
        check_bounds(future, now=store.policy.now())


def test_a_writer_never_publishes_an_update_out_of_bounds(tmp_path, caplog):
    config, store, space = setup_run(f"memory://hostile-policy-{uuid.uuid4().hex}", selection="reinforce")
    strategy = make_strategy(config, store.policy, space)
    learn(strategy, space, 2)
    before = store.policy.policy_versions()
    strategy.gradient = lambda *a: {k: np.full(s, np.inf) for k, s in strategy.shapes.items()}
    learn(strategy, space, 1)
    assert store.policy.policy_versions() == before
    assert "skipped: it would be out of bounds" in caplog.text
    del strategy.gradient
    learn(strategy, space, 1)   # the next child's update lands
    assert store.policy.policy_versions()[-1] == before[-1] + 1


def test_a_version_numbered_far_past_the_chain_is_ignored(tmp_path):
    store, head, planted, fresh, _, config = unit_run(tmp_path, plant_far_number)
    parse(fresh, store.policy.read_policy(FAR), FAR)   # well-formed, in bounds
    now, number = fresh.latest()
    assert now.version == head.version + 5 and now.updates == head.updates + 5 and number == now.version + 1
    report = read_policy_report(store.policy, config)
    assert report.beyond == (FAR,) and report.unusable == () and report.latest.version == now.version
    assert any(p.startswith(f"policy version {FAR}: beyond the chain") for p in report.problems)


def test_numbering_comes_from_the_chain():
    assert clusters([3, 4, 5, 60, 200, FAR - 1, FAR]) == [[3, 4, 5, 60], [200], [FAR - 1, FAR]]
    assert next_number(5, {3, 4, 5, 6, 7}) == 8 and next_number(5, set(range(5, 70))) is None
    assert next_number(FAR - 1, set()) == FAR and next_number(FAR, set()) is None
    assert first_number([], set()) == 0 and first_number([7, 8, FAR], {9}) == 10 and first_number([FAR], set()) == 0


def test_a_writer_moves_a_foreign_entry_at_its_next_number_aside(tmp_path):
    store, head, planted, fresh, _, config = unit_run(tmp_path, plant_symlink, local=True)
    now, _ = fresh.latest()
    assert now.version == head.version + 5 and now.updates == head.updates + 5
    moved = os.listdir(tmp_path / "pop" / "quarantine" / "moved")
    assert len(moved) == 2
    assert store_bytes_contain(tmp_path / "pop", SECRET.encode()) == []
    # where the store refuses the move, the writer skips past the number
    os.symlink("/etc/passwd", tmp_path / "pop" / "policy" / version_name(now.version + 1))
    fresh.policy._backend.move_aside = lambda *a, **k: (_ for _ in ()).throw(PermissionError("read-only"))
    learn(fresh, fresh.space, 2)
    after, _ = fresh.latest()
    assert after.version == now.version + 3 and after.updates == now.updates + 2
    assert os.path.islink(tmp_path / "pop" / "policy" / version_name(now.version + 1))


def test_hostile_intake_slots_cost_only_themselves(tmp_path, capsys):
    """A version's intake planted with a record of another version of that number, nested
    JSON, a symlink to a secret, a FIFO, out-of-range choices, and a well-formed record past
    the minibatch's slots: writers take their children in past them and learn from none of
    them; check names each one and --repair moves them aside."""
    from launch.cli import main

    root = tmp_path / "pop"
    config, store, space = setup_run(str(root), batch_size=6)
    learn(make_strategy(config, store.policy, space), space, 6)
    head = parse(make_strategy(config, store.policy, space), store.policy.read_policy(1), 1)
    assert head.updates == 6 and not store.policy.intake().get(1)
    planted = Intake("c-planted", (0,) * 6, -1.0, 1, 0.5, "w", store.policy.now())
    slot = {k: root / "policy" / f"v0000000001-{k:03d}.json" for k in range(8)}
    slot[0].write_bytes(planted.to_bytes("rl", 1, 0, new_id()))
    slot[1].write_bytes(b"[" * 1000 + b"]" * 1000)
    os.symlink(write_secret(tmp_path / "outside"), slot[2])
    os.mkfifo(slot[3])
    out_of_range = json.loads(planted.to_bytes("rl", 1, 4, head.id))
    slot[4].write_text(json.dumps({**out_of_range, "choices": [9] * 6}))
    slot[7].write_bytes(planted.to_bytes("rl", 1, 7, head.id))
    fresh = make_strategy(config, store.policy, space)
    learn(fresh, space, 12, np.random.default_rng(1))
    now, _ = fresh.latest()
    report = read_policy_report(store.policy, config)
    # every child was taken in (the symlink and the FIFO were moved aside for two of them),
    # the planted records were learned from by no version
    assert now.updates + report.waiting == head.updates + 12 and now.version >= 3
    assert "c-planted" not in {u.child for v in range(1, now.version + 1)
                               for u in parse(fresh, store.policy.read_policy(v), v).recent}
    assert store_bytes_contain(root, SECRET.encode()) == []
    assert sorted(report.bad_slots) == [(1, 0), (1, 1), (1, 4), (1, 7)], report.problems
    url = str(root)
    assert main(["check", url]) == 1
    out = capsys.readouterr().out
    for k, why in ((0, "taken in on another version"), (1, "nested deeper"), (4, "choices are not"),
                   (7, "past the minibatch")):
        assert f"policy intake slot {k} of version 1: " in out and why in out, out
    assert main(["check", url, "--repair"]) == 0
    capsys.readouterr()
    assert main(["check", url]) == 0, capsys.readouterr().out
    assert store.policy.intake()[1] == [2, 3]   # the two children taken in where the symlink and FIFO were


# ----- each row with real RL workers, no permission bypass -----

def _evo(*args: str, timeout: float = 180) -> tuple[subprocess.CompletedProcess, float]:
    done, mib = peak_rss_mib(evo_cmd(*args), timeout=timeout)
    assert "Traceback" not in done.stderr + done.stdout, (args, done.stderr[-3000:])
    assert mib < MAX_MIB, (args, mib)
    print(f"peak memory of evo {args[0]}: {mib:.0f} MiB")
    return done, mib


def _workers(url: str, n: int, count: int = 2) -> str:
    """``count`` real worker processes, each publishing ``n`` individuals; their output."""
    results: list = [None] * count

    def run(i: int) -> None:
        results[i] = _evo("worker", url, "--quiet", "--max-individuals", str(n), "--index", str(i))[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for done in results:
        assert done is not None and done.returncode == 0, done and done.stderr[-3000:]
    return "".join(d.stderr for d in results)


def _names(store) -> set[str]:
    """Every name in ``policy/``, objects and foreign entries alike."""
    return set(store.backend.list("policy")) | {f.name for f in store.backend.list_foreign("policy")}


def _report(url: str):
    store = storage.open_store(url)
    return store, read_policy_report(store.policy, RunConfig.from_json(store.runinfo.read_config()))


def _row(url: str, tmp_path: Path, plant, local: bool) -> None:
    _evo("init", url, "--dataset", "synthetic", "--search-space", "nasbench201", "-P", "4",
         "--synthetic-train-seconds", "0", "--selection", "rl", "--set", "controller.hidden_size=16",
         "--set", "controller.batch_size=2", "--set", "controller.keep_versions=3")
    _workers(url, 4)
    store, before = _report(url)
    head = before.latest
    planted = plant(store, tmp_path / "pop" if local else None, head)
    logs = _workers(url, 6)
    assert "lost races" not in logs and "would be out of bounds" not in logs
    _, after = _report(url)
    # the workers kept publishing and learning: every controller child was taken in (learned
    # from in a minibatch of 2, or waiting in the head's intake), past the planted entry
    assert after.latest.updates + after.waiting == head.updates + before.waiting + 12, (logs[-3000:], after)
    held = plant in (plant_nested, plant_huge_baseline)   # the planted number stays taken until repair
    assert after.latest.version == head.version + (after.latest.updates - head.updates) // 2 + held
    if plant is plant_far_number:
        assert FAR in store.policy.policy_versions()
    if plant is plant_symlink:   # the writer moved both aside
        assert store_bytes_contain(tmp_path / "pop", SECRET.encode()) == []
    if plant is not plant_far_number:   # gone (pruned as old, or moved aside): plant it again for check
        assert planted not in _names(store)
        planted = plant(store, tmp_path / "pop" if local else None, after.latest)
    # every view reads past it, in one line per problem
    status, _ = _evo("status", url, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["policy"]["version"] == after.latest.version
    assert _evo("status", url)[0].returncode == 0
    assert _evo("plot", url, "-o", str(tmp_path / "p.png"))[0].returncode == 0
    assert json.loads((tmp_path / "p.json").read_text())["policy"]["points"]
    assert _evo("lineage", url, "best", "--json")[0].returncode == 0
    assert _evo("report", url, "-o", str(tmp_path / "r.html"))[0].returncode == 0
    check, _ = _evo("check", url)
    named = f"policy/{planted}" if plant is plant_symlink else f"policy version {int(planted[1:11])}:"
    assert check.returncode == 1 and named in check.stdout, check.stdout
    head_key = f"policy/{version_name(after.latest.version)}"
    head_bytes = store.backend.read(head_key, 2**23)
    repair, _ = _evo("check", url, "--repair", "--json")
    assert repair.returncode == 0 and json.loads(repair.stdout)["ok"], repair.stdout[-3000:]
    assert planted not in _names(store)
    assert store.backend.read(head_key, 2**23) == head_bytes
    assert _evo("check", url)[0].returncode == 0
    _workers(url, 1, count=1)   # and a fresh worker goes on
    last = _report(url)[1]
    assert last.latest.updates + last.waiting == after.latest.updates + after.waiting + 1


@pytest.mark.slow
@pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
@pytest.mark.parametrize("plant", [plant_nested, plant_huge_baseline, plant_far_number, plant_symlink],
                         ids=["nested", "huge-baseline", "far-number", "symlink-and-fifo"])
def test_rl_workers_learn_past_a_planted_policy_entry(tmp_path, plant):
    _row(str(tmp_path / "pop"), tmp_path, plant, local=True)


@pytest.mark.slow
def test_gcs_rl_workers_ignore_a_version_numbered_far_past_the_chain(gcs_bucket_url, tmp_path):
    _row(gcs_bucket_url, tmp_path, plant_far_number, local=False)


def test_check_lists_foreign_entries_in_policy_and_repair_moves_them_aside(tmp_path, capsys):
    from launch.cli import main

    store, head, planted, fresh, _, config = unit_run(tmp_path, plant_far_number, local=True)
    now, _ = fresh.latest()
    policy_dir = tmp_path / "pop" / "policy"
    os.mkfifo(policy_dir / version_name(now.version + 1))
    (policy_dir / version_name(now.version + 2)).mkdir()
    os.symlink("/etc/passwd", policy_dir / "notes.txt")
    (policy_dir / "stray.bin").write_bytes(b"not a version")
    head_bytes = (policy_dir / version_name(now.version)).read_bytes()
    url = str(tmp_path / "pop")
    assert main(["check", url]) == 1
    out = capsys.readouterr().out
    for name in (version_name(now.version + 1), version_name(now.version + 2), "notes.txt", "stray.bin"):
        assert f"'policy/{name}' is " in out, out
    assert f"policy version {FAR}: beyond the chain" in out
    assert main(["check", url, "--repair"]) == 0, capsys.readouterr().out
    capsys.readouterr()
    assert sorted(os.listdir(policy_dir)) == [version_name(v) for v in range(now.version - 7, now.version + 1)]
    assert (policy_dir / version_name(now.version)).read_bytes() == head_bytes
    assert main(["check", url]) == 0

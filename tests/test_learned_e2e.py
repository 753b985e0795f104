"""The learned strategies end to end: real `evo` processes, SIGKILL at each step of a policy
update, a 16-worker chaos run, and what `evo status`, `plot` and `check` show of a policy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.chaos import ChaosSettings, run_chaos
from evo.config import RunConfig
from evo.strategies.policy_report import audit_policy
from helpers_store import REPO
from storage import open_store
from helpers_chaos import assert_run_is_whole


def evo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def init(url: str, *extra: str) -> None:
    proc = evo("init", url, "--dataset", "synthetic", "--search-space", "nasbench201", "-P", "4",
               "--synthetic-train-seconds", "0", *extra)
    assert proc.returncode == 0, proc.stderr


def audit(url: str) -> dict:
    store = open_store(url)
    return audit_policy(store, RunConfig.from_json(store.runinfo.read_config()))


@pytest.mark.slow  # processes killed mid-step
@pytest.mark.parametrize("point,lost", [("policy:before_intake", 1), ("policy:after_intake", 0),
                                        ("policy:before_create", 1), ("policy:after_create", 0)])
def test_a_worker_killed_at_any_step_of_an_update_leaves_the_policy_whole(tmp_path, point, lost):
    url = str(tmp_path / "pop")
    init(url, "--selection", "rl", "--set", "controller.batch_size=4")
    # the 3rd child taken into an intake, or the 2nd version made (from 3 slots and the killed
    # worker's own child): killed before it is written loses that child, after it loses nothing
    crashed = evo("worker", url, "--quiet", "--max-individuals", "20", "--crash-at", f"{point}#{3 if 'intake' in point else 2}")
    assert crashed.returncode == -9, crashed.stderr
    after_crash = audit(url)
    assert after_crash["problems"] == [] and after_crash["updates_missing"] == lost, after_crash
    assert evo("worker", url, "--quiet", "--max-individuals", "5").returncode == 0
    report = audit(url)
    assert report["problems"] == [] and report["updates_missing"] == lost
    assert report["updates"] + report["waiting"] == after_crash["updates"] + after_crash["waiting"] + 5
    assert report["updates"] == 4 * report["version"]   # every version learned from a whole minibatch
    check = evo("check", url, "--json", "--grace", "0")
    assert check.returncode == 0, check.stdout


@pytest.mark.slow  # real worker processes
def test_status_plot_and_check_show_the_policy(tmp_path):
    url = str(tmp_path / "pop")
    init(url, "--selection", "reinforce")
    assert evo("worker", url, "--quiet", "--max-individuals", "14").returncode == 0
    status = json.loads(evo("status", url, "--json").stdout)["policy"]
    assert status["strategy"] == "reinforce" and status["version"] == status["updates"] == 10
    assert len(status["recent_rewards"]) == 10 and status["problems"] == []
    text = evo("status", url).stdout
    assert "policy (reinforce): version 10 (8 kept), 10 children learned from, reward baseline" in text
    plot = evo("plot", url, "-o", str(tmp_path / "p.png"))
    assert plot.returncode == 0, plot.stderr
    curve = json.loads((tmp_path / "p.json").read_text())["policy"]
    assert len(curve["points"]) == 10 and len(curve["moving_mean"]) == 10
    assert [p["version"] for p in curve["points"]] == sorted(p["version"] for p in curve["points"])
    # a planted, corrupt newest version: status and check say so in one line; workers go on past it
    (tmp_path / "pop" / "policy" / "v0000000011.json").write_text('{"kind": "evo-policy"}')
    check = evo("check", url)
    assert check.returncode == 1 and "policy: policy version 11: unknown policy schema None" in check.stdout
    assert evo("worker", url, "--quiet", "--max-individuals", "2").returncode == 0
    status = json.loads(evo("status", url, "--json").stdout)["policy"]
    assert status["version"] == 13 and status["updates"] == 12
    # a planted version numbered near the end of the numbering would stop the policy from
    # advancing: --repair moves unusable versions aside
    (tmp_path / "pop" / "policy" / "v9999999999.json").write_text("garbage")
    repair = evo("check", url, "--repair", "--json")
    assert repair.returncode == 0 and json.loads(repair.stdout)["repaired"]["unusable policy versions"] == 2
    assert evo("check", url).returncode == 0
    assert evo("worker", url, "--quiet", "--max-individuals", "1").returncode == 0
    assert json.loads(evo("status", url, "--json").stdout)["policy"]["version"] == 14


@pytest.mark.parametrize("args,message", [
    (("--selection", "rl", "--search-space", "large_scale"),
     "selection 'rl' learns a policy over a search space's decisions; search space 'large_scale' has none"),
    (("--selection", "bandit"), "invalid choice: 'bandit'"),
])
def test_init_refuses_a_learned_strategy_where_it_cannot_work(tmp_path, args, message):
    proc = evo("init", str(tmp_path / "pop"), "--dataset", "synthetic", *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "pop").exists()


@pytest.mark.slow
def test_chaos_16_workers_with_the_rl_controller(tmp_path):
    report = run_chaos(ChaosSettings(workers=16, population=20, duration=12, train_seconds=0.2, kill_interval=0.5,
                                     stagger=4, seed=5, selection="rl", search_space="nasbench201"), tmp_path)
    assert_run_is_whole(report, every_kill_window_has_births=False)
    policy = report["policy"]
    assert policy["problems"] == [] and policy["versions_kept"] >= 2
    assert policy["controller_children"] > 30
    # only children whose worker was killed after publishing and before its version landed
    # miss their update; every other one is in the chain exactly once
    assert 0 <= policy["updates_missing"] <= report["kills"]
    # one version per minibatch of 20 (a slot withdrawn mid-read can make one smaller)
    assert policy["version"] >= 1 and policy["updates"] <= 20 * policy["version"]
    assert 0 <= policy["waiting"] < 20

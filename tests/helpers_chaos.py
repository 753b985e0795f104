"""What every chaos run (bench.chaos's report) must show, shared by test_chaos and test_learned_e2e."""

from __future__ import annotations


def assert_run_is_whole(report: dict, every_kill_window_has_births: bool = True) -> None:
    s = report["settings"]
    assert report["kills"] > 0, "the harness killed nothing"
    assert report["born"] > s["population"], "the run never got past seeding"
    assert report["torn"] == 0 and report["corrupt"] == 0
    assert report["lost"] == 0 and report["double_kills"] == 0 and report["phantom_kills"] == 0
    assert report["missing_parents"] == 0
    assert report["unexpected_worker_exits"] == []
    lo, hi = report["population"]["bounds"]
    assert lo <= report["population"]["reconstructed_min"] <= report["population"]["reconstructed_max"] <= hi
    assert report["check_after_repair_ok"], report["check_before_repair"]
    assert report["ok"], report["violations"]
    # Liveness, not speed: a stale lock or claim would stop births for its whole timeout
    # (Optuna's journal stalls 30 s); with sub-second children any gap over 10 s is a stall.
    if every_kill_window_has_births:
        assert report["throughput"]["kill_windows_without_births"] == 0
    assert report["throughput"]["max_gap_between_births_s"] < 10

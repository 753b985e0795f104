"""``python -m bench search --space nasbench201``: its statistics on known numbers, and its
small mode end to end (real worker processes on local stores, CIFAR-10's table), whose JSON
keeps the per-seed values and every run's cells so the summary can be recomputed."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:   # bench/ is run from the checkout, not installed
    sys.path.insert(0, str(REPO))

from bench import __main__ as cli  # noqa: E402
from bench import search_nb201 as nb  # noqa: E402

tables = pytest.importorskip("evo.data.nasbench201_tables")
try:
    tables.table_path("nb201-cifar10")
except tables.TableError as exc:
    pytest.skip(f"{exc}", allow_module_level=True)


def test_paired_test_on_known_numbers():
    t = nb.paired_test([0.5 + i / 100 for i in range(10)], [0.5] * 10)
    assert (t["wins"], t["ties"], t["losses"]) == (9, 1, 0)
    assert t["sign_test_p"] == pytest.approx(2 / 2 ** 9)          # exact: 9 of 9 non-ties one way
    assert t["wilcoxon_p"] == pytest.approx(0.00390625)           # scipy's exact two-sided, n=9
    assert t["mean_diff"] == pytest.approx(0.045)
    even = nb.paired_test([1, 0, 1, 0], [0, 1, 0, 1])
    assert even["sign_test_p"] == 1.0 and even["mean_diff"] == 0


def test_the_curve_follows_the_best_by_validation_cell_not_the_best_cell():
    means = {"a": 0.90, "b": 0.80, "c": 0.95}.__getitem__
    # b looks best (a lucky seed) though its mean is worst; ties keep the earlier cell
    assert nb.curve([("a", 0.91), ("b", 0.93), ("c", 0.93), ("c", 0.92)], means) == [0.90, 0.80, 0.80, 0.80]


def test_small_runs_budgets_at_least_twice_the_population():
    small = [nb.scheme_for(s, 24) for s in nb.SCHEMES]
    assert all(s.population_size <= 12 and s.tournament_size <= s.population_size for s in small)
    assert [nb.scheme_for(s, 110) for s in nb.SCHEMES] == list(nb.SCHEMES)


def test_cli_refuses_options_that_do_not_apply(capsys):
    assert cli.main(["search", "--space", "nasbench201", "--steps", "5"]) == 2
    assert "do not apply to --space nasbench201" in capsys.readouterr().err
    assert cli.main(["search", "--workers", "2"]) == 2
    assert "only to --space nasbench201" in capsys.readouterr().err
    assert cli.main(["search", "--space", "nasbench201", "--seeds", "1"]) == 2
    assert "--seeds must be at least 2" in capsys.readouterr().err


@pytest.mark.slow  # a small benchmark run (~20-50 s)
def test_small_mode_end_to_end(tmp_path, capsys):
    assert cli.main(["search", "--space", "nasbench201", "--mode", "small", "--out", str(tmp_path)]) == 0
    assert "bench search: NAS-Bench-201" in capsys.readouterr().out
    doc = json.loads((tmp_path / "search-nasbench201-small-cpu.json").read_text())
    assert (tmp_path / "search-nasbench201-small-cpu.png").stat().st_size > 1000
    assert doc["summary"] in (tmp_path / "search-nasbench201-small-cpu.md").read_text()
    runs, summary = doc["results"]["runs"], doc["results"]["summary"]["nb201-cifar10"]
    names = list(nb.MODES["small"].schemes)
    assert sorted((r["scheme"], r["seed"]) for r in runs) == sorted((n, s) for n in names for s in (0, 1))
    table = tables.load_table("nb201-cifar10")
    key, best = table.best()
    assert summary["table_best_cell"] == key and summary["table_best_mean_val_acc"] == pytest.approx(best)
    for name in names:
        e = summary["schemes"][name]
        finals = []
        for seed in (0, 1):
            (r,) = [r for r in runs if r["scheme"] == name and r["seed"] == seed]
            assert len(r["cells"]) == len(r["fitness_seen"]) == 24
            for cell, seen in zip(r["cells"], r["fitness_seen"]):
                assert seen in table.trials(cell)[0]       # the search saw one recorded seed's accuracy
            chosen = r["cells"][r["fitness_seen"].index(max(r["fitness_seen"]))]
            finals.append(table.mean_val_acc(chosen))       # recomputed from the JSON alone
        assert e["final_mean_val_acc_seeds"] == pytest.approx(finals)
        assert e["regret_seeds"] == pytest.approx([best - f for f in finals])
        assert e["curve_mean"][-1] == pytest.approx(sum(finals) / 2) and len(e["curve_mean"]) == 24
        if name != "random":
            assert set(e["vs_random"]) >= {"wilcoxon_p", "sign_test_p", "mean_diff"}
            assert 0 <= e["vs_random"]["sign_test_p"] <= 1 and not math.isnan(e["vs_random"]["mean_diff"])
    random_runs = [r for r in runs if r["scheme"] == "random"]
    assert len({tuple(r["cells"]) for r in random_runs}) == 2


def test_in_process_runs_are_kept_in_the_runs_file_and_not_run_again(tmp_path):
    first = nb.run("small", tmp_path, seeds=2, cells=8, schemes=("random", "rl-ppo-1w"), in_process=True)
    runs_file = tmp_path / "search-nasbench201-small-runs.jsonl"
    lines = runs_file.read_text().splitlines()
    assert sorted((json.loads(x)["scheme"], json.loads(x)["seed"]) for x in lines) == \
        [("random", 0), ("random", 1), ("rl-ppo-1w", 0), ("rl-ppo-1w", 1)]
    again = nb.run("small", tmp_path, seeds=2, cells=8, schemes=("random", "rl-ppo-1w"), in_process=True)
    assert runs_file.read_text().splitlines() == lines   # nothing ran again
    assert again["results"]["summary"] == first["results"]["summary"]
    more = nb.run("small", tmp_path, seeds=1, first_seed=2, cells=8, schemes=("random", "rl-ppo-1w"),
                  in_process=True, report_only=True)
    assert more["settings"]["seeds"] == [0, 1]   # report-only: the seeds every scheme finished

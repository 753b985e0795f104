"""The Python API (``evo.open``, ``evo.init``, ``evo.launch``; ``launch/api.py``): the same
answers and the same one-line errors as the commands, on real runs and real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import evo
from evo.errors import EvoError, SettingsError
from helpers_cli import beats, evo as evo_cli, wait_for
from helpers_hostile import CAN_DROP_BYPASS, NO_BYPASS_REASON, SECRET, WITHOUT_BYPASS, plant_everything, write_secret

REPO = Path(__file__).resolve().parent.parent


def _is_evo_error(exc: BaseException) -> bool:
    """A real subclass of EvoError (``except evo.EvoError`` catches it), not only a registered one."""
    return EvoError in type(exc).__mro__


def _cli_error(*args: str) -> str:
    done = evo_cli(*args)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip()


# ----- import weight -----

def test_import_evo_imports_neither_torch_nor_pandas_nor_the_api():
    code = ("import sys, evo\n"
            "heavy = lambda: sorted(m for m in ('torch', 'pandas', 'launch.api') if m in sys.modules)\n"
            "before = heavy()\n"
            "evo.open, evo.Run, evo.Model, evo.EvoError\n"
            "print(before, heavy())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "['launch.api']"]   # the API itself imports neither torch nor pandas
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        evo.nope


# ----- errors: the CLI's messages, one base class -----

@pytest.mark.parametrize("settings, argv", [
    ({"population_size": "x"}, ["-P", "x"]),                 # the parser's
    ({"population_size": 1}, ["-P", "1"]),                   # RunConfig's range check
    ({"selection": "nope"}, ["--selection", "nope"]),        # a choice
    ({"dataset": "cifar10=/no/such/dir"}, ["--dataset", "cifar10=/no/such/dir"]),   # the dataset's check
    ({"set": ["nasnet.nope=1"]}, ["--set", "nasnet.nope=1"]),  # a plug-in setting
])
def test_init_errors_are_the_clis_messages_as_evo_errors(tmp_path, settings, argv):
    with pytest.raises(Exception) as got:
        evo.init(str(tmp_path / "api"), **settings)
    assert _is_evo_error(got.value), type(got.value).__mro__
    message = str(got.value)
    assert "\n" not in message and message
    cli = _cli_error("init", str(tmp_path / "cli"), *argv)
    assert cli.startswith(f"evo init: error: {message}"), (message, cli)
    assert not (tmp_path / "api" / "config.json").exists()


def test_unknown_settings_and_bad_flags_are_named(tmp_path):
    with pytest.raises(SettingsError, match=r"evo init: unknown setting 'bogus' \(known: .*population_size"):
        evo.init(str(tmp_path / "r"), bogus=3)
    with pytest.raises(SettingsError, match="--no-augment: give True or False"):
        evo.init(str(tmp_path / "r"), no_augment="yes")
    with pytest.raises(SettingsError, match=r"evo launch: unknown setting 'n' \(known: .*workers"):
        evo.launch(str(tmp_path / "r"), n=3)


def test_launch_errors_are_the_clis_before_anything_starts(tmp_path):
    (tmp_path / "logs-file").write_text("x")
    cases = [({"workers": 0}, ["-n", "0"]),
             ({"log_dir": str(tmp_path / "logs-file")}, ["--log-dir", str(tmp_path / "logs-file")]),
             ({"max_seconds": -1}, ["--max-seconds", "-1"])]
    for settings, argv in cases:
        with pytest.raises(Exception) as got:
            evo.launch(str(tmp_path / "api"), **settings)
        assert _is_evo_error(got.value)
        cli = _cli_error("launch", str(tmp_path / "cli"), *argv)
        assert cli.startswith(f"evo launch: error: {got.value}"), (str(got.value), cli)
    assert not (tmp_path / "api").exists()


def test_open_a_store_without_a_run_is_the_clis_error(tmp_path):
    with pytest.raises(Exception) as got:
        evo.open(str(tmp_path / "nothing"))
    assert _is_evo_error(got.value)
    assert _cli_error("status", str(tmp_path / "nothing")) == f"evo status: error: {got.value}"


def test_a_lower_layers_error_comes_out_as_an_evo_error(tmp_path):
    # a config.json that is not one: storage/evo.config errors, raised as an EvoError kind
    root = tmp_path / "r"
    root.mkdir()
    (root / "config.json").write_text("{not json")
    with pytest.raises(Exception) as got:
        evo.open(str(root))
    assert _is_evo_error(got.value) and "config.json" in str(got.value)


# ----- reading: the commands' reading code -----

def _synthetic_run(path: Path, population: int, dead: int) -> str:
    from bench._synthrun import build_synthetic_run

    build_synthetic_run(str(path), population=population, dead=dead, workers=3)
    return str(path)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A rolled-up synthetic run (store API, no training): P=12, 60 dead, half in segments."""
    url = _synthetic_run(tmp_path_factory.mktemp("api") / "syn", 12, 60)
    from launch.views.snapshot import open_population

    store, _ = open_population(url)
    store.history.roll_up(min_age=0, segment_records=10)
    assert store.history.history_layout()["segments"] >= 1
    return url


def _json(*args: str) -> dict:
    done = evo_cli(*args)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def test_individuals_one_row_per_individual_as_evo_audit_counts(synthetic):
    run = evo.open(synthetic)
    df = run.individuals()
    audit = _json("audit", synthetic, "--json")
    assert len(df) == audit["alive"] + audit["dead"] == 72 and audit["quarantined"] == 0
    assert list(df.columns) == ["id", "parent", "birth", "death", "killer", "fitness", "mutation", "worker",
                                "parameters", "train_seconds", "policy_version", "alive"]
    assert df["id"].is_unique and int(df["alive"].sum()) == audit["alive"] == 12
    dead = df[~df["alive"]]
    assert dead["death"].notna().all() and dead["killer"].notna().all() and df[df["alive"]]["death"].isna().all()
    assert set(df["parent"].dropna()) <= set(df["id"])
    assert (df["train_seconds"] >= 0).all() and set(df["worker"]) == {"preseed", "synth-0", "synth-1", "synth-2"}
    records = run.records()
    assert [r["id"] for r in records] == list(df["id"]) and all(type(r) is dict for r in records)
    status = run.status()
    assert (status["alive"], status["killed"], status["born"]) == (12, 60, 72)


def test_status_is_evo_status_json(synthetic):
    api = evo.open(synthetic).status()
    cli = _json("status", synthetic, "--json")
    assert set(api) == set(cli)
    for key in ("url", "config", "alive", "born", "killed", "quarantined", "best", "median", "worst",
                "first_birth", "last_birth", "mutations", "broken", "broken_entries", "policy", "data"):
        assert api[key] == cli[key], key
    assert [w["worker"] for w in api["workers"]] == [w["worker"] for w in cli["workers"]]


def test_lineage_is_evo_lineage_json(synthetic):
    run = evo.open(synthetic)
    assert run.lineage("best") == _json("lineage", synthetic, "best", "--json")
    with pytest.raises(SettingsError, match="no individual 'zzzzzz'"):
        run.lineage("zzzzzz")


def test_refresh_reads_only_what_is_new(synthetic, tmp_path):
    import shutil

    from helpers_store import publish_random
    from launch.views.snapshot import open_population

    url = str(tmp_path / "copy")
    shutil.copytree(synthetic, url, symlinks=True)
    run = evo.open(url)
    before = len(run.records())
    store, _ = open_population(url)
    rng = np.random.default_rng(1)
    for _ in range(3):
        publish_random(store, rng, worker="late")
    victim = store.population.list_alive()[0]
    store.population.kill(victim, worker="late")
    reads = []
    backend = run._population[0].backend
    real = backend.read
    backend.read = lambda key, *a, **k: (reads.append(key), real(key, *a, **k))[1]
    rows = {r["id"]: r for r in run.refresh().records()}
    assert len(rows) == before + 3 and rows[victim.id]["alive"] is False and rows[victim.id]["killer"] == "late"
    # the new commits and the new history record, not the 72 records read before
    new_reads = [k for k in reads if k.startswith(("alive/", "history/"))]
    assert 0 < len(new_reads) <= 10, reads
    # control: a first read of the same run reads far more
    fresh = evo.open(url)
    reads.clear()
    fresh_backend = fresh._population[0].backend
    fresh_real = fresh_backend.read
    fresh_backend.read = lambda key, *a, **k: (reads.append(key), fresh_real(key, *a, **k))[1]
    assert len(fresh.records()) == before + 3
    assert len([k for k in reads if k.startswith(("alive/", "history/"))]) > 2 * len(new_reads), reads


def test_without_pandas_individuals_says_how_to_install_it_and_records_still_work(synthetic):
    code = ("import sys\nsys.modules['pandas'] = None\nimport evo\n"
            "run = evo.open(sys.argv[1])\n"
            "print(len(run.records()))\n"
            "try:\n    run.individuals()\nexcept evo.EvoError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code, synthetic], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["72", "Run.individuals() needs pandas: pip install 'evo[pandas]' (Run.records() gives plain dicts)"]


@pytest.mark.slow  # several processes; plants every hostile entry
@pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
def test_a_hostile_store_is_read_as_the_commands_read_it(tmp_path):
    import storage
    from evo.config import RunConfig

    root = tmp_path / "pop"
    store = storage.open_store(str(root))
    store.runinfo.init_config(RunConfig(dataset="synthetic").to_json())
    outside = tmp_path / "outside"
    write_secret(outside)
    plant_everything(store, root, outside)
    code = ("import json, sys, evo\n"
            "run = evo.open(sys.argv[1])\n"
            "s = run.status()\n"
            "print(json.dumps({'rows': len(run.individuals()), 'alive': s['alive'], 'killed': s['killed'],\n"
            "                  'broken': s['broken'], 'best': max(r['fitness'] for r in run.records() if r['alive'])}))\n")
    done = subprocess.run(["timeout", "60", *WITHOUT_BYPASS, sys.executable, "-c", code, str(root)], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert SECRET not in done.stdout
    got = json.loads(done.stdout)
    cli = json.loads(subprocess.run(["timeout", "60", *WITHOUT_BYPASS, sys.executable, "-m", "launch", "status",
                                     str(root), "--json"], cwd=REPO, capture_output=True, text=True).stdout)
    assert got["rows"] == got["alive"] + got["killed"] == cli["alive"] + cli["killed"]
    assert got["broken"] == cli["broken"] >= 4 and got["best"] == cli["best"]["fitness"] < 0.9


# ----- a real run: init, launch, best, module, export, evaluate -----

@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("api") / "digits")
    run = evo.init(url, dataset="digits", population_size=4, steps=5, seed=0)
    assert isinstance(run, evo.Run) and run.config.population_size == 4
    assert evo.init(url, dataset="digits", population_size=4, steps=5, seed=0).url == url   # same config: kept
    run = evo.launch(url, workers=1, max_individuals=7, device="cpu")
    assert run.status()["born"] >= 7
    return url


@pytest.mark.slow  # a real worker trains 7 individuals
def test_best_models_export_and_evaluate_as_the_commands_do(digits, tmp_path):
    import torch

    run = evo.open(digits)
    models = run.best(2)
    assert len(models) == 2 and models[0].fitness >= models[1].fitness
    best = models[0]
    assert best.id == _json("best", digits, "--json")["id"] and best.dna == _json("best", digits, "--json")["dna"]
    cli_dir = tmp_path / "cli"
    assert evo_cli("best", digits, "--export", str(cli_dir)).returncode == 0
    cli_eval = _json("evaluate", str(cli_dir), "--json")
    got = best.evaluate()
    assert got["accuracy"] == cli_eval["accuracy"] and got["images"] == cli_eval["images"] > 0
    net = best.module()
    assert isinstance(net, torch.nn.Module) and not net.training
    test = np.load(cli_dir / "test.npz")
    with torch.no_grad():
        pred = net(torch.from_numpy(test["x"])).argmax(1).numpy()
    assert float((pred == test["y"]).mean()) == pytest.approx(cli_eval["accuracy"])
    info = best.export(str(tmp_path / "api"))
    assert info["id"] == best.id and (tmp_path / "api" / "load.py").is_file()
    assert (tmp_path / "api" / "weights.safetensors").read_bytes() == (cli_dir / "weights.safetensors").read_bytes()
    with pytest.raises(SettingsError) as again:
        best.export(str(tmp_path / "api"))
    cli = _cli_error("best", digits, "--export", str(tmp_path / "api"))
    assert cli == f"evo best: error: {again.value}"
    with pytest.raises(SettingsError, match="k must be a positive integer"):
        run.best(0)
    # ONNX: the same file and check as `evo best --export DIR --onnx`, scored like `evo evaluate --onnx`
    info = best.export(str(tmp_path / "api-onnx"), onnx=True)
    check = info["onnx"]["check"]
    assert (tmp_path / "api-onnx" / "model.onnx").is_file() and check["top1_agreement"] == 1.0
    assert check["max_abs_logit_diff"] < 1e-4
    scored = best.evaluate(onnx=True)
    assert scored["model"] == "model.onnx (onnxruntime)" and scored["accuracy"] == cli_eval["accuracy"]


@pytest.mark.slow  # two real workers, interrupted
def test_ctrl_c_in_launch_stops_every_worker_and_returns_the_run(tmp_path):
    url = tmp_path / "pop"
    code = ("import sys, evo\n"
            "run = evo.launch(sys.argv[1], workers=2, max_seconds=600, device='cpu', dataset='digits',\n"
            "                 population_size=4, steps=5, progress_interval=1)\n"
            "print('RETURNED', run.status()['workers_active'], flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(url)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        running = wait_for(lambda: url.exists() and len(beats(url)) == 2 and list(beats(url).values()), 180,
                           "both workers' heartbeats")
        pids = [b["pid"] for b in running]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in out, out[-2000:]
    assert "stopping workers (SIGINT)" in out and "RETURNED 0" in out, out[-2000:]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert {b["state"] for b in beats(url).values()} == {"stopped"}


@pytest.mark.slow  # a real worker that fails at its start (no CUDA here), from both launchers
def test_a_failing_worker_is_the_same_error_from_launch_and_evo_launch(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA: the worker must fail on --device cuda:0")
    from launch.commands.launch import WorkersFailed

    argv = ["-n", "1", "--device", "cuda:0", "--max-individuals", "1", "-P", "2", "--steps", "1"]
    with pytest.raises(WorkersFailed) as got:
        evo.launch(str(tmp_path / "api"), workers=1, device="cuda:0", max_individuals=1, population_size=2, steps=1)
    assert _is_evo_error(got.value) and "1 worker(s) failed (exit 2)" in str(got.value)
    assert "CUDA is not available" in str(got.value)
    done = evo_cli("launch", str(tmp_path / "cli"), *argv)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == str(got.value).replace(str(tmp_path / "api"), str(tmp_path / "cli"))


@pytest.mark.slow  # builds a synthetic run, then fresh processes
def test_bench_api_small_counts_every_individual_as_evo_audit(tmp_path):
    from bench import api as api_bench

    doc = api_bench.run("small", tmp_path / "out", store_dir=str(tmp_path / "runs"))
    median, audit = doc["results"]["median"], doc["results"]["audit"]
    assert median["exit"] == 0 and median["rows"] == audit["alive"] + audit["dead"] == 300
    assert median["alive"] == audit["alive"] == 20 and doc["results"]["rollup"]["layout"]["segments"] >= 1
    assert "| 300 |" in (tmp_path / "out" / "api-small-cpu.md").read_text()

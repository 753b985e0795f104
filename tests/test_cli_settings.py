"""Settings are validated once, when given; every CLI error is one line; the parsers behave.

Most cases call ``launch.cli.main([...])`` in-process (fast: no interpreter start); a few run
the installed ``evo`` console script to show what a user's terminal gets. Every refused
input is checked for exit code 2, a one-line stderr that names the option or file and the
problem, and nothing written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import fsspec
import numpy as np
import pytest

import dna
from evo.config import ConfigError, RunConfig, TrainSettings
from evo.data.base import DatasetError
from evo.data.datasets import check_dataset
from evo.spaces.nasnet import NasnetSettings
from evo.train.synthetic import SyntheticSettings
from helpers_store import publish_random
from launch import cli
from launch.cli import main

EVO = str(Path(sys.executable).with_name("evo")) if Path(sys.executable).with_name("evo").exists() \
    else shutil.which("evo") or "evo"  # the installed console script
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``evo ARGV`` in this process: (exit code, stdout, stderr)."""
    sigterm = signal.getsignal(signal.SIGTERM)  # `evo worker` installs its own handler
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *argv: str, words: tuple[str, ...] = ()) -> str:
    """Assert ``evo ARGV`` fails with exit 2 and one line on stderr containing ``words``."""
    code, out, err = run(capsys, *argv)
    assert code == 2, (argv, code, out, err)
    assert err.count("\n") == 1 and err.startswith("evo"), (argv, err)
    assert "Traceback" not in err
    for w in words:
        assert w in err, (argv, w, err)
    return err


def evo(*args: str, cwd=None, env_extra=None, prefix=()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra or {})
    return subprocess.run([*prefix, EVO, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def fake_cifar10(root: Path, skip=()) -> Path:
    """The file layout of 'CIFAR-10 python version' (contents are not read by the check)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in CIFAR10_FILES:
        if name not in skip:
            (d / name).write_bytes(b"\x80\x02not a real batch")
    return d


# ----- every field of RunConfig is range-checked, with the range in the message -----

@pytest.mark.parametrize("make, field, words", [
    (lambda: RunConfig(population_size=1), "population_size", "2..1000000, got 1"),
    (lambda: RunConfig(population_size=True), "population_size", "got True"),
    (lambda: RunConfig.from_dict({"tournament_size": 0}), "tournament_size", "1..10, got 0"),
    (lambda: RunConfig.from_dict({"population_size": 4, "tournament_size": 5}), "tournament_size", "1..4, got 5"),
    (lambda: RunConfig(seed=-1), "seed", "0..9223372036854775807, got -1"),
    (lambda: RunConfig(seed=1.5), "seed", "integer"),
    (lambda: RunConfig(keep_best=-1), "keep_best", "0..1000000"),
    (lambda: RunConfig(selection="best"), "selection", "aging, pairwise, random"),
    (lambda: RunConfig(search_space="x"), "search_space", "large_scale, nasbench201, nasnet"),
    (lambda: RunConfig(inherit_weights=1), "inherit_weights", "true or false"),
    (lambda: RunConfig(dataset="imagenet"), "dataset", "digits, cifar10=PATH"),
    (lambda: RunConfig(dataset="cifar10="), "dataset", "needs a path"),
    (lambda: RunConfig(dataset="digits=/tmp"), "dataset", "takes no path"),
    (lambda: RunConfig(dataset="digits", train=TrainSettings(steps=0)), "train.steps", "1..1000000000 for digits"),
    (lambda: RunConfig(bounds=dna.Bounds(max_channels=70_000)), "bounds.max_channels", "1..65536"),
    (lambda: RunConfig(bounds=dna.Bounds(max_learning_rate=1e3)), "bounds.max_learning_rate", "(0, 100]"),
    (lambda: TrainSettings(steps=-1), "train.steps", "0..1000000000, got -1"),
    (lambda: TrainSettings(batch_size=0), "train.batch_size", "1..1000000, got 0"),
    (lambda: TrainSettings(eval_batch_size=0), "train.eval_batch_size", "1..1000000"),
    (lambda: TrainSettings(momentum=1.0), "train.momentum", "[0, 1)"),
    (lambda: TrainSettings(momentum=math.nan), "train.momentum", "got nan"),
    (lambda: TrainSettings(weight_decay=-1e-4), "train.weight_decay", "[0, 1)"),
    (lambda: TrainSettings(weight_decay=math.inf), "train.weight_decay", "got inf"),
    (lambda: TrainSettings(augment="yes"), "train.augment", "true or false"),
    (lambda: TrainSettings(precision="fp16"), "train.precision", "auto, fp32, bf16"),
    (lambda: TrainSettings(cuda_graphs=None), "train.cuda_graphs", "true or false"),
    (lambda: SyntheticSettings(train_seconds=-1.0), "synthetic.train_seconds", "[0, 86400]"),
    (lambda: SyntheticSettings(train_seconds=math.nan), "synthetic.train_seconds", "got nan"),
    (lambda: SyntheticSettings(weight_bytes=-1), "synthetic.weight_bytes", "0..1073741824"),
    (lambda: SyntheticSettings(noise=math.inf), "synthetic.noise", "[0, 1]"),
    (lambda: NasnetSettings(cells_per_stack=0), "nasnet.cells_per_stack", "1..64, got 0"),
    (lambda: NasnetSettings(filters=0), "nasnet.filters", "1..4096, got 0"),
])
def test_every_setting_is_range_checked(make, field, words):
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field and words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("changes, words", [
    ({"max_vertices": 1}, "bounds.max_vertices must be an integer >= 2, got 1"),
    ({"max_edges": 0}, "bounds.max_edges must be an integer >= 1, got 0"),
    ({"max_channels": 0}, "bounds.max_channels must be an integer >= 1, got 0"),
    ({"max_filter_size": 4}, "bounds.max_filter_size must be odd"),
    ({"max_stride": 3}, "bounds.max_stride must be a power of two"),
    ({"min_learning_rate": 0.0}, "bounds.min_learning_rate must be a finite number > 0"),
    ({"max_learning_rate": math.nan}, "got nan"),
    ({"min_learning_rate": 0.5, "max_learning_rate": 0.1}, "at most max_learning_rate"),
])
def test_bounds_refuse_what_has_no_meaning(changes, words):
    with pytest.raises(ValueError, match="bounds") as info:
        dna.Bounds(**changes)
    assert words in str(info.value)


def test_synthetic_runs_may_train_zero_steps_and_storage_still_imports():
    assert RunConfig(dataset="synthetic", train=TrainSettings(steps=0)).train.steps == 0
    import storage.verify  # its structure-only Bounds are far wider than any run's

    assert storage.verify.STRUCTURE_ONLY.max_channels > 65536


def test_config_json_is_validated_like_options():
    text = RunConfig(dataset="synthetic").to_json()
    for key, bad, words in [("seed", -1, "seed must be"), ("population_size", "10", "got '10'"),
                            ("train", {"batch_size": 0}, "train.batch_size"),
                            ("bounds", {"max_channels": 0}, "bounds.max_channels")]:
        d = json.loads(text)
        d[key] = {**d[key], **bad} if isinstance(bad, dict) else bad
        with pytest.raises(ConfigError, match=words):
            RunConfig.from_json(json.dumps(d))
    d = json.loads(text)
    d["synthetic"]["noise"] = float("nan")  # json writes NaN; it must not pass
    with pytest.raises(ConfigError, match="NaN is not allowed"):
        RunConfig.from_json(json.dumps(d))


# ----- evo init: values given are used as given, never replaced by defaults -----

@pytest.mark.parametrize("args, words", [
    (["-P", "0"], ("-P/--population-size", "2..1000000", "got 0")),
    (["-P", "1"], ("-P/--population-size", "got 1")),
    (["--batch-size", "0"], ("--batch-size", "1..1000000", "got 0")),
    (["--batch-size", "2000"], ("--batch-size", "1,078 training images of digits")),
    (["--selection", "aging", "-S", "0"], ("-S/--tournament-size", "1..10", "got 0")),
    (["-P", "8", "-S", "9"], ("-S/--tournament-size", "1..8", "got 9")),
    (["--max-channels", "0"], ("--max-channels", ">= 1", "got 0")),
    (["--max-channels", "100000"], ("--max-channels", "1..65536")),
    (["--max-vertices", "1"], ("--max-vertices", "got 1")),
    (["--search-space", "nasnet", "--nasnet-cells", "0"], ("--nasnet-cells", "1..64", "got 0")),
    (["--search-space", "nasnet", "--nasnet-filters", "0"], ("--nasnet-filters", "got 0")),
    (["--seed", "-1"], ("--seed", "0..", "got -1")),
    (["--steps", "-1"], ("--steps", "got -1")),
    (["--steps", "0"], ("--steps", "0 would train nothing")),
    (["--keep-best", "-1"], ("--keep-best", "got -1")),
    (["--dataset", "synthetic", "--synthetic-train-seconds", "nan"], ("--synthetic-train-seconds", "got nan")),
    (["--dataset", "synthetic", "--synthetic-train-seconds", "inf"], ("--synthetic-train-seconds", "got inf")),
    (["--dataset", "synthetic", "--synthetic-train-seconds", "-1"], ("--synthetic-train-seconds", "[0, 86400]")),
    (["--dataset", "synthetic", "--synthetic-weight-bytes", "-1"], ("--synthetic-weight-bytes",)),
    (["--dataset", "imagenet"], ("--dataset", "unknown dataset 'imagenet'", "cifar10=PATH")),
    (["--dataset", "cifar10"], ("--dataset", "needs a path")),
    (["--dataset", "cifar10="], ("--dataset", "needs a path")),
    (["--dataset", "digits=/tmp"], ("--dataset", "digits takes no path")),
    (["--dataset", "cifar10=/nonexistent"], ("--dataset", "/nonexistent does not exist", "data_batch_1..5")),
])
def test_init_refuses_bad_options_and_writes_nothing(capsys, tmp_path, args, words):
    pop = tmp_path / "pop"
    refused(capsys, "init", str(pop), *args, words=("evo init: error: ", *words))
    assert not pop.exists()


def test_options_given_are_stored_as_given(capsys, tmp_path):
    pop = tmp_path / "pop"
    code, out, err = run(capsys, "init", str(pop), "-P", "7", "--selection", "aging", "-S", "3", "--batch-size", "20",
                         "--max-channels", "9", "--max-vertices", "5", "--seed", "0", "--keep-best", "0",
                         "--steps", "11")
    assert code == 0, err
    stored = RunConfig.from_json((pop / "config.json").read_text())
    assert (stored.population_size, stored.settings_of("aging").tournament_size, stored.train.batch_size, stored.train.steps) == (7, 3, 20, 11)
    assert (stored.bounds.max_channels, stored.bounds.max_vertices, stored.seed) == (9, 5, 0)


def test_config_file_values_are_checked_and_name_the_file(capsys, tmp_path):
    good = RunConfig(dataset="synthetic", population_size=5, seed=3)
    path = tmp_path / "c.json"
    path.write_text(good.to_json())
    code, _, err = run(capsys, "init", str(tmp_path / "a"), "--config", str(path))
    assert code == 0, err  # the file's dataset is kept (not replaced by --dataset's default)
    assert RunConfig.from_json((tmp_path / "a" / "config.json").read_text()) == good
    d = json.loads(good.to_json())
    d["train"]["batch_size"] = 0
    path.write_text(json.dumps(d))
    refused(capsys, "init", str(tmp_path / "b"), "--config", str(path), words=(str(path), "train.batch_size", "got 0"))
    refused(capsys, "init", str(tmp_path / "b"), "--config", str(tmp_path), words=(str(tmp_path), "not a regular file"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes to it: reading it must not block
    refused(capsys, "init", str(tmp_path / "b"), "--config", str(fifo), words=(str(fifo), "not a regular file"))
    refused(capsys, "init", str(tmp_path / "b"), "--config", "/dev/zero", words=("/dev/zero", "not a regular file"))
    path.write_bytes(b"\xff\xfe")
    refused(capsys, "init", str(tmp_path / "b"), "--config", str(path), words=(str(path), "not UTF-8"))
    path.write_text(good.to_json())
    refused(capsys, "init", str(tmp_path / "b"), "--config", str(path), "--seed", "-2", words=("--seed", "got -2"))
    assert not (tmp_path / "b").exists()


def test_launch_checks_run_options_before_starting_anything(capsys, tmp_path):
    pop = tmp_path / "pop"
    refused(capsys, "launch", str(pop), "-n", "1", "--batch-size", "0", words=("evo launch: error: --batch-size",))
    refused(capsys, "launch", "slurm", str(pop), "--executor", "local", "-P", "0", words=("-P/--population-size",))
    refused(capsys, "launch", str(pop), "--dataset", "cifar10=/nonexistent", words=("/nonexistent does not exist",))
    assert not pop.exists()


# ----- the dataset: resolved and its files checked at init, without loading it -----

def test_cifar_files_are_checked_where_the_loader_looks(capsys, tmp_path, monkeypatch):
    data = fake_cifar10(tmp_path / "data")
    assert check_dataset(f"cifar10={data}") == {"name": "cifar10", "train_images": 45_000}
    assert check_dataset(f"cifar10={data.parent}")["name"] == "cifar10"  # the parent works too
    assert check_dataset("digits") == {"name": "digits", "train_images": 1078}
    assert check_dataset("synthetic") == {"name": "synthetic", "train_images": None}
    (data / "test_batch").unlink()
    with pytest.raises(DatasetError, match="test_batch is missing"):
        check_dataset(f"cifar10={data}")
    (data / "test_batch").write_bytes(b"")
    with pytest.raises(DatasetError, match="test_batch is empty"):
        check_dataset(f"cifar10={data}")
    (data / "test_batch").write_bytes(b"\x80")
    monkeypatch.chdir(tmp_path)  # a relative path is stored as an absolute one: workers start elsewhere
    code, _, err = run(capsys, "init", "pop", "--dataset", "cifar10=data")
    assert code == 0, err
    assert RunConfig.from_json((tmp_path / "pop" / "config.json").read_text()).dataset == f"cifar10={data.parent}"


@pytest.mark.parametrize("spec, words", [
    ("cifar10={file}", "is a file, not a directory"),
    ("cifar10={empty}", "has no data_batch_1"),
    ("cifar100={c10}", "has no train"),
    ("cifar10={partial}", "data_batch_3 is missing"),
])
def test_init_refuses_missing_or_wrong_data(capsys, tmp_path, spec, words):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    places = {"file": tmp_path / "afile", "empty": tmp_path / "empty", "c10": fake_cifar10(tmp_path / "c10"),
              "partial": fake_cifar10(tmp_path / "partial", skip=("data_batch_3",))}
    spec = spec.format(**places)
    refused(capsys, "init", str(tmp_path / "pop"), "--dataset", spec, words=("--dataset", spec.split("=")[1], words))
    assert not (tmp_path / "pop").exists()


def test_unreadable_batch_is_refused_without_roots_bypass(tmp_path):
    data = fake_cifar10(tmp_path / "data")
    os.chmod(data / "data_batch_2", 0)
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search"]
    r = evo("init", str(tmp_path / "pop"), "--dataset", f"cifar10={data}", prefix=drop)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"cannot read {data}/data_batch_2" in r.stderr and "ermission denied" in r.stderr
    assert not (tmp_path / "pop").exists()


@pytest.mark.slow  # the GCS emulator
def test_cifar_in_a_bucket_is_checked_like_the_loader_reads_it(capsys, gcs_bucket_url):
    bucket = gcs_bucket_url.rsplit("/", 1)[0]
    fs = fsspec.filesystem("gs")
    for name in CIFAR10_FILES[:-1]:
        fs.pipe(f"{bucket}/cifar-10-batches-py/{name}".removeprefix("gs://"), b"\x80\x02batch")
    refused(capsys, "init", gcs_bucket_url, "--dataset", f"cifar10={bucket}",
            words=("test_batch is missing", "expected the 'CIFAR-10 python version' directory"))
    refused(capsys, "init", gcs_bucket_url, "--dataset", f"cifar10={bucket}/nothing-here",
            words=(f"{bucket}/nothing-here does not exist",))
    assert not fs.exists(f"{gcs_bucket_url}/config.json".removeprefix("gs://"))
    fs.pipe(f"{bucket}/cifar-10-batches-py/test_batch".removeprefix("gs://"), b"\x80\x02batch")
    code, _, err = run(capsys, "init", gcs_bucket_url, "--dataset", f"cifar10={bucket}")
    assert code == 0, err


# ----- a directory with individuals but no config.json -----

def test_init_refuses_a_population_whose_config_is_gone(capsys, tmp_path):
    import storage

    pop = tmp_path / "pop"
    assert run(capsys, "init", str(pop), "--dataset", "synthetic", "-P", "3")[0] == 0
    publish_random(storage.open_store(str(pop)), np.random.default_rng(0))
    (pop / "config.json").unlink()
    for argv in (["init", str(pop), "--steps", "5"], ["init", str(pop)], ["launch", str(pop), "-n", "1"]):
        refused(capsys, *argv, words=(str(pop), "holds individuals but no config.json", "--force-new-config"))
        assert not (pop / "config.json").exists()
    for name in os.listdir(pop / "alive"):  # history/ alone counts too
        os.rename(pop / "alive" / name, tmp_path / name)
    (pop / "history").mkdir(exist_ok=True)
    (pop / "history" / "20260101T000000.000000Z-0123abcd.json").write_text("{}")
    refused(capsys, "init", str(pop), words=("--force-new-config",))
    code, out, err = run(capsys, "init", str(pop), "--dataset", "synthetic", "--force-new-config")
    assert code == 0 and "initialised" in out, err
    assert RunConfig.from_json((pop / "config.json").read_text()).dataset == "synthetic"


# ----- one-line errors naming the file -----

def test_a_file_where_a_directory_belongs_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("x")
    refused(capsys, "init", "afile/sub", words=("afile/sub: afile is a file, not a directory",))
    refused(capsys, "init", "afile", words=("afile is a file",))
    refused(capsys, "init", f"file://{tmp_path}/afile/sub/x", words=(f"{tmp_path}/afile is a file",))
    for command in ("status", "check", "plot", "report", "best", "lineage best", "worker", "launch -n 1"):
        name, *rest = command.split()
        refused(capsys, name, f"file://{tmp_path}/afile", *rest,
                words=("afile is a file, not a population directory",))
    refused(capsys, "launch", "pop", "--log-dir", "afile", words=("afile: --log-dir is a file",))
    refused(capsys, "evaluate", "afile", words=("afile is a file, not an export directory",))
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def test_plot_refuses_an_extension_it_cannot_write(capsys, tmp_path):
    pop = tmp_path / "pop"
    assert run(capsys, "init", str(pop), "--dataset", "synthetic", "-P", "3")[0] == 0
    publish_random(__import__("storage").open_store(str(pop)), np.random.default_rng(1))
    err = refused(capsys, "plot", str(pop), "-o", str(tmp_path / "x.txt"), words=("x.txt", "unsupported file type"))
    assert ".png" in err and ".pdf" in err and ".svg" in err
    refused(capsys, "plot", str(pop), "-o", str(tmp_path / "noext"), words=("noext", ".png"))
    refused(capsys, "plot", str(pop), "--arch", str(tmp_path / "a.jpg"), words=("a.jpg", "--arch", ".png, .svg"))
    refused(capsys, "plot", str(pop), "-o", str(tmp_path / "p.png"), "--data", str(tmp_path / "p.png"),
            words=("different files",))
    assert not list(tmp_path.glob("x*")) and not (tmp_path / "p.png").exists()
    code, out, err = run(capsys, "plot", str(pop), "-o", str(tmp_path / "p.svg"), "--arch", str(tmp_path / "a.svg"))
    assert code == 0, err
    assert (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")
    assert "<svg" in (tmp_path / "a.svg").read_text()


# ----- worker limits -----

@pytest.mark.parametrize("prog, command", [
    ("evo worker", ["worker", "{pop}"]),
    ("evo launch", ["launch", "{pop}"]),
    ("evo launch slurm", ["launch", "slurm", "{pop}"]),
    ("evo launch k8s", ["launch", "k8s", "{pop}", "-n", "1", "--image", "x", "--dry-run"]),
])
@pytest.mark.parametrize("args, words", [
    (["--max-seconds", "-5"], "argument --max-seconds: must be a finite number > 0, got '-5'"),
    (["--max-seconds", "nan"], "got 'nan'"),
    (["--max-seconds", "inf"], "got 'inf'"),
    (["--max-seconds", "0"], "got '0'"),
    (["--max-individuals", "0"], "argument --max-individuals: must be an integer >= 1, got 0"),
    (["--max-individuals", "x"], "got 'x'"),
    (["--device", "gpu"], "argument --device: must be a device (auto | cpu | cuda | cuda:N | mps), got 'gpu'"),
])
def test_worker_limits_are_checked_by_every_launcher(capsys, tmp_path, prog, command, args, words):
    argv = [a.format(pop=tmp_path / "pop") for a in command]
    refused(capsys, *argv, *args, words=(f"{prog}: error: argument {args[0]}: must be ", words,
                                         f"(see '{prog} --help')"))
    assert not (tmp_path / "pop").exists()


@pytest.mark.parametrize("argv, words", [
    (["worker", "{pop}", "--index", "-5"], "argument --index: must be an integer >= 0, got -5"),
    (["launch", "{pop}", "-n", "0"], "argument -n: must be an integer >= 1, got 0"),
    (["launch", "{pop}", "--index-base", "-1"], "--index-base"),
    (["launch", "{pop}", "--workers-per-gpu", "0"], "--workers-per-gpu"),
    (["launch", "{pop}", "--progress-interval", "0"], "--progress-interval"),
    (["launch", "slurm", "{pop}", "-n", "0"], "argument -n: must be an integer >= 1, got 0"),
    (["launch", "slurm", "{pop}", "--time-min", "0"], "--time-min"),
    (["launch", "slurm", "{pop}", "--mem-gb", "nan"], "--mem-gb"),
    (["launch", "slurm", "{pop}", "--cpus-per-worker", "0"], "--cpus-per-worker"),
    (["launch", "slurm", "{pop}", "--gpus-per-worker", "-1"], "--gpus-per-worker"),
    (["launch", "k8s", "{pop}", "-n", "0", "--image", "x"], "argument -n: must be an integer >= 1, got 0"),
    (["launch", "k8s", "{pop}", "-n", "1", "--image", "x", "--backoff-limit", "-1"], "--backoff-limit"),
    (["status", "{pop}", "--interval", "0"], "--interval"),
    (["status", "{pop}", "--count", "-1"], "--count"),
    (["best", "{pop}", "--cells", "0"], "--cells"),
    (["evaluate", "{pop}", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "{pop}", "--device", "auto"], "--device"),
    (["worker", "{pop}", "--crash-at", "kill:after_clam"], "unknown crash point 'kill:after_clam' (one of: "),
    (["worker", "{pop}", "--crash-at", "kill:after_claim#0"], "hit count of a crash point must be"),
    (["worker", "{pop}", "--crash-at", "kill:after_claim#x"], "use POINT or POINT#N with N >= 1"),
])
def test_other_option_values_are_checked(capsys, tmp_path, argv, words):
    refused(capsys, *[a.format(pop=tmp_path / "pop") for a in argv], words=(words,))
    assert not (tmp_path / "pop").exists()


# ----- the parsers: no abbreviations, defaults in --help, --version, hidden commands -----

def all_parsers() -> dict[str, argparse.ArgumentParser]:
    root = cli.build_parser()
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return {"evo": root, **{f"evo {name}": p for name, p in sub.choices.items()}}


def test_no_flag_can_be_abbreviated():
    checked = 0
    for prog, parser in all_parsers().items():
        assert parser.allow_abbrev is False, prog
        if prog == "evo":
            continue  # its only options are --help and --version
        base = []  # the positionals and required options, so that only the prefix is in question
        for action in parser._actions:
            if not action.option_strings and action.nargs is None:
                base.append("1")
            elif action.required:
                base += [action.option_strings[0], "1"]
        longs = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
        for option in longs:
            for cut in range(3, len(option)):
                prefix = option[:cut]
                if prefix not in longs:
                    _, extra = parser.parse_known_args([*base, prefix])
                    assert extra == [prefix], (prog, prefix, extra)
                    checked += 1
    assert checked > 500


def test_check_rep_does_not_repair(capsys, tmp_path):
    import storage

    pop = tmp_path / "pop"
    assert run(capsys, "init", str(pop), "--dataset", "synthetic", "-P", "3")[0] == 0
    orphan = pop / "payload" / "20260101T000000.000000Z-0123abcd.0123456789abcdef.safetensors"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"x")
    os.utime(orphan, (1, 1))  # old enough for --repair to delete it
    refused(capsys, "check", str(pop), "--rep", words=("evo check: error: unrecognized arguments: --rep",
                                                        "(see 'evo check --help')"))
    assert orphan.exists()
    assert storage.open_store(str(pop)).runinfo.read_config()


def test_help_shows_every_default_once_and_no_noise():
    for prog, parser in all_parsers().items():
        text = parser.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, prog
        for action in parser._actions:
            if not action.option_strings or action.help in (None, argparse.SUPPRESS):
                continue
            shown = parser._get_formatter()._expand_help(action) if action.help else ""
            has_default = action.default not in (None, False, True, argparse.SUPPRESS) \
                and not isinstance(action, argparse._VersionAction)
            if has_default:
                assert "default" in shown.lower(), (prog, action.option_strings, shown)
            assert shown.lower().count("default") <= 1, (prog, action.option_strings, shown)
    launch = all_parsers()["evo launch"].format_help()
    assert "(default: 2)" in launch and "(default: 0)" in launch  # -n, --index-base
    init = all_parsers()["evo init"].format_help()
    assert "default: 10 for digits" in " ".join(init.split()) and "(default: 50)" not in init


def test_version_and_hidden_commands(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"evo {version('evo')}"
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "launch-slurm" not in out and "launch-k8s" not in out and "launch " in out
    err = refused(capsys, "frob", words=("invalid choice: 'frob'", "'init'"))
    assert "launch-" not in err
    code, out, _ = run(capsys, "launch", "slurm", "--help")
    assert code == 0 and out.startswith("usage: evo launch slurm")
    assert "--crash-at" not in all_parsers()["evo worker"].format_help()  # a test hook: hidden


# ----- what the terminal gets -----

@pytest.mark.slow  # a dozen evo processes (~18 s on a loaded 2-core machine)
def test_a_user_sees_one_line_and_no_traceback(tmp_path):
    (tmp_path / "afile").write_text("x")
    for args, words in [
        (["init", "pop", "-P", "0"], "evo init: error: -P/--population-size: population_size must be an integer "
                                     "in 2..1000000, got 0"),
        (["init", "pop", "--dataset", "cifar10=/nonexistent"], "/nonexistent does not exist"),
        (["init", "afile/sub"], "evo init: error: afile/sub: afile is a file, not a directory"),
        (["status", f"file://{tmp_path}/afile"], "is a file, not a population directory"),
        (["worker", "pop", "--index", "-5"], "evo worker: error: argument --index: must be an integer >= 0"),
        (["check", "pop", "--rep"], "unrecognized arguments: --rep"),
        (["plot", "pop", "-o", "x.txt"], "unsupported file type"),
    ]:
        r = evo(*args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and words in r.stderr, (args, r.stderr)
        assert r.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["afile"]
    r = evo("--version")
    assert r.returncode == 0 and r.stdout.startswith("evo ")


def test_worker_refuses_a_config_json_edited_out_of_range(capsys, tmp_path):
    pop = tmp_path / "pop"
    assert run(capsys, "init", str(pop), "--dataset", "synthetic", "-P", "3")[0] == 0
    d = json.loads((pop / "config.json").read_text())
    (pop / "config.json").write_text(json.dumps({**d, "seed": -1}))
    for argv in (["worker", str(pop), "--max-individuals", "1"], ["status", str(pop)]):
        refused(capsys, *argv, words=(f"{pop}/config.json: seed must be an integer in 0..",))
    assert not (pop / "alive").exists()


def test_replace_keeps_validation():
    with pytest.raises(ConfigError, match="population_size"):
        replace(RunConfig(), population_size=0)

"""`evo best --export DIR` and `evo evaluate DIR`: an exported model runs with torch alone.

Populations come from short real runs (digits on the CPU). The exported model is loaded in
a fresh interpreter started with ``python -I -S`` (no site hooks: the editable install of evo
is not on the path) with only the site-packages directories appended (for torch), evo's
packages and ``safetensors`` blocked, and the export directory as working directory: the
process shows that neither can be imported, runs the export's own ``load.py``, and shows
that nothing of them was imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

import dna
import dna.portable as portable
from dna.portable_net import PlanNet
from dna.nasnet import nasnet_from_dict
from dna.nasnet_network import nasnet_parameter_count
from evo.data.datasets import read_dataset

EVO = str(Path(sys.executable).with_name("evo")) if Path(sys.executable).with_name("evo").exists() \
    else shutil.which("evo") or "evo"  # the installed console script
REPO = Path(__file__).resolve().parent.parent

ISOLATED_RUNNER = r'''
import importlib.abc, importlib.util, json, sys
sys.path.extend(sys.argv[1].split("|"))  # site-packages (torch), without running any .pth hooks
BLOCKED = ("dna", "evo", "storage", "launch", "mutations", "safetensors")


class Block(importlib.abc.MetaPathFinder):
    # Belt and braces: -S already keeps the editable install's finder out; this also covers
    # a non-editable install of evo, and the safetensors package.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None


sys.meta_path.insert(0, Block())
importable = []
for name in BLOCKED:
    try:
        __import__(name)
        importable.append(name)
    except ImportError:
        pass
print(json.dumps({"evo_importable": importable}), flush=True)
sys.argv = ["load.py"] + sys.argv[2:]
try:
    import runpy
    runpy.run_path("load.py", run_name="__main__")
finally:
    leaked = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
    print(json.dumps({"leaked": leaked}), flush=True)
'''


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    e.pop("PYTHONPATH", None)
    return e


def evo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([EVO, *args], capture_output=True, text=True, timeout=timeout, env=env())


def ok(*args: str) -> subprocess.CompletedProcess:
    r = evo(*args)
    assert r.returncode == 0, f"evo {' '.join(args)} failed: {r.stderr[-2000:]}"
    return r


def run_isolated(export_dir: Path, *args: str, tmp_path: Path) -> tuple[dict, list[dict]]:
    """Run the export's load.py in a torch-only interpreter; return its JSON result and the proofs."""
    runner = tmp_path / "isolated_runner.py"
    runner.write_text(ISOLATED_RUNNER)
    clean = {k: v for k, v in env().items() if not k.startswith("PYTHON")}
    paths = "|".join(dict.fromkeys([sysconfig.get_paths()["purelib"], *site.getsitepackages()]))
    r = subprocess.run([sys.executable, "-I", "-S", str(runner), paths, *args],
                       cwd=export_dir, capture_output=True, text=True, timeout=300, env=clean)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    proofs = [x for x in lines if "evo_importable" in x or "leaked" in x]
    result = next(x for x in lines if "kind" in x)
    assert proofs == [{"evo_importable": []}, {"leaked": []}], proofs
    return result, proofs


def save_split(path: Path, split: str) -> int:
    host = read_dataset("digits")
    x, y = (host.val_x, host.val_y) if split == "val" else (host.test_x, host.test_y)
    np.savez(path, x=x, y=y)
    return len(y)


def make_run(path: Path, *init: str, individuals: int) -> str:
    url = str(path)
    ok("init", url, "--dataset", "digits", *init)
    ok("worker", url, "--max-individuals", str(individuals), "--index", "0", "--quiet")
    return url


def best_commit(url: str) -> dict:
    alive = Path(url) / "alive"
    commits = [json.loads(p.read_text()) for p in alive.iterdir()]
    return max(commits, key=lambda c: (c["fitness"], -c["birth"]))


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> str:
    """A large-scale digits population from a short real run."""
    return make_run(tmp_path_factory.mktemp("export") / "pop", "-P", "4", "--steps", "40", individuals=10)


@pytest.fixture(scope="module")
def nasnet_population(tmp_path_factory) -> str:
    """A NASNet digits population (N=1, F=4) from a short real run."""
    return make_run(tmp_path_factory.mktemp("export-nasnet") / "pop", "--search-space", "nasnet", "-P", "3",
                    "--steps", "5", "--nasnet-cells", "1", "--nasnet-filters", "4", individuals=4)


@pytest.fixture(scope="module")
def exported(population, tmp_path_factory) -> tuple[Path, dict]:
    """The best individual of ``population`` exported once: (directory, the --json output)."""
    out = tmp_path_factory.mktemp("exported") / "best"
    return out, json.loads(ok("best", population, "--export", str(out), "--json").stdout)


# ----- large-scale -----

@pytest.mark.slow  # its population fixture is a real training run (a worker process)
def test_export_writes_verbatim_code_dna_and_stored_weights(population, exported):
    out, info = exported
    commit = best_commit(population)
    assert info["id"] == commit["id"] and info["trained"] is True
    assert sorted(p.name for p in out.iterdir()) == ["dna.json", "evo_model", "load.py", "model.json",
                                                    "test.npz", "weights.safetensors"]
    copied = sorted(p.name for p in (out / "evo_model").iterdir() if p.name != "__init__.py")
    assert {"portable.py", "portable_net.py", "portable_io.py", "nasnet.py", "build_nasnet.py"} <= set(copied)
    for name in copied:  # the model code is evo's own, byte for byte
        assert (out / "evo_model" / name).read_bytes() == (REPO / "dna" / name).read_bytes(), name
    assert json.loads((out / "dna.json").read_text()) == commit["dna"]
    weights = (out / "weights.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == commit["payload_sha256"]
    model = json.loads((out / "model.json").read_text())
    assert model["validation_accuracy"] == commit["fitness"] and model["dataset"] == "digits"
    assert model["architecture"]["input_shape"] == [1, 8, 8] and model["architecture"]["num_classes"] == 10


@pytest.mark.slow  # its population fixture is a real training run (a worker process)
def test_exported_model_runs_with_torch_alone_and_reproduces_validation_accuracy(population, exported, tmp_path):
    out, _ = exported
    n = save_split(tmp_path / "val.npz", "val")
    result, _ = run_isolated(out, "--data", str(tmp_path / "val.npz"), "--json", tmp_path=tmp_path)
    commit = best_commit(population)
    assert result["id"] == commit["id"] and result["images"] == n
    assert result["accuracy"] == commit["fitness"]
    assert result["parameters"] == commit["metrics"]["params"]


@pytest.mark.slow  # its population fixture is a real training run (a worker process)
def test_evaluate_reports_test_accuracy_that_the_export_reproduces(population, exported, tmp_path):
    """README's `cd best && python load.py --data test.npz` works: the export holds the run's
    test split, and load.py (torch alone) prints the accuracy `evo evaluate` prints."""
    out, info = exported
    host = read_dataset("digits")
    with np.load(out / "test.npz") as saved:
        assert sorted(saved.files) == ["x", "y"]
        assert saved["x"].dtype == np.uint8 and np.array_equal(saved["x"], host.test_x)
        assert np.array_equal(saved["y"], host.test_y)
    assert info["test_data"] == {"file": "test.npz", "split": "test", "images": 360, "dataset": "digits"}
    test = json.loads(ok("evaluate", str(out), "--dataset", "digits", "--json").stdout)
    assert test["split"] == "test" and test["images"] == len(host.test_y) == 360
    assert 0.0 <= test["accuracy"] <= 1.0 and test["correct"] == round(test["accuracy"] * 360)
    alone, _ = run_isolated(out, "--data", "test.npz", "--json", tmp_path=tmp_path)
    assert alone["accuracy"] == test["accuracy"] and alone["images"] == 360
    printed = subprocess.run([sys.executable, "load.py", "--data", "test.npz"], cwd=out, capture_output=True,
                             text=True, timeout=300, env=env())
    assert printed.returncode == 0, printed.stderr
    shown = ok("evaluate", str(out)).stdout  # the run's dataset, from model.json
    assert f"accuracy on test.npz: {test['accuracy']:.4f} (360 images)" in printed.stdout
    assert shown.startswith(f"test accuracy {test['accuracy']:.4f} ({test['correct']}/360 images of digits)")
    val = ok("evaluate", str(out), "--split", "val").stdout
    assert f"val accuracy {best_commit(population)['fitness']:.4f}" in val


@pytest.mark.slow  # its population fixture is a real training run (a worker process)
def test_the_printed_hint_runs(population, tmp_path):
    r = subprocess.run([EVO, "best", population, "--export", "best"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=env())
    assert r.returncode == 0, r.stderr
    hint = next(line for line in r.stdout.splitlines() if "torch alone:" in line).split("torch alone:")[1].strip()
    assert hint == "cd best && python load.py --data test.npz"
    done = subprocess.run(hint.replace("python", shlex.quote(sys.executable)), shell=True, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env())
    assert done.returncode == 0 and "accuracy on test.npz: " in done.stdout, done.stderr


@pytest.mark.slow  # its population fixture is a real training run (a worker process)
def test_export_refusals_are_one_line(population, exported, tmp_path):
    out, _ = exported
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    (damaged / "weights.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{garbage")
    for args, words in [
        (["best", population, "--export", str(out)], "not empty"),
        (["best", population, "--export", str(tmp_path / "b2"), "--cells", "2"], "only to NASNet"),
        (["best", population, "--cells", "2"], "only apply with --export"),
        (["evaluate", str(tmp_path / "nothing")], "no such file"),
        (["evaluate", str(out), "--dataset", "cifar10=/nonexistent"], "cifar10"),
        (["evaluate", str(damaged)], "weights.safetensors"),
    ]:
        r = evo(*args)
        assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    assert not (tmp_path / "b2").exists()
    ok("best", population, "--export", str(damaged), "--force")
    assert (damaged / "weights.safetensors").read_bytes() == (out / "weights.safetensors").read_bytes()


@pytest.mark.slow  # a real worker process
def test_synthetic_runs_have_nothing_to_export(tmp_path):
    url = str(tmp_path / "syn")
    ok("init", url, "--dataset", "synthetic", "-P", "3")
    ok("worker", url, "--max-individuals", "4", "--quiet")
    r = evo("best", url, "--export", str(tmp_path / "out"))
    assert r.returncode == 2 and "synthetic" in r.stderr


# ----- NASNet -----

@pytest.mark.slow  # its population fixture is a real training run (a worker process)
def test_nasnet_export_at_search_size_keeps_trained_weights(nasnet_population, tmp_path):
    out = tmp_path / "nas"
    info = json.loads(ok("best", nasnet_population, "--export", str(out), "--json").stdout)
    commit = best_commit(nasnet_population)
    assert info["kind"] == "nasnet" and info["trained"] is True
    for name in ("portable.py", "nasnet.py", "build_nasnet.py"):
        assert (out / "evo_model" / name).read_bytes() == (REPO / "dna" / name).read_bytes()
    save_split(tmp_path / "val.npz", "val")
    result, _ = run_isolated(out, "--data", str(tmp_path / "val.npz"), "--json", tmp_path=tmp_path)
    assert result["accuracy"] == commit["fitness"] and result["kind"] == "nasnet"


@pytest.mark.slow  # its population fixture is a real training run (a worker process)
def test_nasnet_export_at_another_size_has_fresh_weights(nasnet_population, tmp_path):
    out = tmp_path / "nas-big"
    r = ok("best", nasnet_population, "--export", str(out), "--cells", "2", "--filters", "6")
    assert "FRESH, UNTRAINED" in r.stdout
    model = json.loads((out / "model.json").read_text())
    assert model["trained"] is False and model["validation_accuracy"] is None
    assert (model["architecture"]["cells_per_stack"], model["architecture"]["filters"]) == (2, 6)
    genome = nasnet_from_dict(json.loads((out / "dna.json").read_text()))
    result, _ = run_isolated(out, "--json", tmp_path=tmp_path)
    assert result["trained"] is False
    assert result["parameters"] == nasnet_parameter_count(genome, 1, 10, 2, 6)
    assert result["parameters"] > nasnet_parameter_count(genome, 1, 10, 1, 4)


# ----- the torch-only readers -----

def test_read_safetensors_matches_the_safetensors_package():
    from safetensors.torch import save

    tensors = {"a": torch.randn(3, 4), "b": torch.tensor(7, dtype=torch.int64),
               "c": torch.randn(2, 2).to(torch.bfloat16), "d": torch.zeros(0, 5),
               "e": torch.arange(10, dtype=torch.uint8), "f": torch.tensor([True, False])}
    blob = save(tensors, metadata={"note": "x"})
    got = portable.read_safetensors(blob)
    assert set(got) == set(tensors)
    for k, t in tensors.items():
        assert got[k].dtype == t.dtype and torch.equal(got[k], t), k


@pytest.mark.parametrize("blob, words", [
    (b"\x01", "too short"),
    (b"\xff" * 8 + b"{}", "header length"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x00[]", "not an object"),
    (b"\x04\x00\x00\x00\x00\x00\x00\x00nope", "not JSON"),
])
def test_read_safetensors_refuses_damage(blob, words):
    with pytest.raises(portable.ExportError, match=words):
        portable.read_safetensors(blob)


def test_read_safetensors_refuses_bad_offsets():
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    blob = len(header).to_bytes(8, "little") + header + b"\x00" * 8
    with pytest.raises(portable.ExportError, match="bad offsets"):
        portable.read_safetensors(blob)


def test_read_npz_matches_numpy(tmp_path):
    arrays = {"x": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "y": np.array([3, -1], dtype=np.int64),
              "f": np.asfortranarray(np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32))}
    np.savez(tmp_path / "a.npz", **arrays)
    got = portable.read_npz(str(tmp_path / "a.npz"))
    for k, a in arrays.items():
        assert np.array_equal(got[k].numpy(), a), k
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(portable.ExportError, match="unsupported dtype"):
        portable.read_npz(str(tmp_path / "o.npz"))


def test_plan_survives_json_and_builds_the_same_network():
    from dna.build import build

    import mutations

    genome = dna.initial()
    rng = np.random.default_rng(3)
    for _ in range(12):
        genome = mutations.mutate(genome, rng, dna.DEFAULT_BOUNDS)
    model = build(genome, (3, 16, 16), 7, generator=torch.Generator().manual_seed(1)).eval()
    copy = PlanNet(json.loads(json.dumps(model.plan))).eval()
    copy.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(copy(x), model(x), rtol=0, atol=0)

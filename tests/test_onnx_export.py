"""`evo best --export DIR --onnx` and `evo evaluate DIR --onnx`: model.onnx for every space.

Each exported ``model.onnx`` is run here by onnxruntime directly (not through evo's own check)
beside the torch export, on the export's test split, at the check's batch and at batch sizes
1 and 5 (the batch dimension is dynamic): every top-1 class must agree and the largest
logit difference be below 1e-4 in fp32. The spaces: a large-scale DAG whose plan resizes,
zero-pads and truncates inflows (built here, fast) and one of a short digits run, the
published ``amoebanet-a`` retrained at N=1, F=4 (``evo retrain --preset tiny``), and a
NAS-Bench-201 cell of a short digits run. The runs are real processes
(``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dna
import dna.portable as portable
import mutations
from dna.portable_plan import architecture

EVO = str(Path(sys.executable).with_name("evo")) if Path(sys.executable).with_name("evo").exists() \
    else shutil.which("evo") or "evo"
LIMIT = 1e-4
REPO = Path(__file__).resolve().parent.parent


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


def evo_here(capsys, *args: str) -> tuple[int, str, str]:
    """``evo ARGS`` in this process: (exit code, stdout, stderr)."""
    from launch.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def onnx_versus_torch(export_dir: Path) -> dict[str, float]:
    """Run model.onnx with onnxruntime and the torch export on test.npz; assert they agree."""
    import onnx
    import onnxruntime

    path = export_dir / "model.onnx"
    graph = onnx.load(str(path)).graph
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim][:1] == ["batch"]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = portable.load(str(export_dir))
    with np.load(export_dir / "test.npz") as arrays:
        x, y = arrays["x"], arrays["y"]
    worst, agree, batches = 0.0, 0, 0
    for size in (len(y), 1, 5):
        for lo in range(0, len(y), size):
            batch = x[lo:lo + size].astype(np.float32)
            theirs = session.run(["logits"], {"pixels": batch})[0]
            with torch.inference_mode():
                ours = model(torch.from_numpy(x[lo:lo + size])).numpy()   # uint8, as load.py gives it
            assert theirs.shape == ours.shape == (len(batch), model.info["architecture"]["num_classes"])
            worst = max(worst, float(np.abs(theirs - ours).max()))
            same = theirs.argmax(axis=1) == ours.argmax(axis=1)
            agree += int(same.sum())
            batches += len(batch)
            if size != len(y) and lo >= 20:   # batch sizes 1 and 5 on the first images only
                break
    result = {"max_abs_logit_diff": worst, "top1_agreement": agree / batches, "images": len(y)}
    print(f"\n{export_dir.name}: {result}")
    assert result["top1_agreement"] == 1.0 and worst < LIMIT, result
    return result


def assert_recorded(export_dir: Path, measured: dict[str, float]) -> dict:
    """model.json records the export's check, and the file it checked."""
    info = json.loads((export_dir / "model.json").read_text())
    record = info["onnx"]
    assert record["sha256"] == hashlib.sha256((export_dir / "model.onnx").read_bytes()).hexdigest()
    check = record["check"]
    assert check["images"] == measured["images"] and check["top1_agreement"] == 1.0
    assert 0 <= check["max_abs_logit_diff"] < LIMIT and check["torch_accuracy"] == check["onnx_accuracy"]
    assert record["input"]["shape"] == ["batch", *info["architecture"]["input_shape"]]
    return info


# ----- a large-scale DAG with resizes, pads and truncations (built here: fast) -----

def dag_with_resizes_and_pads(shape: tuple[int, int, int], classes: int):
    """A mutated large-scale genome whose plan resizes, zero-pads and truncates inflows."""
    genome, rng = dna.initial(), np.random.default_rng(5)
    for _ in range(400):
        genome = mutations.mutate(genome, rng, dna.DEFAULT_BOUNDS)
        plan = architecture(dna.validate(genome, dna.DEFAULT_BOUNDS), shape, classes)
        flows = [f for step in plan["steps"] for f in step["inflows"][1:]]
        if any(f["size"] for f in flows) and any(f["channels"] < f["target_channels"] for f in flows) \
                and any(f["channels"] > f["target_channels"] for f in flows):
            return genome, plan
    raise AssertionError("400 mutations made no DAG with a resize, a pad and a truncation")


def write_constructed_export(out: Path, dna_dict: dict, plan: dict, images: int = 64) -> None:
    """An export of ``plan`` with random weights and random batch-norm statistics (so that the
    normalisation and every batch-norm matter), and random test images."""
    from safetensors.torch import save

    from launch.export import model_files, write_export

    channels = plan["input_shape"][0]
    info = {"format": portable.EXPORT_FORMAT, "id": "constructed", "kind": plan["kind"], "architecture": plan,
            "normalization": {"mean": [90.0 + 10 * c for c in range(channels)], "std": [70.0] * channels,
                              "applies_to": "pixel values 0..255"},
            "trained": True, "validation_accuracy": None, "eval_batch_size": 1000}
    torch.manual_seed(0)
    net = portable.build_network(info, dna_dict)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    out.mkdir(parents=True)
    write_export(out, model_files(dna_dict, info, save({k: v.contiguous() for k, v in net.state_dict().items()})),
                 None, str(out))
    rng = np.random.default_rng(1)
    np.savez(out / "test.npz", x=rng.integers(0, 256, (images, *plan["input_shape"]), dtype=np.uint8),
             y=rng.integers(0, plan["num_classes"], images))


def test_large_scale_dag_with_resizes_and_pads_agrees_with_torch(tmp_path):
    from launch.onnx_export import write_onnx

    genome, plan = dag_with_resizes_and_pads((3, 12, 12), 7)
    out = tmp_path / "dag"
    write_constructed_export(out, genome.to_dict(), plan)
    record = write_onnx(out, batch_size=24)   # 64 images: batches of 24, 24, 16 and 1
    assert record["check"]["images"] == 64 and record["check"]["max_abs_logit"] > 0
    assert_recorded(out, onnx_versus_torch(out))


def test_disagreement_fails_in_one_line_and_leaves_no_model_onnx(tmp_path):
    from launch.errors import UserError
    from launch.onnx_export import write_onnx

    genome, plan = dag_with_resizes_and_pads((1, 8, 8), 10)
    out = tmp_path / "dag"
    write_constructed_export(out, genome.to_dict(), plan, images=8)
    (out / "model.onnx").write_bytes(b"an earlier export's file")
    before = (out / "model.json").read_bytes()
    with pytest.raises(UserError) as caught:
        write_onnx(out, tolerance=0.0)     # allows no difference at all: nothing can pass
    message = str(caught.value)
    assert "disagrees with torch" in message and "not written" in message and "\n" not in message
    assert sorted(p.name for p in out.iterdir() if "onnx" in p.name) == []
    assert (out / "model.json").read_bytes() == before


# ----- wrong input: one line, before any work -----

def test_onnx_refusals_are_one_line(tmp_path, capsys):
    genome, plan = dag_with_resizes_and_pads((1, 8, 8), 10)
    plain = tmp_path / "plain"
    write_constructed_export(plain, genome.to_dict(), plan, images=8)
    cases = [
        (["best", str(tmp_path / "no-run"), "--onnx"], "--onnx only applies with --export"),
        (["best", str(tmp_path / "no-run"), "--retrained", "--onnx"], "--onnx only applies with --export"),
        (["evaluate", str(plain), "--onnx"], "no model.onnx"),
        (["evaluate", str(plain), "--onnx", "--device", "cuda"], "on the CPU"),
    ]
    for args, words in cases:
        code, out, err = evo_here(capsys, *args)
        assert code == 2 and words in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)
    assert not (tmp_path / "no-run").exists()
    # a model.onnx that model.json does not record (a stale or replaced file) is not scored
    from launch.onnx_export import write_onnx

    write_onnx(plain)
    (plain / "model.onnx").write_bytes((plain / "model.onnx").read_bytes() + b"\0")
    code, out, err = evo_here(capsys, "evaluate", str(plain), "--onnx")
    assert code == 2 and "SHA-256" in err and err.count("\n") == 1, err
    info = json.loads((plain / "model.json").read_text())
    del info["onnx"]        # what a later export without --onnx (--force) leaves beside the old file
    (plain / "model.json").write_text(json.dumps(info))
    code, out, err = evo_here(capsys, "evaluate", str(plain), "--onnx")
    assert code == 2 and "records no ONNX file" in err and err.count("\n") == 1, err


BLOCK_ONNX = r'''
import importlib.abc, sys


class Block(importlib.abc.MetaPathFinder):   # as if the onnx extra were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnx", "onnxruntime"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


sys.meta_path.insert(0, Block())
from launch.cli import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.slow  # two interpreters
def test_without_the_extra_onnx_says_how_to_install_it_before_any_work(tmp_path):
    run = tmp_path / "run"
    cases = [["best", str(run), "--export", str(tmp_path / "out"), "--onnx"],
             ["evaluate", str(tmp_path / "out"), "--onnx"]]
    for args in cases:
        r = subprocess.run([sys.executable, "-c", BLOCK_ONNX, *args], capture_output=True, text=True,
                           timeout=120, env=env())
        assert r.returncode == 2 and "pip install 'evo[onnx]'" in r.stderr and r.stderr.count("\n") == 1, \
            (args, r.stderr)
    assert not run.exists() and not (tmp_path / "out").exists()


# ----- real runs: large-scale, NASNet (published, retrained), NAS-Bench-201 -----

def evaluate_both(export_dir: Path) -> None:
    """evo evaluate scores model.onnx as it scores the torch export."""
    torch_result = json.loads(ok("evaluate", str(export_dir), "--dataset", "digits", "--json").stdout)
    onnx_result = json.loads(ok("evaluate", str(export_dir), "--dataset", "digits", "--json", "--onnx").stdout)
    assert onnx_result["model"] == "model.onnx (onnxruntime)"
    assert {k: v for k, v in onnx_result.items() if k not in ("seconds", "model")} == \
        {k: v for k, v in torch_result.items() if k != "seconds"}
    text = ok("evaluate", str(export_dir), "--dataset", "digits", "--onnx").stdout
    assert text.startswith(f"test accuracy {torch_result['accuracy']:.4f} ") and "model.onnx" in text


@pytest.mark.slow  # a real worker process trains the population
@pytest.mark.timeout(600)
def test_large_scale_run_exports_an_onnx_that_agrees_with_torch(tmp_path):
    url = str(tmp_path / "run")
    ok("init", url, "--dataset", "digits", "-P", "3", "--steps", "20")
    ok("worker", url, "--max-individuals", "6", "--index", "0", "--quiet")
    out = tmp_path / "large_scale"
    shown = json.loads(ok("best", url, "--export", str(out), "--onnx", "--json").stdout)
    assert shown["onnx"]["check"]["top1_agreement"] == 1.0
    assert_recorded(out, onnx_versus_torch(out))
    evaluate_both(out)


@pytest.mark.slow  # evo retrain trains amoebanet-a for two epochs
@pytest.mark.timeout(600)
def test_retrained_amoebanet_a_exports_an_onnx_that_agrees_with_torch(tmp_path):
    url = str(tmp_path / "run")
    ok("init", url, "--dataset", "digits", "--search-space", "nasnet")   # no search: the published cell
    ok("retrain", url, "--arch", "amoebanet-a", "--cells", "1", "--filters", "4", "--preset", "tiny",
       "--batch-size", "64", "--device", "cpu")
    out = tmp_path / "nasnet"
    text = ok("best", url, "--retrained", "--export", str(out), "--onnx").stdout
    assert "model.onnx: onnxruntime and torch agree on 360 test images (top-1 agreement 1.0000" in text, text
    info = assert_recorded(out, onnx_versus_torch(out))
    assert info["kind"] == "nasnet" and info["architecture"]["cells_per_stack"] == 1
    evaluate_both(out)


@pytest.mark.slow  # a real worker process trains the population
@pytest.mark.timeout(600)
def test_nasbench201_run_exports_an_onnx_that_agrees_with_torch(tmp_path):
    url = str(tmp_path / "run")
    ok("init", url, "--dataset", "digits", "--search-space", "nasbench201", "-P", "2", "--steps", "5")
    ok("worker", url, "--max-individuals", "3", "--index", "0", "--quiet")
    out = tmp_path / "nasbench201"
    ok("best", url, "--export", str(out), "--onnx")
    info = assert_recorded(out, onnx_versus_torch(out))
    assert info["kind"] == "nasbench201"
    evaluate_both(out)
    # the torch export of a NAS-Bench-201 cell runs its own copied code (evo_model/), as every export does
    for name in ("nasbench201.py", "build_nasbench201.py"):
        assert (out / "evo_model" / name).read_bytes() == (REPO / "dna" / name).read_bytes()
    r = subprocess.run([sys.executable, "load.py", "--data", "test.npz", "--json"], cwd=out, capture_output=True,
                       text=True, timeout=120, env=env())
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["accuracy"] == info["onnx"]["check"]["onnx_accuracy"]

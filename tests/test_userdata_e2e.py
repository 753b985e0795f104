"""The user's own images end to end: `evo init` decodes them once into the population,
real `evo worker` processes train on the cache (never reading the test split), `evo status`
shows the dataset, and the exported winner reads image files itself (`load.py --images`,
`evo evaluate --images`). Models of every search space adapt to the data's classes,
channels and resolution."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import storage
from evo.config import DataSettings, RunConfig
from evo.data.cache import cache_key
from helpers_images import lfw_folder, make_hf, make_image_folder, make_npz


def evo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "launch", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``evo ARGV`` in this process (no interpreter start): (exit code, stdout, stderr)."""
    from launch.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def worker(url: str, n: int = 2) -> subprocess.CompletedProcess:
    return evo("worker", url, "--max-individuals", str(n), "--device", "cpu", "--index", "0")


def individuals(url: str) -> list[dict]:
    """Every individual that lived (alive or dead): ``fitness`` and ``metrics`` of each."""
    store = storage.open_store(url)
    alive = [store.population.read_individual(i) for i in store.population.list_alive()]
    return [{"fitness": i.fitness, "metrics": i.metrics} for i in alive] + \
        [{"fitness": r["fitness"], "metrics": r["metrics"]} for r in store.history.read_history()]


def manifest_of(url: str) -> dict:
    store = storage.open_store(url)
    config = RunConfig.from_json(store.runinfo.read_config())
    key = cache_key(config.dataset, config.data)
    return store.datacache.read_data_manifest(key, max(store.datacache.data_state(key).manifests))


@pytest.mark.slow  # real worker processes
def test_image_folder_run_end_to_end(tmp_path, capsys):
    root = make_image_folder(tmp_path / "pets", per_class=8)
    url = str(tmp_path / "pop")
    code, out, err = cli(capsys, "init", url, "--dataset", f"imagefolder={root}", "-P", "2", "--steps", "8",
                         "--batch-size", "8")
    assert code == 0, err
    assert "3 classes (cat, dog, fish); 24 train / 9 val / 9 test images; 3x22x22 (RGB)" in out
    assert "1 unreadable image(s) skipped (first: " + f"{root}/train/cat/broken0.jpg" in out
    manifest = manifest_of(url)
    (Path(url) / manifest["parts"]["test"]["key"]).unlink()   # the search must not need it
    run = worker(url)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "decoded the dataset" not in run.stderr, "evo init decoded it; the worker only loads it"
    people = individuals(url)
    assert len(people) == 2 and all(p["metrics"]["data"] == manifest["data_sha256"] for p in people)
    code, out, _ = cli(capsys, "status", url)
    assert "  data: 3 classes (cat, dog, fish); 24 train / 9 val / 9 test images; 3x22x22" in out
    code, out, err = cli(capsys, "arch", url, "best", "--json")
    assert code == 0 and (json.loads(out)["input_shape"], json.loads(out)["num_classes"]) == ([3, 22, 22], 3), err
    # the test part is gone: the export needs it, so a new generation is decoded for it
    best = tmp_path / "best"
    code, out, err = cli(capsys, "best", url, "--export", str(best))
    assert code == 0, err
    assert f"evo evaluate {best}\n" in out and "load.py --images FOLDER" in out and "--dataset" not in out
    info = json.loads((best / "model.json").read_text())
    assert info["classes"] == ["cat", "dog", "fish"] and info["preprocessing"]["size"] == 22
    assert info["data_id"] == manifest["data_sha256"]
    code, out, err = cli(capsys, "evaluate", str(best))
    assert code == 0 and "test accuracy" in out and "/9 images of" in out, (out, err)
    code, out, err = cli(capsys, "evaluate", str(best), "--images", str(root / "test"), "--json")
    assert code == 0 and json.loads(out)["images"] == 9, err
    code, out, err = cli(capsys, "evaluate", str(best), "--images", str(root))
    assert code == 2 and err.count("\n") == 1 and "not one of the model's classes" in err
    load = subprocess.run([sys.executable, str(best / "load.py"), "--images", str(root / "test" / "dog"), "--json"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert load.returncode == 0, load.stderr
    predictions = json.loads(load.stdout)["predictions"]
    assert len(predictions) == 3 and {p["name"] for p in predictions} <= {"cat", "dog", "fish"}
    # a reader that stops early (`load.py --images DIR | head -1`) is no error and no traceback:
    # here the reader has gone before load.py writes at all
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        gone = subprocess.run([sys.executable, str(best / "load.py"), "--images", str(root / "test" / "dog")],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, cwd=tmp_path)
    finally:
        os.close(write_end)
    assert gone.returncode == 0 and gone.stderr == "", gone.stderr


@pytest.mark.slow  # real worker processes
@pytest.mark.parametrize("kind", ["npz", "hf"])
def test_arrays_and_hugging_face_runs(tmp_path, kind):
    path = make_npz(tmp_path / "d.npz", layout="nchw") if kind == "npz" else make_hf(tmp_path / "hf")
    url = str(tmp_path / "pop")
    extra = ("--image-size", "16") if kind == "hf" else ()
    init = evo("init", url, "--dataset", f"{kind}={path}", "-P", "2", "--steps", "6", "--batch-size", "6",
               "--defer-decode", *extra)
    assert init.returncode == 0, init.stderr
    assert "decoded by the first worker" in init.stdout and not (Path(url) / "data").exists()
    run = worker(url)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("decoded the dataset in") == 1
    manifest = manifest_of(url)
    assert all(p["metrics"]["data"] == manifest["data_sha256"] for p in individuals(url))
    assert manifest["input_shape"] == [3, 16, 16] and manifest["class_names"] == ["cat", "dog", "fish"]


@pytest.mark.slow  # real worker processes
def test_real_photographs_run(tmp_path):
    root = lfw_folder(tmp_path / "lfw", per_class=40)
    url = str(tmp_path / "pop")
    init = evo("init", url, "--dataset", f"imagefolder={root}", "-P", "2", "--steps", "30", "--batch-size", "16",
               "--no-augment")
    assert init.returncode == 0, init.stderr
    assert "2 classes (face, other)" in init.stdout and "1x25x25 (grey)" in init.stdout
    run = worker(url, n=2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert all(0.0 <= p["fitness"] <= 1.0 for p in individuals(url))


@pytest.mark.slow  # real worker processes
def test_bad_data_is_one_line_at_init_and_in_the_worker(tmp_path, capsys):
    root = make_image_folder(tmp_path / "pets", per_class=4, corrupt=3)
    url = str(tmp_path / "pop")
    code, _, err = cli(capsys, "init", url, "--dataset", f"imagefolder={root}", "--batch-size", "4")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{root}/train/cat/broken0.jpg" in err and "--max-bad-fraction" in err
    assert not (Path(url) / "config.json").exists(), "no config for data that cannot be used"
    code, _, err = cli(capsys, "init", url, "--dataset", f"imagefolder={root}", "--defer-decode", "-P", "2",
                       "--steps", "2", "--batch-size", "4")
    assert code == 0, err
    run = worker(url)
    assert run.returncode == 2, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("evo worker: error: imagefolder: ") and "broken0.jpg" in last, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    code, out, _ = cli(capsys, "status", url)
    assert "data: failed: imagefolder: " in out


# ----- models adapt to the data ------------------------------------------------------

@pytest.mark.parametrize("space_name", ["large_scale", "nasnet", "toy"])
@pytest.mark.parametrize("shape, classes", [((1, 25, 25), 2), ((3, 22, 22), 3)])
def test_every_search_space_builds_for_the_datas_shape(space_name, shape, classes):
    import torch

    import toy_space  # noqa: F401  (registers the toy space)
    from evo.spaces.nasnet import NasnetSettings
    from evo.spaces import make_space

    config = RunConfig(dataset="imagefolder=/x", search_space=space_name,
                       plugins={"nasnet": NasnetSettings(cells_per_stack=1, filters=4)})
    space = make_space(config)
    rng = np.random.default_rng(0)
    for dna in [space.initial(rng)] + [space.random(rng) for _ in range(3)]:
        model = space.build(dna, shape, classes)
        out = model(torch.zeros(2, *shape))
        assert tuple(out.shape) == (2, classes), (space_name, dna)


def test_training_runs_on_user_data_for_every_space(tmp_path):
    import torch  # noqa: F401

    import toy_space  # noqa: F401
    from evo.config import TrainSettings
    from evo.data.datasets import read_dataset
    from evo.data.device import to_device
    from evo.spaces.nasnet import NasnetSettings
    from evo.spaces import make_space
    from evo.train.training import accuracy, train

    root = lfw_folder(tmp_path / "lfw", per_class=20)
    data = to_device(read_dataset(f"imagefolder={root}", splits=("train", "val")), "cpu",
                     splits=("train", "val"))
    with pytest.raises(ValueError, match="the search never reads the test split"):
        data.split("test")
    settings = TrainSettings(steps=3, batch_size=8, precision="fp32")
    for name in ("large_scale", "nasnet", "toy"):
        space = make_space(RunConfig(dataset=f"imagefolder={root}", search_space=name,
                                     plugins={"nasnet": NasnetSettings(cells_per_stack=1, filters=4)}))
        model = space.build(space.random(np.random.default_rng(1)), data.input_shape, data.num_classes)
        result = train(model, data, settings, learning_rate=0.05, seed=0, device="cpu")
        assert result.steps == 3
        assert 0.0 <= accuracy(model, data.val_x, data.val_y, data, 16) <= 1.0


# ----- the fleet --------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import sys
    count_file = sys.argv[1]
    import evo.data.decoding as decoding
    real = decoding.preprocess_image
    def counted(data, prep):
        with open(count_file, "a") as f:
            f.write("1\\n")
        return real(data, prep)
    decoding.preprocess_image = counted
    from launch.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.slow
def test_eight_workers_on_a_bucket_decode_once_and_train_on_one_cache(tmp_path, gcs_bucket_url):
    """The issue's fleet test with real `evo worker` processes (the quick suite runs the same
    race with 8 torch-free processes in tests/test_datacache.py)."""
    import gcsfs

    local = make_image_folder(tmp_path / "imgs", per_class=6)
    bucket = gcs_bucket_url.removeprefix("gs://").split("/")[0]
    gcsfs.GCSFileSystem().put(str(local), f"{bucket}/imgs", recursive=True)
    init = evo("init", gcs_bucket_url, "--dataset", f"imagefolder=gs://{bucket}/imgs", "-P", "4", "--steps", "4",
               "--batch-size", "6", "--defer-decode")
    assert init.returncode == 0, init.stderr
    count = tmp_path / "decodes.txt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(count), "worker", gcs_bucket_url,
                               "--max-individuals", "1", "--device", "cpu", "--index", str(i)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(8)]
    logs = []
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        logs.append(err)
    assert len(count.read_text().splitlines()) == 3 * (6 + 3 + 3) + 1, "every image decoded once, fleet-wide"
    assert sum(log.count("decoded the dataset in") for log in logs) == 1
    manifest = manifest_of(gcs_bucket_url)
    people = individuals(gcs_bucket_url)
    assert len(people) == 8 and {p["metrics"]["data"] for p in people} == {manifest["data_sha256"]}


def test_data_options_are_checked_when_given(tmp_path, capsys):
    root = make_image_folder(tmp_path / "pets", per_class=4, corrupt=0)
    url = str(tmp_path / "pop")
    for argv, words in [
        (("--dataset", "digits", "--image-size", "32"), ("--image-size: data.image_size applies only to",)),
        (("--dataset", f"imagefolder={root}", "--image-size", "2"), ("--image-size: data.image_size must be",)),
        (("--dataset", f"imagefolder={root}", "--val-fraction", "0"), ("--val-fraction:",)),
        (("--dataset", f"imagefolder={root}", "--label-column", "y"), ("--label-column: data.label_column applies",)),
        (("--dataset", "imagefolder="), ("--dataset: dataset imagefolder needs a path",)),
        (("--dataset", f"imagefolder={tmp_path / 'nope'}"), ("does not exist",)),
    ]:
        code, out, err = cli(capsys, "init", url, *argv)
        assert code == 2 and err.count("\n") == 1 and all(w in err for w in words), (argv, err)
        assert not Path(url).exists(), "nothing written"
    code, out, err = cli(capsys, "init", url, "--dataset", f"imagefolder={root}", "--image-size", "12",
                         "--color", "grayscale", "--resize", "square", "--batch-size", "4")
    assert code == 0 and "1x12x12 (grey)" in out, err
    config = RunConfig.from_json((Path(url) / "config.json").read_text())
    assert config.data == DataSettings(image_size=12, color="grayscale", resize="square")
    code, out, err = cli(capsys, "init", url, "--dataset", f"imagefolder={root}", "--image-size", "12",
                         "--color", "grayscale", "--resize", "square", "--batch-size", "4")
    assert code == 0 and "already holds this config" in out and "1x12x12 (grey)" in out, err

"""Larger images of the user's own (issue 24): the automatic image size follows the stem of the
run's search space (224 in the nasnet space when its stem will be the ImageNet stem, 64
otherwise, as before); `evo init` checks the estimated training memory before it writes
anything and names the size that would fit; `python -m evo.data.sample_photos` makes a
128-px image folder from scikit-learn's two photographs, and a run on it (search, then
`evo retrain --top 1`) works end to end on the ImageNet stem, whose multiply-adds per image
`evo arch URL best` reports at least 10x below the same cells on the CIFAR stem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dna.nasnet_network import activation_elements, training_bytes
from evo.config import DataSettings, RunConfig
from evo.data.cache import cache_key
from evo.data.sample_photos import make_folder
from evo.data.userdata import planned_input
from evo.data.spec import DatasetSpec
from evo.spaces import make_space
from evo.spaces.nasnet import NasnetSettings
from launch.cli import main


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``evo ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def evo(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """A real ``evo`` process (one thread: the test machine is shared)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "launch", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> str:
    """A 128-px image folder of the two photographs, 12 images per class."""
    folder = str(tmp_path_factory.mktemp("photos") / "photos")
    assert make_folder(folder, size=128, per_class=12) == {"china": 12, "flower": 12}
    return folder


def nasnet(**settings) -> RunConfig:
    return RunConfig(search_space="nasnet", plugins={"nasnet": NasnetSettings(**settings)})


# ----- the automatic size's cap follows the stem -----------------------------------

def test_the_search_space_says_how_large_the_automatic_size_may_be():
    assert make_space(nasnet()).auto_image_size_cap() == 224                 # auto, F = 24: ImageNet stem
    assert make_space(nasnet(stem="imagenet", filters=8)).auto_image_size_cap() == 224
    assert make_space(nasnet(stem="cifar")).auto_image_size_cap() == 64
    assert make_space(nasnet(filters=4)).auto_image_size_cap() == 64        # auto stays CIFAR below F = 8
    assert make_space(RunConfig()).auto_image_size_cap() == 64               # large_scale
    assert make_space(RunConfig(search_space="nasbench201")).auto_image_size_cap() == 64


def test_evo_init_writes_the_spaces_cap_and_the_images_keep_their_size_only_under_it(capsys, tmp_path, photos):
    spec = f"imagefolder={photos}"
    runs = {"imagenet": ("--search-space", "nasnet"),
            "cifar": ("--search-space", "nasnet", "--set", "nasnet.stem=cifar"),
            "large_scale": ()}
    sizes = {}
    for name, options in runs.items():
        url = str(tmp_path / name)
        code, out, err = cli(capsys, "init", url, "--dataset", spec, "--defer-decode", "--device-memory", "0",
                             "--batch-size", "8", *options)
        assert code == 0, err
        data = json.loads(Path(url, "config.json").read_text())["data"]
        config = RunConfig.from_json(Path(url, "config.json").read_text())
        sizes[name] = (data.get("auto_size_cap"), planned_input(DatasetSpec.parse(spec), config.data)["input_shape"])
    assert sizes["imagenet"] == (224, (3, 128, 128))
    # the CIFAR stem and the other spaces: as before (64, and config.json without the key)
    assert sizes["cifar"] == (None, (3, 64, 64))
    assert sizes["large_scale"] == (None, (3, 64, 64))


def test_configs_without_the_cap_keep_their_bytes_and_their_cache_name():
    default = DataSettings()
    assert "auto_size_cap" not in default.to_dict()
    old = RunConfig(dataset="imagefolder=/x", search_space="nasnet")   # as a config.json written before
    assert RunConfig.from_json(old.to_json()) == old and "auto_size_cap" not in old.to_json()
    assert old.data.auto_size_cap == 64
    raised = DataSettings(auto_size_cap=224)
    assert cache_key("imagefolder=/x", raised) != cache_key("imagefolder=/x", default)
    with pytest.raises(ValueError, match="data.auto_size_cap"):
        DataSettings(auto_size_cap=2)


# ----- the memory estimate, checked before anything is written ------------------------

def test_the_estimate_is_per_image_larger_on_the_cifar_stem_and_grows_with_the_batch():
    small = activation_elements(3, 24, "imagenet", (3, 128, 128))
    full = activation_elements(3, 24, "cifar", (3, 128, 128))
    assert full > 10 * small
    assert training_bytes(3, 24, "imagenet", (3, 128, 128), 50) == 50 * 4 * small


def test_evo_init_refuses_a_size_that_does_not_fit_and_names_one_that_does(capsys, tmp_path, photos):
    spec = f"imagefolder={photos}"
    options = ("--search-space", "nasnet", "--batch-size", "16")
    url = tmp_path / "run"
    # --device-memory is the user's statement of the workers' device; 150 MiB is too small for
    # batches of 16 128-px images on the ImageNet stem (about 19 MiB of activations each)
    code, out, err = cli(capsys, "init", str(url), "--dataset", spec, *options, "--device-memory", "150M")
    assert code != 0
    line = err.strip().splitlines()[-1]
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "3x128x128" in line and "150.0 MiB" in line and "would fit" in line
    assert not url.exists() or not any(url.iterdir())          # nothing written: no config, no data/
    fits = int(line.split("--image-size ")[1].split()[0])
    assert 64 < fits < 128
    code, out, err = cli(capsys, "init", str(url), "--dataset", spec, *options, "--device-memory", "150M",
                         "--image-size", str(fits), "--defer-decode")
    assert code == 0, err
    # one pixel more does not fit (the named size is the largest that does)
    other = tmp_path / "other"
    code, out, err = cli(capsys, "init", str(other), "--dataset", spec, *options, "--device-memory", "150M",
                         "--image-size", str(fits + 1))
    assert code != 0 and "would fit" in err


def test_without_device_memory_given_evo_init_checks_the_machines(capsys, tmp_path, photos, monkeypatch):
    # Stand-in: the machine's memory as init_data reads it is monkeypatched to 100 MiB (the real
    # one is whatever this test machine has); the check must use it and refuse.
    from launch.commands import init_data

    monkeypatch.setattr(init_data, "training_device_memory", lambda: (100 * 2**20, "the stand-in's memory"))
    url = tmp_path / "run"
    code, out, err = cli(capsys, "init", str(url), "--dataset", f"imagefolder={photos}", "--search-space", "nasnet",
                         "--batch-size", "16")
    assert code != 0 and "the stand-in's memory has 100.0 MiB" in err and "--image-size" in err
    assert not url.exists() or not any(url.iterdir())
    # 0 turns the check off; the digits and other built-in datasets are never checked
    code, out, err = cli(capsys, "init", str(url), "--dataset", f"imagefolder={photos}", "--search-space", "nasnet",
                         "--batch-size", "16", "--device-memory", "0", "--defer-decode")
    assert code == 0, err
    code, out, err = cli(capsys, "init", str(tmp_path / "digits"), "--search-space", "nasnet")
    assert code == 0, err


def test_a_bad_device_memory_is_refused_in_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["init", str(tmp_path / "r"), "--device-memory", "lots"])
    assert "--device-memory: must be a memory size such as 80G" in capsys.readouterr().err


# ----- the sample photographs -----------------------------------------------------------

def test_the_photo_folder_is_seeded_and_refuses_a_folder_in_use(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_folder(str(a), size=32, per_class=3, seed=5)
    make_folder(str(b), size=32, per_class=3, seed=5)
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*.jpg"))
    assert names == [f"{c}/{c}_{i:05d}.jpg" for c in ("china", "flower") for i in range(3)]
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    with pytest.raises(ValueError, match="already exists"):
        make_folder(str(a), size=32, per_class=3)
    with pytest.raises(ValueError, match="size must be"):
        make_folder(str(tmp_path / "c"), size=1000)


# ----- a 128-px run end to end ------------------------------------------------------------

@pytest.mark.slow   # real worker and retrain processes: about a minute of CPU
def test_a_128_px_image_folder_run_searches_retrains_and_costs_ten_times_less_than_on_the_cifar_stem(tmp_path):
    folder = str(tmp_path / "photos")
    made = subprocess.run([sys.executable, "-m", "evo.data.sample_photos", folder, "--per-class", "20"],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    url = str(tmp_path / "run")
    init = evo("init", url, "--dataset", f"imagefolder={folder}", "--search-space", "nasnet",
               "--nasnet-cells", "1", "--nasnet-filters", "8", "-P", "2", "--steps", "2", "--batch-size", "4")
    assert init.returncode == 0, init.stderr
    assert "3x128x128" in init.stdout
    search = evo("worker", url, "--max-individuals", "3", "--device", "cpu", "--index", "0")
    assert search.returncode == 0, search.stderr
    retrain = evo("retrain", url, "--top", "1", "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--json")
    assert retrain.returncode == 0, retrain.stderr
    [done] = json.loads(retrain.stdout.strip().splitlines()[-1])["retrains"]
    assert done["state"] == "done" and 0 <= done["test_accuracy"] <= 1
    best = json.loads(evo("arch", url, "best", "--json").stdout)
    cifar = json.loads(evo("arch", url, "best", "--json", "--stem", "cifar").stdout)
    assert best["stem"] == "imagenet" and cifar["stem"] == "cifar"
    assert best["input_shape"] == [3, 128, 128] == cifar["input_shape"]
    assert cifar["multiply_adds"] >= 10 * best["multiply_adds"]
    # retraining read the run's own 128-px images (its cache, its data settings), so it built
    # the same network with the auxiliary head the 128-px map gives (not 64 px's, 25x larger)
    retrained = json.loads(evo("arch", url, done["source"], "--json").stdout)   # best may tie with it
    assert done["parameters"] == retrained["parameters"] + retrained["aux_head_parameters"]
    # and its export says how the images were decoded, so `evo evaluate` reads them at 128 px too
    export = Path(url, "retrain", done["rid"], "export")
    assert json.loads((export / "model.json").read_text())["preprocessing"]["size"] == 128
    evaluated = evo("evaluate", str(export), "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr

"""The user's own images: image folders, .npz arrays and Hugging Face datasets become the
run's arrays (evo.data.decoding, evo.data.imagefolder, evo.data.arrays, evo.data.huggingface), and every kind of bad data
gets a one-line error naming the file. No torch here."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dna.portable_images import Preprocessing, preprocess_image
from evo.config import ConfigError, DataSettings, RunConfig
from evo.data.base import DatasetError
from evo.data.datasets import check_dataset, read_dataset
from evo.data.decoding import carve
from helpers_images import CLASSES, class_image, lfw_folder, make_hf, make_image_folder, make_npz, save


# ----- image folders --------------------------------------------------------------------

def test_image_folder_of_mixed_files_decodes_to_one_shape(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    ds = read_dataset(f"imagefolder={root}")
    # sizes 20x24, 32x32, 28x20, 24x24 -> shorter sides 20, 32, 20, 24: median 22
    assert ds.input_shape == (3, 22, 22), "mixed grey and colour images: RGB at the median shorter side"
    assert ds.class_names == CLASSES and ds.num_classes == 3
    assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (36, 9, 9)   # the corrupt one skipped
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.int64
    assert sorted(np.bincount(ds.train_y).tolist()) == [12, 12, 12]
    assert ds.summary["unreadable"] == 1 and "broken0.jpg" in ds.summary["unreadable_files"][0]
    assert ds.preprocessing["size"] == 22 and ds.preprocessing["color"] == "rgb"
    # class k has brightness 60 + 70 k: labels follow the sorted class folders
    means = [ds.train_x[ds.train_y == k].mean() for k in range(3)]
    assert means[0] < means[1] < means[2]


def test_image_size_colour_and_resize_are_the_users_choice(tmp_path):
    root = make_image_folder(tmp_path / "imgs", corrupt=0)
    ds = read_dataset(f"imagefolder={root}", settings=DataSettings(image_size=12, color="grayscale"))
    assert ds.input_shape == (1, 12, 12) and ds.preprocessing == {**ds.preprocessing, "size": 12,
                                                                   "color": "grayscale", "resize": "crop"}
    # crop keeps the centre at the aspect ratio; square squashes the whole image
    wide = Image.new("L", (40, 20), 0)
    wide.paste(255, (0, 0, 6, 20))   # a white band at the left edge
    buf = io.BytesIO()
    wide.save(buf, format="PNG")
    crop, chw = preprocess_image(buf.getvalue(), Preprocessing("grayscale", 10, "crop"))
    square, _ = preprocess_image(buf.getvalue(), Preprocessing("grayscale", 10, "square"))
    assert chw == (1, 10, 10)
    assert np.frombuffer(crop, np.uint8).reshape(10, 10)[:, 0].max() == 0, "crop cut the left band off"
    assert np.frombuffer(square, np.uint8).reshape(10, 10)[:, 0].min() > 150, "square kept it"


def test_one_folder_is_split_by_fractions_stratified_and_seeded(tmp_path):
    root = make_image_folder(tmp_path / "imgs", layout="one", per_class=20, corrupt=0)
    a = read_dataset(f"imagefolder={root}", settings=DataSettings(val_fraction=0.2, test_fraction=0.1))
    assert (len(a.train_y), len(a.val_y), len(a.test_y)) == (42, 12, 6)
    assert np.bincount(a.val_y).tolist() == [4, 4, 4] and np.bincount(a.test_y).tolist() == [2, 2, 2]
    b = read_dataset(f"imagefolder={root}", settings=DataSettings(val_fraction=0.2, test_fraction=0.1))
    assert np.array_equal(a.val_x, b.val_x) and np.array_equal(a.test_x, b.test_x)
    c = read_dataset(f"imagefolder={root}", settings=DataSettings(val_fraction=0.2, test_fraction=0.1,
                                                                   split_seed=7))
    assert not np.array_equal(a.val_x, c.val_x), "another split seed cuts another validation set"
    rows = lambda d: {x.tobytes() for x in np.concatenate([d.train_x, d.val_x, d.test_x])}  # noqa: E731
    assert rows(a) == rows(c) and len(rows(a)) == 60, "the splits partition the images"


def test_carve_is_stratified_and_keeps_every_class():
    labels = np.array([0] * 50 + [1] * 7 + [2] * 1)
    kept, cut = carve(labels, 0.2, seed=0, salt=1)
    assert len(cut) == round(0.2 * 58) and set(kept) | set(cut) == set(range(58)) and not set(kept) & set(cut)
    assert np.bincount(labels[cut], minlength=3)[0] == 10
    assert 2 in labels[kept], "a class never gives its last image"


def test_real_photographs_from_scikit_image(tmp_path):
    root = lfw_folder(tmp_path / "lfw", per_class=30)
    ds = read_dataset(f"imagefolder={root}")
    assert ds.input_shape == (1, 25, 25), "grey 25x25 photographs stay grey and 25x25"
    assert ds.class_names == ("face", "other") and len(ds.train_y) + len(ds.val_y) + len(ds.test_y) == 60
    original = np.asarray(Image.open(root / "face" / "000.png"))
    assert any(np.array_equal(x[0], original) for x in np.concatenate([ds.train_x, ds.val_x, ds.test_x])), \
        "at their own size, the pixels are the photograph's, unchanged"


def test_check_dataset_lists_without_decoding(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    facts = check_dataset(f"imagefolder={root}")
    assert facts["classes"] == 3 and facts["images"] == {"train": 37, "val": 9, "test": 9}


# ----- npz and Hugging Face -----------------------------------------------------------

@pytest.mark.parametrize("layout, dtype", [("nhwc", "uint8"), ("nchw", "uint8"), ("nhw", "float32")])
def test_npz_layouts_and_types_are_detected(tmp_path, layout, dtype):
    path = make_npz(tmp_path / "d.npz", layout=layout, dtype=dtype)
    ds = read_dataset(f"npz={path}")
    channels = 1 if layout == "nhw" else 3
    assert ds.input_shape == (channels, 16, 16) and ds.class_names == CLASSES
    assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (32, 12, 4), "no x_test: a test split is carved"
    raw = np.load(path)
    first = raw["x_train"][0]
    if layout == "nhwc":
        first = first.transpose(2, 0, 1)
    elif layout == "nhw":
        first = np.rint(first * 255)[None]
    train = {x.tobytes() for x in ds.train_x}
    assert first.astype(np.uint8).tobytes() in train


def test_npz_without_val_gets_one_carved(tmp_path):
    path = make_npz(tmp_path / "d.npz", val=False)
    ds = read_dataset(f"npz={path}", settings=DataSettings(val_fraction=0.25, test_fraction=0.0))
    assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (27, 9, 0)


@pytest.mark.parametrize("kind", ["disk", "parquet"])
def test_hugging_face_datasets_read_offline(tmp_path, kind):
    path = make_hf(tmp_path / ("hf" if kind == "disk" else "hf/train-00000-of-00001.parquet"), kind=kind)
    ds = read_dataset(f"hf={path}", settings=DataSettings(image_size=16))
    assert ds.class_names == CLASSES and ds.input_shape == (3, 16, 16)
    if kind == "disk":   # train + test saved; validation carved from train
        assert len(ds.test_y) == 6 and len(ds.train_y) + len(ds.val_y) == 24
    else:
        assert len(ds.train_y) + len(ds.val_y) + len(ds.test_y) == 30
    with pytest.raises(DatasetError, match="no column 'pixels'"):
        read_dataset(f"hf={path}", settings=DataSettings(image_column="pixels"))


def test_hugging_face_columns_can_be_named(tmp_path):
    import datasets

    x, y = np.zeros((12, 8, 8), np.uint8), np.arange(12) % 2
    for i in range(12):
        x[i] += np.uint8(200 * y[i])
    ds = datasets.Dataset.from_dict({"pixels": x.tolist(), "kind": [str(v) for v in y]})
    ds.save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(DatasetError, match="which column holds the images"):
        read_dataset(f"hf={tmp_path / 'plain'}")
    got = read_dataset(f"hf={tmp_path / 'plain'}", settings=DataSettings(image_column="pixels",
                                                                       label_column="kind", test_fraction=0))
    assert got.class_names == ("0", "1") and got.input_shape == (1, 8, 8)


# ----- bad data: one line naming the file ---------------------------------------------

def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_unreadable_images_above_the_threshold_fail_naming_the_first(tmp_path):
    root = make_image_folder(tmp_path / "imgs", corrupt=3, per_class=6)
    with pytest.raises(DatasetError) as exc:
        read_dataset(f"imagefolder={root}")
    text = one_line(exc)
    assert f"{root}/train/cat/broken0.jpg" in text and "--max-bad-fraction" in text
    ds = read_dataset(f"imagefolder={root}", settings=DataSettings(max_bad_fraction=0.2))
    assert ds.summary["unreadable"] == 3


@pytest.mark.parametrize("case, words", [
    ("empty class", ("class folder", "train/dog has no images")),
    ("one class", ("train/cat is the only class folder",)),
    ("missing", ("does not exist",)),
    ("loose image", ("train/loose.png is not in a class folder",)),
    ("stray folder", ("extra is not a split",)),
    ("unknown val class", ("val/zebra has no training folder",)),
    ("all corrupt class", ("class dog has no readable training images",)),
])
def test_image_folder_problems(tmp_path, case, words):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        for k in range(4):
            save(class_image(0, (8, 8), rng, False), root / "train" / name / f"{k}.png")
    if case == "empty class":
        for f in (root / "train" / "dog").iterdir():
            f.unlink()
        (root / "train" / "dog" / "readme.md").write_text("no images here")
    elif case == "one class":
        for f in (root / "train" / "dog").iterdir():
            f.unlink()
        (root / "train" / "dog").rmdir()
    elif case == "missing":
        root = tmp_path / "nowhere"
    elif case == "loose image":
        save(class_image(0, (8, 8), rng, False), root / "train" / "loose.png")
    elif case == "stray folder":
        save(class_image(0, (8, 8), rng, False), root / "extra" / "cat" / "x.png")
    elif case == "unknown val class":
        save(class_image(0, (8, 8), rng, False), root / "val" / "zebra" / "x.png")
    elif case == "all corrupt class":
        for f in (root / "train" / "dog").iterdir():
            f.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError) as exc:
        read_dataset(f"imagefolder={root}", settings=DataSettings(max_bad_fraction=0.9))
    text = one_line(exc)
    for w in words:
        assert w in text, (case, text)


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz={path}"


@pytest.mark.parametrize("arrays, words", [
    ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.array([0, 1, 0])},
     ("x_train has 4 images but y_train has 3 labels",)),
    ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.array([0, 1, 0, 1]),
      "x_val": np.zeros((2, 8, 8), np.uint8), "y_val": np.array([0, 5])},
     ("y_val has label 5, out of range", "0..1")),
    ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.array([0, -1, 0, 1])},
     ("y_train: label -1 is out of range",)),
    ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.zeros(4, int)}, ("only one class",)),
    ({"x_train": np.zeros((4, 5, 8, 8), np.uint8), "y_train": np.array([0, 1, 0, 1])},
     ("x_train has shape (4, 5, 8, 8)",)),
    ({"x_train": np.full((4, 8, 8), 300.0), "y_train": np.array([0, 1, 0, 1])}, ("pixel values 300..300",)),
    ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.array([0, 1, 0, 1]),
      "x_test": np.zeros((1, 8, 8), np.uint8)}, ("has x_test but no y_test",)),
    ({"images": np.zeros((4, 8, 8), np.uint8)}, ("needs arrays x_train and y_train",)),
])
def test_npz_problems(tmp_path, arrays, words):
    spec = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError) as exc:
        read_dataset(spec)
    text = one_line(exc)
    assert str(tmp_path / "bad.npz") in text
    for w in words:
        assert w in text, text


def test_npz_object_arrays_are_never_unpickled(tmp_path):
    spec = _npz(tmp_path / "evil.npz", x_train=np.array([object(), 1], dtype=object), y_train=np.array([0, 1]))
    with pytest.raises(DatasetError) as exc:
        read_dataset(spec)
    assert "never uses" in one_line(exc) and "pickle" in one_line(exc) and "allow_pickle" not in one_line(exc)


def test_files_that_are_not_npz_archives(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((4, 8, 8), np.uint8))
    save(class_image(0, (8, 8), np.random.default_rng(0), False), tmp_path / "x.png")
    for name, words in (("one.npy", "is a .npy file (one array)"), ("x.png", "is not an .npz file (not a zip")):
        with pytest.raises(DatasetError) as exc:
            read_dataset(f"npz={tmp_path / name}")
        assert f"{tmp_path / name} {words}" in one_line(exc)


def test_hf_label_out_of_range(tmp_path):
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    rng = np.random.default_rng(0)
    ds = datasets.Dataset.from_dict({"image": [class_image(i % 2, (8, 8), rng, False) for i in range(6)],
                                     "label": [0, 1, 0, 1, 0, 1]}, features=feats)
    test = datasets.Dataset.from_dict({"image": [class_image(0, (8, 8), rng, False)], "label": [-1]},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "label": datasets.Value("int64")}))
    datasets.DatasetDict({"train": ds, "test": test}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DatasetError) as exc:
        read_dataset(f"hf={tmp_path / 'hf'}")
    assert "split test has label -1, out of range" in one_line(exc) and "unlabelled" in one_line(exc)


# ----- settings -----------------------------------------------------------------------

def test_data_settings_are_checked_when_given():
    with pytest.raises(ConfigError, match="data.image_size must be an integer in 4..1024"):
        DataSettings(image_size=2)
    with pytest.raises(ConfigError, match="below 1"):
        DataSettings(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ConfigError, match="data.image_size applies only to imagefolder, npz, hf datasets, not digits"):
        RunConfig(dataset="digits", data=DataSettings(image_size=16))
    with pytest.raises(ConfigError, match="data.label_column applies only to hf"):
        RunConfig(dataset="npz=/x.npz", data=DataSettings(label_column="y"))
    config = RunConfig(dataset="imagefolder=/data/pets", data=DataSettings(image_size=48, resize="square"))
    assert RunConfig.from_json(config.to_json()) == config
    old = json.loads(RunConfig().to_json())
    del old["data"]
    assert RunConfig.from_dict(old) == RunConfig(), "configs written before the data settings still read"
    assert replace(config, data=DataSettings()).data.val_fraction == 0.1

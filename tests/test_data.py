"""evo.data.datasets: digits and CIFAR loading, splits, normalisation, and refusing bad files."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from evo.data.builtin import CIFAR_VALIDATION
from evo.data.base import CIFAR_AUGMENT, NO_AUGMENT, DatasetError
from evo.data.datasets import check_dataset, load_dataset, read_dataset
from evo.data.device import channel_stats

N_PER_BATCH = 1010   # 5 batches: 5050 training images, so 50 train + 5000 validation
N_TEST = 120


def _images(ids: np.ndarray) -> np.ndarray:
    """Fake CIFAR rows (N, 3072) that encode each image's id: R plane = id % 251, G = id // 251."""
    data = np.zeros((len(ids), 3072), dtype=np.uint8)
    data[:, :1024] = (ids % 251)[:, None]
    data[:, 1024:2048] = (ids // 251)[:, None]
    data[:, 2048:] = np.arange(1024, dtype=np.uint8)[None, :]   # B plane: a known pattern
    return data


def _ids(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_images` for NCHW arrays."""
    return x[:, 1, 0, 0].astype(np.int64) * 251 + x[:, 0, 0, 0].astype(np.int64)


def _write(path, obj, protocol=pickle.DEFAULT_PROTOCOL) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def make_cifar10(root, *, protocol=pickle.DEFAULT_PROTOCOL, skip=()) -> str:
    """A small directory in the official 'CIFAR-10 python version' format; returns its path."""
    d = root / "cifar-10-batches-py"
    d.mkdir()
    for b in range(5):
        name = f"data_batch_{b + 1}"
        if name in skip:
            continue
        ids = np.arange(b * N_PER_BATCH, (b + 1) * N_PER_BATCH)
        _write(d / name, {b"batch_label": b"training batch", b"labels": [int(i % 10) for i in ids],
                          b"data": _images(ids), b"filenames": [f"{i}.png".encode() for i in ids]}, protocol)
    if "test_batch" not in skip:
        ids = np.arange(60_000, 60_000 + N_TEST)
        _write(d / "test_batch", {b"batch_label": b"testing batch", b"labels": [int(i % 10) for i in ids],
                                  b"data": _images(ids)}, protocol)
    return str(d)


def make_cifar100(root) -> str:
    d = root / "cifar-100-python"
    d.mkdir()
    ids = np.arange(5 * N_PER_BATCH)
    _write(d / "train", {b"fine_labels": [int(i % 100) for i in ids], b"coarse_labels": [int(i % 20) for i in ids],
                         b"data": _images(ids)})
    ids = np.arange(60_000, 60_000 + N_TEST)
    _write(d / "test", {b"fine_labels": [int(i % 100) for i in ids], b"coarse_labels": [0] * N_TEST,
                        b"data": _images(ids)})
    return str(d)


def _rows(x: np.ndarray, y: np.ndarray) -> list[bytes]:
    return sorted(xi.tobytes() + bytes([yi]) for xi, yi in zip(x, y))


# --- digits ---------------------------------------------------------------------------

def test_digits_splits_are_a_deterministic_partition():
    from sklearn.datasets import load_digits

    ds = read_dataset("digits")
    assert (ds.name, ds.num_classes, ds.input_shape, ds.augment) == ("digits", 10, (1, 8, 8), NO_AUGMENT)
    assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (1078, 359, 360)
    for x, y in ((ds.train_x, ds.train_y), (ds.val_x, ds.val_y), (ds.test_x, ds.test_y)):
        assert x.dtype == np.uint8 and y.dtype == np.int64 and x.shape[1:] == (1, 8, 8)
    assert ds.train_x.max() == 255 and ds.train_x.min() == 0
    # The three splits together are exactly the bundled data set (as a multiset of rows).
    bunch = load_digits()
    full_x = np.rint(bunch.images * 255 / 16).astype(np.uint8)[:, None]
    together_x = np.concatenate([ds.train_x, ds.val_x, ds.test_x])
    together_y = np.concatenate([ds.train_y, ds.val_y, ds.test_y])
    assert _rows(together_x, together_y) == _rows(full_x, bunch.target)
    again = read_dataset("digits")
    assert np.array_equal(again.val_x, ds.val_x) and np.array_equal(again.test_y, ds.test_y)
    other = read_dataset("digits", split_seed=1)
    assert not np.array_equal(other.val_x, ds.val_x)


def test_digits_on_device_normalises_with_train_statistics():
    torch = pytest.importorskip("torch")
    ds = load_dataset("digits", "cpu")
    assert ds.device == torch.device("cpu") and ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    z = ds.normalize(ds.train_x)
    assert z.dtype == torch.float32 and z.shape == ds.train_x.shape
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-3
    assert not ds.augment.enabled


def test_channel_stats_are_exact():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(7, 3, 5, 4), dtype=np.uint8)
    x[:, 2] = 9   # a constant channel gets std 1
    mean, std = channel_stats(x)
    f = x.astype(np.float64)
    assert np.allclose(mean, f.mean(axis=(0, 2, 3)))
    assert np.allclose(std[:2], f.std(axis=(0, 2, 3))[:2]) and std[2] == 1.0


# --- CIFAR ----------------------------------------------------------------------------

def test_cifar10_fake_directory(tmp_path):
    path = make_cifar10(tmp_path)
    ds = read_dataset(f"cifar10={path}")
    assert (ds.num_classes, ds.input_shape, ds.augment) == (10, (3, 32, 32), CIFAR_AUGMENT)
    assert len(ds.val_y) == CIFAR_VALIDATION and len(ds.train_y) == 5 * N_PER_BATCH - CIFAR_VALIDATION
    train_ids, val_ids, test_ids = _ids(ds.train_x), _ids(ds.val_x), _ids(ds.test_x)
    assert sorted(np.concatenate([train_ids, val_ids])) == list(range(5 * N_PER_BATCH))
    assert list(test_ids) == list(range(60_000, 60_000 + N_TEST))   # official test set, in order
    for x, ids, y in ((ds.train_x, train_ids, ds.train_y), (ds.val_x, val_ids, ds.val_y), (ds.test_x, test_ids, ds.test_y)):
        assert np.array_equal(y, ids % 10)                          # labels travel with their images
        assert np.array_equal(x[:, 2].reshape(len(x), -1), np.tile(np.arange(1024, dtype=np.uint8), (len(x), 1)))
    # The parent directory works too, and the split is fixed.
    again = read_dataset(f"cifar10={tmp_path}")
    assert np.array_equal(_ids(again.val_x), val_ids)


def test_cifar100_fake_directory_on_device(tmp_path):
    torch = pytest.importorskip("torch")
    ds = load_dataset(f"cifar100={make_cifar100(tmp_path)}", "cpu")
    assert ds.num_classes == 100 and ds.name == "cifar100" and ds.input_shape == (3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and tuple(ds.train_x.shape[1:]) == (3, 32, 32)
    assert torch.equal(ds.val_y, torch.from_numpy(_ids(ds.val_x.numpy()) % 100))
    assert ds.augment.crop_padding == 4 and ds.augment.flip
    assert len(ds.mean) == len(ds.std) == 3


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_pickle_protocols(tmp_path, protocol):
    # Protocol 2 (as the official Python-2 files) stores bytes via _codecs.encode; 5 uses _frombuffer.
    ds = read_dataset(f"cifar10={make_cifar10(tmp_path, protocol=protocol)}")
    assert len(ds.test_y) == N_TEST


@pytest.mark.slow  # the GCS emulator
def test_cifar_from_a_bucket(tmp_path, gcs_bucket_url):
    import fsspec

    local = make_cifar10(tmp_path)
    bucket = gcs_bucket_url.rsplit("/", 1)[0]
    fs = fsspec.filesystem("gs")
    for name in os.listdir(local):
        with open(os.path.join(local, name), "rb") as f:
            fs.pipe(f"{bucket}/data/cifar-10-batches-py/{name}".removeprefix("gs://"), f.read())
    ds = read_dataset(f"cifar10={bucket}/data")
    assert len(ds.val_y) == CIFAR_VALIDATION
    assert np.array_equal(ds.test_x, read_dataset(f"cifar10={local}").test_x)


def test_memory_urls_name_the_store_not_data(tmp_path):
    """``memory://`` means the in-process population store everywhere in evo; fsspec's memory
    file system, which no other worker process could see, is not a dataset location."""
    import fsspec

    local = make_cifar10(tmp_path)
    fs = fsspec.filesystem("memory")
    for name in os.listdir(local):
        with open(os.path.join(local, name), "rb") as f:
            fs.pipe_file(f"/evo-test-cifar/cifar-10-batches-py/{name}", f.read())
    try:
        for read in (read_dataset, check_dataset):
            with pytest.raises(DatasetError, match="^cifar10: memory://evo-test-cifar: memory:// is evo's "
                                                   "in-process population store"):
                read("cifar10=memory://evo-test-cifar")
    finally:
        fs.rm("/evo-test-cifar", recursive=True)


def _error(spec: str) -> str:
    with pytest.raises(DatasetError) as info:
        read_dataset(spec)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_missing_data_names_the_expected_layout(tmp_path):
    message = _error(f"cifar10={tmp_path / 'nowhere'}")
    assert "nowhere has no data_batch_1" in message
    assert "cifar-10-batches-py/" in message and "data_batch_1..5" in message and "test_batch" in message
    assert "cifar-100-python/" in _error(f"cifar100={tmp_path}")
    path = make_cifar10(tmp_path, skip=("data_batch_3",))
    assert "data_batch_3 is missing" in _error(f"cifar10={path}")


def test_missing_test_batch(tmp_path):
    path = make_cifar10(tmp_path, skip=("test_batch",))
    assert "test_batch is missing" in _error(f"cifar10={path}")


def test_the_search_never_reads_cifars_test_batch(tmp_path):
    from evo.data.base import SEARCH_SPLITS
    from evo.data.datasets import read_dataset

    path = make_cifar10(tmp_path)
    with open(os.path.join(path, "test_batch"), "wb") as f:
        f.write(b"unreadable: the search must not open this")
    host = read_dataset(f"cifar10={path}", splits=SEARCH_SPLITS)
    assert SEARCH_SPLITS == ("train", "val") and len(host.train_y) and len(host.val_y)
    assert "not a CIFAR python batch" in _error(f"cifar10={path}"), "reading all splits does open it"


@pytest.mark.parametrize("content, words", [
    (b"this is not a pickle", "not a CIFAR python batch"),
    (pickle.dumps([1, 2, 3]), "expected a dict with keys b'data' and b'labels'"),
    (pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}), "shape (N, 3072)"),
    (pickle.dumps({b"data": np.zeros((3, 3072), np.float32), b"labels": [0, 1, 2]}), "must be a uint8 array"),
    (pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}), "2 labels for 3 images"),
    (pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 10]}), "labels must be in 0..9"),
    (pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": ["a", "b", "c"]}), "list of integers"),
    (pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 2]})[:40], "not a CIFAR python batch"),
])
def test_malformed_batches_are_one_line_errors(tmp_path, content, words):
    path = make_cifar10(tmp_path)
    with open(os.path.join(path, "data_batch_2"), "wb") as f:
        f.write(content)
    message = _error(f"cifar10={path}")
    assert words in message and "data_batch_2" in message


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    path = make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    _write(os.path.join(path, "data_batch_1"), {b"data": _Exploit(str(marker)), b"labels": []})
    message = _error(f"cifar10={path}")
    assert "refusing to load" in message and "system" in message and "data_batch_1" in message
    assert not marker.exists()


def test_pickle_that_builds_other_objects_is_refused(tmp_path):
    path = make_cifar10(tmp_path)
    import collections

    _write(os.path.join(path, "test_batch"), {b"data": collections.OrderedDict(), b"labels": []})
    assert "refusing to load collections.OrderedDict" in _error(f"cifar10={path}")


@pytest.mark.parametrize("spec, words", [
    ("imagenet", "unknown dataset 'imagenet'"),
    ("cifar10", "needs a path"),
    ("synthetic", "has no images"),
    ("digits=/x", "takes no path"),
    ("nb201-cifar10", "has no images"),
])
def test_bad_specs(spec, words):
    assert words in _error(spec)


@pytest.mark.slow  # a fresh process that imports scikit-learn (~6-12 s on a loaded 2-core machine)
def test_reading_does_not_import_torch():
    code = "import evo.data.datasets, sys; evo.data.datasets.read_dataset('digits'); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

"""Image datasets, split once and kept resident on the training device as uint8.

Specs (the run config's ``dataset``):

- ``digits``: scikit-learn's bundled 8x8 grey digits (1797 images, 10 classes), values
  0..16 scaled to 0..255, split 60/20/20 train/val/test by a fixed permutation.
- ``cifar10=PATH`` / ``cifar100=PATH``: the official "python version" batches in a local
  directory or at an fsspec URL every worker reaches (``gs://bucket/cifar-10-batches-py``);
  PATH may be the batch directory itself or its parent. ``memory://`` is refused: in evo it
  names the population store that lives inside one process (``storage/memory.py``). The training set is split 45,000/5,000 train/validation
  by a fixed permutation (as in Real et al. 2017); the official test set is the test split.
- ``imagefolder=PATH``, ``npz=PATH``, ``hf=PATH``: the user's own images (a folder of class
  folders, NumPy arrays, a Hugging Face dataset saved to disk or as parquet; local or
  ``gs://``), turned into arrays as the run's ``data`` settings say (:mod:`evo.data.decoding`,
  :mod:`evo.data.imagefolder`, :mod:`evo.data.arrays`, :mod:`evo.data.huggingface`). In a run they are decoded once, into the
  population directory, for every worker (:func:`evo.data.userdata.prepare_data`, :mod:`evo.data.cache`).

A spec arrives as a :class:`evo.data.spec.DatasetSpec` (or its text, parsed once on the way
in). The splits depend on ``split_seed`` only, never on the run seed, so every worker of a run
sees the same validation set. Reading (:func:`read_dataset`) is numpy-only; torch is
imported only to put the arrays on a device (:func:`load_dataset`, :mod:`evo.data.device`).
The search asks for the ``train`` and ``val`` splits only: the test split is read by ``evo
evaluate``, ``evo best --export`` and retraining, never by a worker.

The top of :mod:`evo.data`: it dispatches to the readers (:mod:`evo.data.builtin`,
:mod:`evo.data.userdata`) and the tables (:mod:`evo.data.nasbench201_tables`), which never
import it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from evo.data.settings import DataSettings
from evo.data.base import SPLITS, DatasetError, HostDataset, check_splits, only_splits
from evo.data.builtin import check_builtin, read_cifar, read_digits
from evo.data.device import DeviceDataset, to_device
from evo.data.nasbench201_tables import TableError, table_path
from evo.data.spec import DatasetSpec
from evo.data.userdata import check_user, prepare_data, read_user

if TYPE_CHECKING:
    import torch

    from storage import DataCacheFacet

SPECS = "digits, cifar10=PATH, cifar100=PATH, imagefolder=PATH, npz=PATH, hf=PATH"   # the specs with images


def read_dataset(spec: DatasetSpec | str, *, split_seed: int = 0, settings: DataSettings | None = None,
                 splits: tuple[str, ...] = SPLITS, progress: Callable[[str, int, int], None] | None = None
                 ) -> HostDataset:
    """Read and split the dataset named by ``spec`` into numpy arrays (no torch).

    ``splits``: the splits to keep (the others come back empty; CIFAR's test batch is then
    not even read). User datasets are decoded from their source here, with ``settings``
    (the run's ``data`` settings; default: :class:`DataSettings`'s) and ``progress(phase,
    done, total)``; a run reads them through its cache instead (:func:`evo.data.userdata.prepare_data`).

    Raises :class:`DatasetError` (one line, naming the path and the expected layout) for a
    malformed spec, one without images, or missing/malformed data.
    """
    spec = DatasetSpec.of(spec)
    check_splits(splits)
    if spec.name == "digits":
        return only_splits(read_digits(split_seed), splits)
    if spec.is_cifar:
        return only_splits(read_cifar(spec.name, spec.path, split_seed, test="test" in splits), splits)
    if spec.is_user:
        return read_user(spec, settings or DataSettings(), splits, progress)
    if spec.is_synthetic:
        raise DatasetError("synthetic: the synthetic mode trains nothing and has no images")
    raise DatasetError(f"{spec}: a table of NAS-Bench-201's recorded results has no images (choose from {SPECS})")


def check_dataset(spec: DatasetSpec | str, settings: DataSettings | None = None) -> dict[str, Any]:
    """Check that ``spec`` names a dataset whose files the loader will find and can read,
    without loading it: the form of the spec, then for CIFAR every batch file, looked up the
    way :func:`read_dataset` looks (local path or fsspec URL, the batch directory or its
    parent) and its first byte read. Returns ``{"name", "train_images"}`` (the training-split
    size the loader will produce, nominal for CIFAR; None for synthetic).

    Raises :class:`DatasetError` with one line naming the path and what is wrong.
    """
    spec = DatasetSpec.of(spec)
    if spec.is_synthetic:
        return {"name": spec.name, "train_images": None}
    if spec.is_tabular:
        try:
            table_path(spec.name)
        except TableError as exc:
            raise DatasetError(str(exc)) from None
        return {"name": spec.name, "train_images": None}
    if spec.is_user:
        return check_user(spec, settings or DataSettings())
    return check_builtin(spec.name, spec.path)


def load_dataset(spec: DatasetSpec | str, device: "torch.device | str", *, split_seed: int = 0,
                 settings: DataSettings | None = None, cache: "DataCacheFacet | None" = None,
                 splits: tuple[str, ...] = SPLITS) -> DeviceDataset:
    """Read ``spec`` (see :func:`read_dataset`) and put ``splits`` on ``device`` (the others
    are empty).

    A user dataset is read through the run's cache when ``cache`` (the store's ``datacache``) is given
    (:func:`evo.data.userdata.prepare_data`; pass the run's ``config.data`` as ``settings``), else decoded
    from its source. Normalisation statistics come from the training split alone.
    DatasetError when the splits do not fit into the device's free memory.
    """
    spec = DatasetSpec.of(spec)
    if spec.is_user and cache is not None:
        host = prepare_data(spec, settings or DataSettings(), cache, splits=splits)
    else:
        host = read_dataset(spec, split_seed=split_seed, settings=settings, splits=splits)
    return to_device(host, device, splits=splits)

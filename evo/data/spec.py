"""A dataset spec, parsed once: the run config's ``dataset`` string as a :class:`DatasetSpec`.

A spec names a dataset and, for those read from files, where: ``digits``, ``synthetic``,
``cifar10=PATH``, ``cifar100=PATH``, the user's own ``imagefolder=PATH``, ``npz=PATH``,
``hf=PATH``, and NAS-Bench-201's tables ``nb201-cifar10``, ``nb201-cifar100``,
``nb201-imagenet16``. ``config.json`` stores the text; :meth:`DatasetSpec.parse` checks its form
(one-line :class:`evo.data.base.DatasetError`) and ``str()`` gives the text back, so the data
code receives a parsed value and never splits a string again. Only the form is checked
here; :func:`evo.data.datasets.check_dataset` checks that the files are there.

Torch-free and evo-free but for :mod:`evo.data.base`: :mod:`evo.config` builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evo.data.base import DatasetError

# NAS-Bench-201's tables (evo.data.nasbench201_tables): a cell's fitness is looked up, not trained for.
TABULAR_DATASETS = ("nb201-cifar10", "nb201-cifar100", "nb201-imagenet16")
CIFAR_DATASETS = ("cifar10", "cifar100")
USER_DATASETS = ("imagefolder", "npz", "hf")   # the user's own images: decoded once per run into the store
# all but digits/synthetic/nb201-* take =PATH
DATASETS = ("digits", *CIFAR_DATASETS, "synthetic", *USER_DATASETS) + TABULAR_DATASETS
DATASET_SPECS = ("digits, cifar10=PATH, cifar100=PATH, imagefolder=PATH, npz=PATH, hf=PATH, synthetic, "
                 + ", ".join(TABULAR_DATASETS))
USER_LAYOUTS = {"imagefolder": "a folder of class folders", "npz": "an .npz file",
                "hf": "a datasets.save_to_disk folder or parquet files"}


def spec_problem(text: str, name: str, eq: str, path: str) -> str | None:
    """What is wrong with the spec ``text`` (``name``, ``eq``: "=" or "", ``path``), in one line;
    None when it is well-formed."""
    if name not in DATASETS:
        return f"unknown dataset {text!r} (choose from {DATASET_SPECS})"
    if name in CIFAR_DATASETS and not path.strip():
        return f"dataset {name} needs a path: {name}=/path/to/data (a local directory or gs://...)"
    if name in USER_DATASETS and not path.strip():
        return f"dataset {name} needs a path: {name}=PATH ({USER_LAYOUTS[name]}; a local path or gs://...)"
    if (name in ("digits", "synthetic") or name in TABULAR_DATASETS) and eq:
        return f"dataset {name} takes no path (got {text!r}; {name} is built in)"
    return None


@dataclass(frozen=True)
class DatasetSpec:
    """A well-formed dataset spec: ``name`` (one of :data:`DATASETS`) and ``path`` (the text
    after ``=``, as given; ``""`` for the datasets that take none). Made by :meth:`parse`;
    made directly, it is checked the same way (DatasetError)."""

    name: str
    path: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not isinstance(self.path, str):
            raise DatasetError(f"a dataset spec is a name and a path (strings), got {self.name!r}, {self.path!r}")
        problem = spec_problem(str(self), self.name, "=" if self.path else "", self.path)
        if problem:
            raise DatasetError(problem)

    @classmethod
    def parse(cls, text: Any) -> "DatasetSpec":
        """The spec ``text`` (``digits``, ``cifar10=/data/cifar``, ...); DatasetError (one line)
        for anything but a string of a known dataset with a path exactly where one is needed."""
        if not isinstance(text, str):
            raise DatasetError(f"dataset must be a string ({DATASET_SPECS}), got {text!r}")
        name, eq, path = text.partition("=")
        problem = spec_problem(text, name, eq, path)
        if problem:
            raise DatasetError(problem)
        return cls(name, path)

    @classmethod
    def of(cls, spec: "DatasetSpec | str") -> "DatasetSpec":
        """``spec`` itself, or the text parsed (for callers that still hold the config's string)."""
        return spec if isinstance(spec, DatasetSpec) else cls.parse(spec)

    def __str__(self) -> str:
        """The spec's text, as config.json stores it (``parse(str(s)) == s``)."""
        return f"{self.name}={self.path}" if self.path else self.name

    @property
    def is_user(self) -> bool:
        """The user's own images (``imagefolder=``, ``npz=``, ``hf=``)."""
        return self.name in USER_DATASETS

    @property
    def is_cifar(self) -> bool:
        return self.name in CIFAR_DATASETS

    @property
    def is_tabular(self) -> bool:
        """A NAS-Bench-201 table: fitness is looked up, nothing is trained and there are no images."""
        return self.name in TABULAR_DATASETS

    @property
    def is_synthetic(self) -> bool:
        """The synthetic mode: nothing is trained and there are no images."""
        return self.name == "synthetic"

    @property
    def has_images(self) -> bool:
        """Whether there are images to read (not synthetic, not a table)."""
        return not (self.is_synthetic or self.is_tabular)

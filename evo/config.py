"""The run's configuration: one typed, frozen object, stored once as ``config.json``.

Workers read everything from the population directory, so a worker needs only its URL.
Unknown keys are an error, never silently ignored. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from dna.bounds import Bounds

from evo.config_checks import ConfigError, _choice, _flag, _int, _number
from evo.data.base import DatasetError
from evo.data.spec import DATASET_SPECS, DATASETS, TABULAR_DATASETS, USER_DATASETS, DatasetSpec  # noqa: F401
from evo.strategies.controller_settings import ControllerSettings

TABULAR_SPACE = "nasbench201"   # the search space of NAS-Bench-201's tables (TABULAR_DATASETS)
RESIZES = ("crop", "square")
COLORS = ("auto", "rgb", "grayscale")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 4, 1024
PRECISIONS = ("auto", "fp32", "bf16")
CONFIG_SCHEMA = 1
MAX_SEED = 2**63 - 1
# What a run may set its DNA bounds to (dna.Bounds itself only refuses what has no meaning):
# wide enough for any real search, narrow enough that a typo cannot ask for absurd networks.
BOUNDS_LIMITS = {"max_vertices": 4096, "max_edges": 16384, "max_channels": 65536, "max_filter_size": 31,
                 "max_stride": 64}
MAX_LEARNING_RATE = 100.0


def _registered(name: str, value: Any, module: str, lookup: str) -> Any:
    """The registered class ``value`` names (a search space or strategy); ConfigError if none."""
    import importlib

    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a name, got {value!r}", name)
    try:
        return getattr(importlib.import_module(module), lookup)(value)
    except ValueError as exc:
        raise ConfigError(str(exc), name) from None


def check_dataset_spec(spec: Any) -> str:
    """The dataset name of a well-formed spec (``digits``, ``cifar10=PATH``, ...); ConfigError
    (one line) otherwise. Only the form is checked here (:meth:`evo.data.spec.DatasetSpec.parse`);
    :func:`evo.data.datasets.check_dataset` checks that the files are there."""
    try:
        return DatasetSpec.parse(spec).name
    except DatasetError as exc:
        raise ConfigError(str(exc), "dataset") from None


@dataclass(frozen=True)
class TrainSettings:
    """How each child is trained (paper: SGD, momentum 0.9, wd 1e-4, batch 50, 25,600 steps)."""

    steps: int = 25_600
    batch_size: int = 50
    momentum: float = 0.9
    weight_decay: float = 1e-4
    eval_batch_size: int = 1000
    augment: bool = True          # random crop + flip (only where the dataset defines it)
    precision: str = "auto"       # "auto" (bf16 on CUDA, fp32 on CPU) | "fp32" | "bf16"
    cuda_graphs: bool = True      # capture the training step in a CUDA graph when on CUDA

    def __post_init__(self) -> None:
        _int("train.steps", self.steps, 0, 10**9)
        _int("train.batch_size", self.batch_size, 1, 1_000_000)
        _number("train.momentum", self.momentum, 0, 1, high_open=True)
        _number("train.weight_decay", self.weight_decay, 0, 1, high_open=True)
        _int("train.eval_batch_size", self.eval_batch_size, 1, 1_000_000)
        _flag("train.augment", self.augment)
        _choice("train.precision", self.precision, PRECISIONS)
        _flag("train.cuda_graphs", self.cuda_graphs)


@dataclass(frozen=True)
class SyntheticSettings:
    """The synthetic-fitness mode: no training, a cheap deterministic fitness of the DNA."""

    train_seconds: float = 0.0    # simulated training time (sleep)
    weight_bytes: int = 4096      # size of the (random) weight file each individual stores
    noise: float = 0.01           # sd of the seeded noise added to the fitness

    def __post_init__(self) -> None:
        _number("synthetic.train_seconds", self.train_seconds, 0, 86_400)
        _int("synthetic.weight_bytes", self.weight_bytes, 0, 2**30)
        _number("synthetic.noise", self.noise, 0, 1)


@dataclass(frozen=True)
class TabularSettings:
    """Runs on NAS-Bench-201's tables (``nb201-*`` datasets): ``time_scale`` is the fraction of a
    cell's recorded training time a worker sleeps before answering (0: answer at once), so that
    asynchronous workers interleave as they would if they trained."""

    time_scale: float = 0.0

    def __post_init__(self) -> None:
        _number("tabular.time_scale", self.time_scale, 0, 1)


@dataclass(frozen=True)
class NasnetSettings:
    """The NASNet space at search time: N cells per stack and F filters of every child (the
    2019 paper's search: N=3, F=24), and ``seed_arch``, a published architecture
    (``dna.published``) that every initial individual is instead of a random one."""

    cells_per_stack: int = 3
    filters: int = 24
    seed_arch: str | None = None

    def __post_init__(self) -> None:
        _int("nasnet.cells_per_stack", self.cells_per_stack, 1, 64)
        _int("nasnet.filters", self.filters, 1, 4096)
        if self.seed_arch is not None:
            from dna.published import canonical_name, is_published, unknown_architecture

            if not is_published(self.seed_arch):
                raise ConfigError(f"nasnet.seed_arch: {unknown_architecture(self.seed_arch)}", "nasnet.seed_arch")
            object.__setattr__(self, "seed_arch", canonical_name(self.seed_arch))


@dataclass(frozen=True)
class DataSettings:
    """How a user dataset (``imagefolder``, ``npz``, ``hf``) becomes the run's arrays.

    ``image_size`` S: images become S x S pixels (None: for image files, the median shorter
    side of a sample of the images, at most :data:`AUTO_IMAGE_SIZE_CAP`; for arrays, the
    size they have). ``resize``: ``crop`` scales the shorter side to S and keeps the centre
    (the aspect ratio is kept); ``square`` scales the whole image to S x S. ``color``:
    ``rgb``, ``grayscale``, or ``auto`` (grayscale when every sampled image is). A split the
    dataset lacks is carved from its training images, stratified by class, with
    ``split_seed``: ``val_fraction`` for validation, ``test_fraction`` for test.
    ``max_bad_fraction``: unreadable images are skipped (and counted) up to this fraction
    of the images; more fail the run. ``image_column``/``label_column``: the columns of an
    ``hf`` dataset (None: found from the dataset's features). The built-in datasets take
    none of these.
    """

    image_size: int | None = None
    resize: str = "crop"
    color: str = "auto"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    max_bad_fraction: float = 0.05
    image_column: str | None = None
    label_column: str | None = None

    def __post_init__(self) -> None:
        if self.image_size is not None:
            _int("data.image_size", self.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        _choice("data.resize", self.resize, RESIZES)
        _choice("data.color", self.color, COLORS)
        _number("data.val_fraction", self.val_fraction, 0, 1, low_open=True, high_open=True)
        _number("data.test_fraction", self.test_fraction, 0, 1, high_open=True)
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"data.val_fraction + data.test_fraction must be below 1 (training needs images), "
                              f"got {self.val_fraction} + {self.test_fraction}", "data.val_fraction")
        _int("data.split_seed", self.split_seed, 0, MAX_SEED)
        _number("data.max_bad_fraction", self.max_bad_fraction, 0, 1, high_open=True)
        for key in ("image_column", "label_column"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, str) and 0 < len(value) <= 256 and value.isprintable()):
                raise ConfigError(f"data.{key} must be a column name, got {value!r}", f"data.{key}")


AUTO_IMAGE_SIZE_CAP = 64   # the automatic image size never exceeds this (search runs at CIFAR-like sizes)


def _check_data_settings(name: str, data: DataSettings) -> None:
    """Refuse settings that do not apply to dataset ``name`` (a setting is checked when given)."""
    default = DataSettings()
    given = [f.name for f in fields(DataSettings) if getattr(data, f.name) != getattr(default, f.name)]
    if name not in USER_DATASETS and given:
        raise ConfigError(f"data.{given[0]} applies only to {', '.join(USER_DATASETS)} datasets, "
                          f"not {name}", f"data.{given[0]}")
    for key in ("image_column", "label_column"):
        if name != "hf" and getattr(data, key) is not None:
            raise ConfigError(f"data.{key} applies only to hf datasets, not {name}", f"data.{key}")


@dataclass(frozen=True)
class RunConfig:
    """Everything a worker needs to take part in a run."""

    dataset: str = "digits"               # a spec of DATASET_SPECS (check_dataset_spec)
    population_size: int = 10
    selection: str | None = None          # a registered strategy (evo.strategies); None: the space's default
    tournament_size: int = 2              # S for aging; pairwise always uses 2
    search_space: str = "large_scale"     # a registered search space (evo.spaces)
    inherit_weights: bool | None = None   # None: the space's rule if it has one
    keep_best: int = 0                    # keep the weights of the best K dead individuals
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    bounds: Bounds = field(default_factory=Bounds)
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)
    nasnet: NasnetSettings = field(default_factory=NasnetSettings)
    tabular: TabularSettings = field(default_factory=TabularSettings)
    controller: ControllerSettings = field(default_factory=ControllerSettings)   # learned strategies only
    data: DataSettings = field(default_factory=DataSettings)   # user datasets only
    schema: int = CONFIG_SCHEMA

    def __post_init__(self) -> None:
        if isinstance(self.schema, bool) or self.schema != CONFIG_SCHEMA:
            raise ConfigError(f"unknown config schema {self.schema!r} (this evo reads {CONFIG_SCHEMA})", "schema")
        name = check_dataset_spec(self.dataset)
        _int("population_size", self.population_size, 2, 1_000_000)
        space = _registered("search_space", self.search_space, "evo.spaces", "space_class")
        if self.selection is None:
            object.__setattr__(self, "selection", space.default_selection)
        strategy = _registered("selection", self.selection, "evo.strategies", "strategy_class")
        if getattr(strategy, "needs_decisions", False) and space.decisions is None:
            from evo.spaces import space_class, space_names

            spaces = sorted(n for n in space_names() if space_class(n).decisions is not None)
            raise ConfigError(f"selection {self.selection!r} learns a policy over a search space's decisions; "
                              f"search space {self.search_space!r} has none (use one of {', '.join(spaces)})",
                              "selection")
        _int("tournament_size", self.tournament_size, 1, self.population_size)  # S <= P
        if self.inherit_weights is None:
            object.__setattr__(self, "inherit_weights", space.inherits_weights)
        _flag("inherit_weights", self.inherit_weights)
        if self.inherit_weights and not space.inherits_weights:
            raise ConfigError(f"inherit_weights: search space {self.search_space!r} has no weight-inheritance "
                              "rule; every child trains from scratch (set inherit_weights to false)",
                              "inherit_weights")
        _int("keep_best", self.keep_best, 0, 1_000_000)
        _int("seed", self.seed, 0, MAX_SEED)
        for key, kind in (("train", TrainSettings), ("bounds", Bounds), ("synthetic", SyntheticSettings),
                          ("nasnet", NasnetSettings), ("tabular", TabularSettings), ("controller", ControllerSettings),
                          ("data", DataSettings)):
            if not isinstance(getattr(self, key), kind):
                raise ConfigError(f"{key} must be a {kind.__name__}", key)
        if not getattr(strategy, "needs_decisions", False) and self.controller != ControllerSettings():
            raise ConfigError(f"controller settings apply to the learned strategies (rl, reinforce), "
                              f"not selection {self.selection!r}", "controller")
        if self.nasnet.seed_arch is not None and self.search_space != "nasnet":
            raise ConfigError(f"nasnet.seed_arch seeds the nasnet search space; this run's is {self.search_space!r}",
                              "nasnet.seed_arch")
        for key, high in BOUNDS_LIMITS.items():
            _int(f"bounds.{key}", getattr(self.bounds, key), 1, high)
        _number("bounds.max_learning_rate", self.bounds.max_learning_rate, 0, MAX_LEARNING_RATE, low_open=True)
        if name in TABULAR_DATASETS and self.search_space != TABULAR_SPACE:
            raise ConfigError(f"dataset {name} is a table of {TABULAR_SPACE} cells; this run's search space is "
                              f"{self.search_space!r} (use --search-space {TABULAR_SPACE})", "search_space")
        _check_data_settings(name, self.data)
        if name != "synthetic" and name not in TABULAR_DATASETS and self.train.steps < 1:
            raise ConfigError(f"train.steps must be an integer in 1..{10**9} for {name} "
                              f"(0 would train nothing), got {self.train.steps}", "train.steps")

    @property
    def is_tabular(self) -> bool:
        """True when fitness is looked up in NAS-Bench-201's tables instead of trained for."""
        return self.dataset_name in TABULAR_DATASETS

    @property
    def dataset_spec(self) -> DatasetSpec:
        """The run's ``dataset``, parsed (config.json keeps the text)."""
        return DatasetSpec.parse(self.dataset)

    @property
    def dataset_name(self) -> str:
        """``cifar10`` for ``cifar10=/data/cifar``; the spec itself otherwise."""
        return self.dataset_spec.name

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict for JSON."""
        return asdict(self)

    def to_json(self) -> str:
        """Stable, human-readable JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: Any) -> "RunConfig":
        """Inverse of :meth:`to_dict`; unknown or mistyped keys raise ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError("config must be a JSON object")
        nested = {"train": TrainSettings, "bounds": Bounds, "synthetic": SyntheticSettings,
                  "nasnet": NasnetSettings, "tabular": TabularSettings, "controller": ControllerSettings,
                  "data": DataSettings}
        kwargs: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        for key, value in d.items():
            if key not in known:
                raise ConfigError(f"config has unknown key {key!r}")
            if key in nested:
                kwargs[key] = _nested(nested[key], value, key)
            else:
                kwargs[key] = value
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> "RunConfig":
        """Parse ``config.json`` text."""
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from None
        return cls.from_dict(d)

    def with_overrides(self, **changes: Any) -> "RunConfig":
        """A copy with top-level fields changed."""
        return replace(self, **changes)


def _nested(kind: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"config {where} must be an object")
    known = {f.name for f in fields(kind)}
    unknown = set(value) - known
    if unknown:
        raise ConfigError(f"config {where} has unknown key(s) {', '.join(sorted(unknown))}")
    try:
        return kind(**value)
    except ConfigError:
        raise
    except ValueError as exc:  # Bounds (in dna/, which knows nothing of ConfigError)
        field_name = str(exc).split(" ", 1)[0]
        raise ConfigError(str(exc), field_name if field_name.startswith(where + ".") else where) from None
    except TypeError as exc:
        raise ConfigError(f"config {where}: {exc}") from None

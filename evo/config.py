"""The run's configuration: one typed, frozen object, stored once as ``config.json``.

Workers read everything from the population directory, so a worker needs only its URL.
Unknown keys are an error, never silently ignored. Torch-free.

The run-level settings are fields of :class:`RunConfig`; each search space's, strategy's
and fitness mode's (:mod:`evo.train.modes`) own settings are looked up through the
registries (:class:`evo.registry.Plugin`) and held by block name
(``config.settings_of("nasnet")``): this module names no built-in plug-in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

from dna.bounds import Bounds
from dna.strict_json import UntrustedJSONError, parse_json

from evo.config_checks import (ConfigError, require_flag, require_int, require_number,
                               settings_from_dict, written_values)
from evo.registry import Plugin
from evo.spaces import space_class, space_names
from evo.strategies import strategy_class, strategy_names
from evo.train.modes import mode_class, mode_for_dataset, mode_names
from evo.data.base import DatasetError
from evo.data.settings import (AUTO_IMAGE_SIZE_CAP, COLORS, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE,  # noqa: F401
                               RESIZES, DataSettings, check_data_settings)
from evo.data.spec import DATASET_SPECS, DATASETS, TABULAR_DATASETS, USER_DATASETS, DatasetSpec  # noqa: F401
from evo.train.settings import PRECISIONS, TrainSettings  # noqa: F401

TABULAR_SPACE = "nasbench201"   # the search space of NAS-Bench-201's tables (TABULAR_DATASETS)
CONFIG_SCHEMA = 1
MAX_SEED = 2**63 - 1
MAX_CONFIG_TEXT_BYTES = 2**20   # as the store reads config.json
# What a run may set its DNA bounds to (dna.Bounds itself only refuses what has no meaning):
# wide enough for any real search, narrow enough that a typo cannot ask for absurd networks.
BOUNDS_LIMITS = {"max_vertices": 4096, "max_edges": 16384, "max_channels": 65536, "max_filter_size": 31,
                 "max_stride": 64}
MAX_LEARNING_RATE = 100.0


def check_dataset_spec(spec: Any) -> DatasetSpec:
    """A well-formed spec (``digits``, ``cifar10=PATH``, ...), parsed; ConfigError (field
    ``dataset``, one line) otherwise. Only the form is checked here (:meth:`evo.data.spec.DatasetSpec.parse`);
    :func:`evo.data.datasets.check_dataset` checks that the files are there."""
    try:
        return DatasetSpec.parse(spec)
    except DatasetError as exc:
        raise ConfigError(str(exc), "dataset") from None


@dataclass(frozen=True)
class Block:
    """One block of plug-in settings in config.json: its dataclass, whether its fields stand
    at the top level, and the plug-ins (kind: ``search_space``, ``selection`` or
    ``fitness_mode``; name) that own it."""

    settings_class: type
    inline: bool
    owners: tuple[tuple[str, str], ...]


def plugin_blocks() -> dict[str, Block]:
    """Every registered plug-in's settings block, by block name (from the registries: a
    plug-in registered later adds its block then)."""
    found: dict[str, Block] = {}
    plugins: list[tuple[str, type[Plugin]]] = [("search_space", space_class(n)) for n in space_names()]
    plugins += [("selection", strategy_class(n)) for n in strategy_names()]
    plugins += [("fitness_mode", mode_class(n)) for n in mode_names()]
    for kind, cls in plugins:
        block = cls.settings_block()
        if block is None:
            continue
        known = found.get(block)
        if known is not None and (known.settings_class is not cls.settings_class or known.inline != cls.settings_inline):
            raise ValueError(f"{kind} {cls.name!r} declares settings block {block!r} unlike "
                             f"{known.owners[0][0]} {known.owners[0][1]!r}")
        owners = (known.owners if known else ()) + ((kind, cls.name),)
        found[block] = Block(cls.settings_class, cls.settings_inline, owners)
    clash = [b for b in found if b in _RUN_FIELDS] + \
        [f.name for b in found.values() if b.inline for f in fields(b.settings_class) if f.name in _RUN_FIELDS]
    if clash:
        raise ValueError(f"plug-in settings {clash[0]!r} clash with a run-level setting of config.json")
    return found


class PluginSettings(Mapping):
    """Block name -> settings object of every registered plug-in that has settings (a block
    not given holds its defaults). Immutable and hashable, as the config is."""

    def __init__(self, items: Mapping[str, Any] = ()):  # type: ignore[assignment]
        self._items = dict(sorted(dict(items).items()))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return f"PluginSettings({self._items!r})"


@dataclass(frozen=True)
class RunConfig:
    """Everything a worker needs to take part in a run.

    ``plugins``: the search spaces' and strategies' own settings by block name (see
    :class:`evo.registry.Plugin`); blocks not given take their defaults. Read one with
    :meth:`settings_of`.
    """

    dataset: str = "digits"               # a spec of DATASET_SPECS (check_dataset_spec)
    population_size: int = 10
    selection: str | None = None          # a registered strategy (evo.strategies); None: the space's default
    search_space: str = "large_scale"     # a registered search space (evo.spaces)
    inherit_weights: bool | None = None   # None: the space's rule if it has one
    keep_best: int = 0                    # keep the weights of the best K dead individuals
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    bounds: Bounds = field(default_factory=Bounds)
    data: DataSettings = field(default_factory=DataSettings)   # user datasets only
    plugins: Mapping[str, Any] = field(default_factory=PluginSettings)
    schema: int = CONFIG_SCHEMA

    def __post_init__(self) -> None:
        if isinstance(self.schema, bool) or self.schema != CONFIG_SCHEMA:
            raise ConfigError(f"unknown config schema {self.schema!r} (this evo reads {CONFIG_SCHEMA})", "schema")
        name = check_dataset_spec(self.dataset).name
        require_int("population_size", self.population_size, 2, 1_000_000)
        space = _registered("search_space", self.search_space, space_class)
        if self.selection is None:
            object.__setattr__(self, "selection", space.default_selection)
        strategy = _registered("selection", self.selection, strategy_class)
        if getattr(strategy, "needs_decisions", False) and space.decisions is None:
            spaces = sorted(n for n in space_names() if space_class(n).decisions is not None)
            raise ConfigError(f"selection {self.selection!r} learns a policy over a search space's decisions; "
                              f"search space {self.search_space!r} has none (use one of {', '.join(spaces)})",
                              "selection")
        if self.inherit_weights is None:
            object.__setattr__(self, "inherit_weights", space.inherits_weights)
        require_flag("inherit_weights", self.inherit_weights)
        if self.inherit_weights and not space.inherits_weights:
            raise ConfigError(f"inherit_weights: search space {self.search_space!r} has no weight-inheritance "
                              "rule; every child trains from scratch (set inherit_weights to false)",
                              "inherit_weights")
        require_int("keep_best", self.keep_best, 0, 1_000_000)
        require_int("seed", self.seed, 0, MAX_SEED)
        for key, kind in (("train", TrainSettings), ("bounds", Bounds), ("data", DataSettings)):
            if not isinstance(getattr(self, key), kind):
                raise ConfigError(f"{key} must be a {kind.__name__}", key)
        self._set_plugins()
        for key, high in BOUNDS_LIMITS.items():
            require_int(f"bounds.{key}", getattr(self.bounds, key), 1, high)
        require_number("bounds.max_learning_rate", self.bounds.max_learning_rate, 0, MAX_LEARNING_RATE, low_open=True)
        if name in TABULAR_DATASETS and self.search_space != TABULAR_SPACE:
            raise ConfigError(f"dataset {name} is a table of {TABULAR_SPACE} cells; this run's search space is "
                              f"{self.search_space!r} (use --search-space {TABULAR_SPACE})", "search_space")
        check_data_settings(name, self.data)
        if name != "synthetic" and name not in TABULAR_DATASETS and self.train.steps < 1:
            raise ConfigError(f"train.steps must be an integer in 1..{10**9} for {name} "
                              f"(0 would train nothing), got {self.train.steps}", "train.steps")

    def _set_plugins(self) -> None:
        """Every registered block, given or default, type-checked and checked against the run."""
        if not isinstance(self.plugins, Mapping):
            raise ConfigError("plugins must map plug-in settings blocks to their settings", "plugins")
        blocks = plugin_blocks()
        unknown = sorted(set(self.plugins) - set(blocks))
        if unknown:
            raise ConfigError(f"unknown plug-in settings {unknown[0]!r} (known: {', '.join(blocks)})", unknown[0])
        held = {}
        for block, info in blocks.items():
            settings = self.plugins.get(block)
            if settings is None:
                settings = info.settings_class()
            if not isinstance(settings, info.settings_class):
                raise ConfigError(f"{block} must be a {info.settings_class.__name__}", block)
            held[block] = settings
        object.__setattr__(self, "plugins", PluginSettings(held))
        for settings in held.values():
            check = getattr(settings, "check_run", None)
            if check is not None:
                check(self)

    def settings_of(self, block: str) -> Any:
        """The settings object of the plug-ins whose block is ``block`` (KeyError if none)."""
        return self.plugins[block]

    def uses(self, block: str) -> bool:
        """True when the run's search space, strategy or fitness mode keeps its settings in ``block``."""
        mode = mode_for_dataset(self.dataset_name)
        return block in (space_class(self.search_space).settings_block(),
                         strategy_class(self.selection).settings_block(),
                         None if mode is None else mode.settings_block())

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
        """Plain nested dict for JSON: the run-level settings, then each plug-in block that the
        run uses, that differs from its defaults, or that config.json has always carried."""
        d = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "plugins"}
        blocks = plugin_blocks()
        for block, settings in self.plugins.items():
            kind = blocks[block].settings_class
            if getattr(kind, "written_always", False) or self.uses(block) or settings != kind():
                values = written_values(settings)
                if blocks[block].inline:
                    d.update(values)
                else:
                    d[block] = values
        return d

    def to_json(self) -> str:
        """Stable, human-readable JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: Any) -> "RunConfig":
        """Inverse of :meth:`to_dict`; unknown or mistyped keys raise ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError("config must be a JSON object")
        nested = {"train": TrainSettings, "bounds": Bounds, "data": DataSettings}
        blocks = plugin_blocks()
        inline_of = {f.name: block for block, info in blocks.items() if info.inline
                     for f in fields(info.settings_class)}
        kwargs: dict[str, Any] = {}
        plugins: dict[str, Any] = {}
        inline: dict[str, dict[str, Any]] = {}
        for key, value in d.items():
            if key in nested:
                kwargs[key] = settings_from_dict(nested[key], value, key)
            elif key in _RUN_FIELDS:
                kwargs[key] = value
            elif key in blocks and not blocks[key].inline:
                plugins[key] = settings_from_dict(blocks[key].settings_class, value, key)
            elif key in inline_of:
                inline.setdefault(inline_of[key], {})[key] = value
            else:
                raise ConfigError(f"config has unknown key {key!r}")
        for block, values in inline.items():
            plugins[block] = settings_from_dict(blocks[block].settings_class, values, block)
        try:
            return cls(**kwargs, plugins=plugins)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> "RunConfig":
        """Parse ``config.json`` text."""
        try:
            d = parse_json(text, "config", max_bytes=MAX_CONFIG_TEXT_BYTES)
        except UntrustedJSONError as exc:
            raise ConfigError(str(exc)) from None
        return cls.from_dict(d)


# The run-level keys of config.json (the plug-ins' blocks are the registries').
_RUN_FIELDS = frozenset(f.name for f in fields(RunConfig)) - {"plugins"}


def _registered(key: str, value: Any, lookup: Any) -> type:
    """The registered class ``value`` names (a search space or strategy); ConfigError if none."""
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a name, got {value!r}", key)
    try:
        return lookup(value)
    except ValueError as exc:
        raise ConfigError(str(exc), key) from None


def _plain(value: Any) -> Any:
    return written_values(value) if hasattr(value, "__dataclass_fields__") else value

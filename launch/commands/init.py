"""`evo init URL`: write the run's config into the population directory, once."""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import MISSING, fields, replace
from typing import Any

from dna.bounds import Bounds
from dna.strict_json import UntrustedJSONError, parse_json
from evo.config import (COLORS, RESIZES, TABULAR_DATASETS, TABULAR_SPACE, ConfigError,
                        DataSettings, RunConfig, TrainSettings, check_dataset_spec, plugin_blocks)
from evo.data.spec import DatasetSpec

from evo.spaces import make_space, space_class, space_names
from evo.strategies import strategy_names

from ..errors import UserError, read_user_file
from ..options import add_command, memory_size
from .init_data import check_data, decode_data, train_images
from .presets import DATASET_DEFAULTS, PRESETS, apply_preset, defaults_text, describe

MAX_CONFIG_BYTES = 1 << 20


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """Options that define a run (shared by `evo init` and `evo launch`)."""
    train, bounds, data, defaults = TrainSettings(), Bounds(), DataSettings(), RunConfig()
    synthetic, tabular, nasnet = (defaults.settings_of(b) for b in ("synthetic", "tabular", "nasnet"))
    g = p.add_argument_group("run configuration (written once to config.json; with --config FILE, "
                             "options not given keep the file's values)")
    g.add_argument("--dataset", metavar="SPEC",
                   help="digits (bundled) | cifar10=PATH | cifar100=PATH | imagefolder=PATH (your images: "
                        "PATH/train/<class>/*.jpg, or PATH/<class>/*.jpg) | npz=FILE (x_train, y_train, ...) | "
                        "hf=PATH (a Hugging Face dataset saved to disk or as parquet) | synthetic; paths local "
                        f"or gs:// | {' | '.join(TABULAR_DATASETS)} (NAS-Bench-201's tables: cells are looked up, "
                        f"not trained; implies --search-space {TABULAR_SPACE}; needs pip install 'evo[nb201]') "
                        "(default: digits)")
    g.add_argument("--population-size", "-P", type=int, metavar="P",
                   help=f"population size P (paper: 1000; default: {defaults_text('population_size')})")
    g.add_argument("--selection", choices=strategy_names(),
                   help="pairwise (2017), aging (2019), random search, or another registered strategy "
                        "(default: the search space's: pairwise; aging with --search-space nasnet)")
    g.add_argument("--tournament-size", "-S", type=int, metavar="S",
                   help="sample size S for aging evolution (default: P/4, within 2..25)")
    g.add_argument("--search-space", choices=space_names(), help=f"(default: {RunConfig().search_space})")
    g.add_argument("--steps", type=int, metavar="N",
                   help=f"training steps per child (paper: 25,600; default: {defaults_text('steps')})")
    g.add_argument("--batch-size", type=int, metavar="N", help=f"training batch size (paper and default: {train.batch_size})")
    g.add_argument("--no-augment", action="store_true",
                   help="no random crop / flip (default: augment CIFAR, never digits)")
    g.add_argument("--no-inherit", action="store_true",
                   help="train every child from scratch (default: inherit weights; never with nasnet)")
    g.add_argument("--keep-best", type=int, metavar="K",
                   help=f"keep the weights of the best K dead individuals (default: {RunConfig().keep_best})")
    g.add_argument("--seed", type=int, metavar="N", help=f"run seed, >= 0 (default: {RunConfig().seed})")
    g.add_argument("--max-channels", type=int, metavar="N",
                   help=f"most output channels of a convolution (default: {bounds.max_channels})")
    g.add_argument("--max-vertices", type=int, metavar="N", help=f"most vertices of a DNA (default: {bounds.max_vertices})")
    g.add_argument("--synthetic-train-seconds", type=float, metavar="SECONDS",
                   help=f"simulated training time (synthetic; default: {synthetic.train_seconds:g})")
    g.add_argument("--synthetic-weight-bytes", type=int, metavar="BYTES",
                   help=f"weight file size (synthetic; default: {synthetic.weight_bytes})")
    g.add_argument("--tabular-time-scale", type=float, metavar="X",
                   help="sleep X times the table's training time of each looked-up cell, in 0..1 "
                        f"(nb201-*; default: {tabular.time_scale:g})")
    g.add_argument("--nasnet-cells", type=int, metavar="N", help=f"N normal cells per stack (nasnet; default: {nasnet.cells_per_stack})")
    g.add_argument("--nasnet-filters", type=int, metavar="F", help=f"F filters (nasnet; default: {nasnet.filters})")
    g.add_argument("--seed-arch", metavar="NAME",
                   help="start every initial individual as this published architecture instead of random cells "
                        f"(nasnet; one of: {', '.join(_published_names())}; implies --search-space nasnet)")
    g.add_argument("--preset", choices=list(PRESETS),
                   help="a paper's search settings under the options given: "
                        + "; ".join(f"{name}: {describe(p)}" for name, p in PRESETS.items()))
    s = p.add_argument_group(
        "search spaces', strategies' and dataset modes' own settings (config.json keeps each plug-in's block "
        "under its name; "
        "set any with --set BLOCK.KEY=VALUE, or in --config FILE)", _plugin_settings_help())
    s.add_argument("--set", action="append", metavar="BLOCK.KEY=VALUE", dest="plugin_settings",
                   help="a plug-in's setting (VALUE is read as JSON, else as text), e.g. --set nasnet.filters=32; "
                        "repeat for more")
    d = p.add_argument_group("your own images (imagefolder, npz, hf datasets; decoded once per run into the "
                             "population directory)")
    d.add_argument("--image-size", type=int, metavar="S",
                   help="images become S x S pixels (default: image files: the median shorter side of a sample, "
                        "at most 64, or 224 in the nasnet space when its stem is the ImageNet stem (nasnet.stem "
                        "imagenet, or auto with F >= 8); arrays: as stored)")
    d.add_argument("--resize", choices=RESIZES,
                   help=f"crop: scale the shorter side to S and keep the centre; square: scale the whole image "
                        f"to S x S (default: {data.resize})")
    d.add_argument("--color", choices=COLORS,
                   help=f"rgb, grayscale, or auto: grayscale when every sampled image is (default: {data.color})")
    d.add_argument("--val-fraction", type=float, metavar="F",
                   help=f"validation images carved from training, per class, when the dataset has no val split "
                        f"(default: {data.val_fraction})")
    d.add_argument("--test-fraction", type=float, metavar="F",
                   help=f"test images carved from training when the dataset has no test split; 0: none "
                        f"(default: {data.test_fraction})")
    d.add_argument("--split-seed", type=int, metavar="N", help=f"seed of the carved splits (default: {data.split_seed})")
    d.add_argument("--max-bad-fraction", type=float, metavar="F",
                   help="skip unreadable images (counted, named in the summary) up to this fraction of all "
                        f"images; more fail the run (default: {data.max_bad_fraction})")
    d.add_argument("--image-column", metavar="NAME", help="hf: the column of images (default: the Image feature)")
    d.add_argument("--label-column", metavar="NAME", help="hf: the column of labels (default: the ClassLabel feature)")
    d.add_argument("--device-memory", type=memory_size, metavar="SIZE",
                   help="memory of the device the workers train on, e.g. 80G, for the check that a child's "
                        "training fits (estimated before anything is written); 0: no check (default: this "
                        "machine's GPU if nvidia-smi lists one, else its free memory)")
    p.add_argument("--defer-decode", action="store_true",
                   help="do not decode your images now: the first worker does (for the whole fleet); "
                        "the folder's layout is still checked")
    g.add_argument("--config", metavar="FILE", help="start from this config.json instead of the defaults")
    g.add_argument("--force-new-config", action="store_true",
                   help="write a config into a directory that holds individuals but no config.json "
                        "(they were made under a config that is gone: only do this knowingly)")


OWNER_KINDS = {"search_space": "space", "selection": "selection", "fitness_mode": "dataset mode"}


def _plugin_settings_help() -> str:
    """Each registered plug-in's settings block with its defaults, for ``evo init --help``."""
    lines = []
    for block, info in plugin_blocks().items():
        owners = ", ".join(f"{OWNER_KINDS[kind]} {name}" for kind, name in info.owners)
        where = "at config.json's top level" if info.inline else f"block {block!r}"
        values = "; ".join(_setting_text(f) for f in fields(info.settings_class))
        lines.append(f"{block} ({owners}; {where}): {values}.")
    return " ".join(lines)


def _setting_text(f: Any) -> str:
    default = f.default if f.default is not MISSING else f.default_factory()   # type: ignore[misc]
    text = f"{f.name}={json.dumps(default)}"
    return f"{text} [{f.metadata['help']}]" if "help" in f.metadata else text


def _published_names() -> list[str]:
    from dna.published import published_names

    return published_names()


# The option behind each config.json field, to name it in errors.
OPTION_OF_FIELD = {
    "dataset": "--dataset", "population_size": "-P/--population-size", "selection": "--selection",
    "tournament_size": "-S/--tournament-size", "search_space": "--search-space", "train.steps": "--steps",
    "train.batch_size": "--batch-size", "keep_best": "--keep-best", "seed": "--seed",
    "bounds.max_channels": "--max-channels", "bounds.max_vertices": "--max-vertices",
    "synthetic.train_seconds": "--synthetic-train-seconds", "synthetic.weight_bytes": "--synthetic-weight-bytes",
    "nasnet.cells_per_stack": "--nasnet-cells", "nasnet.filters": "--nasnet-filters", "nasnet.seed_arch": "--seed-arch",
    "tabular.time_scale": "--tabular-time-scale",
    "data.image_size": "--image-size", "data.resize": "--resize", "data.color": "--color",
    "data.val_fraction": "--val-fraction", "data.test_fraction": "--test-fraction", "data.split_seed": "--split-seed",
    "data.max_bad_fraction": "--max-bad-fraction", "data.image_column": "--image-column",
    "data.label_column": "--label-column",
}
ARG_OF_FIELD = {"population_size": "population_size", "tournament_size": "tournament_size",
                "train.steps": "steps", "train.batch_size": "batch_size", "keep_best": "keep_best",
                "seed": "seed", "bounds.max_channels": "max_channels", "bounds.max_vertices": "max_vertices",
                "synthetic.train_seconds": "synthetic_train_seconds",
                "synthetic.weight_bytes": "synthetic_weight_bytes", "nasnet.cells_per_stack": "nasnet_cells",
                "nasnet.filters": "nasnet_filters", "nasnet.seed_arch": "seed_arch",
                "tabular.time_scale": "tabular_time_scale", "data.image_size": "image_size",
                "data.resize": "resize", "data.color": "color", "data.val_fraction": "val_fraction",
                "data.test_fraction": "test_fraction", "data.split_seed": "split_seed",
                "data.max_bad_fraction": "max_bad_fraction", "data.image_column": "image_column",
                "data.label_column": "label_column"}


def _where(field: str | None, args: argparse.Namespace, effective: argparse.Namespace | None = None) -> str | None:
    """The option (``--preset``, or --config file) that set ``field``, for the error message."""
    if field is None:
        return args.config
    for item in getattr(args, "plugin_settings", None) or ():
        name = item.partition("=")[0].strip()
        if (name == field or field.startswith(name + ".") or field == name.rpartition(".")[2]
                or field == name.partition(".")[0]):
            return f"--set {name}"
    arg = ARG_OF_FIELD.get(field)
    if arg is not None and getattr(args, arg, None) is not None:
        return OPTION_OF_FIELD[field]
    if arg is not None and effective is not None and getattr(effective, arg, None) is not None:
        return f"--preset {args.preset}" if getattr(args, "preset", None) else OPTION_OF_FIELD[field]
    if field == "dataset" and (args.dataset is not None or not args.config):
        return "--dataset"
    return args.config


def _read_config_file(path: str) -> RunConfig:
    raw = read_user_file(path, MAX_CONFIG_BYTES, "a config.json")
    try:
        return RunConfig.from_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; not a config.json") from None
    except ConfigError as exc:
        raise UserError(f"{path}: {exc}") from None


def _absolute_data_path(spec: DatasetSpec) -> DatasetSpec:
    """``cifar10=data/c10`` -> ``cifar10=/abs/data/c10``: workers may start in another directory."""
    if (spec.is_cifar or spec.is_user) and spec.path.strip() and "://" not in spec.path:
        return DatasetSpec(spec.name, os.path.abspath(os.path.expanduser(spec.path)))
    return spec


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """A RunConfig from command-line options over dataset-specific defaults (or --config FILE).

    Every value is range-checked by RunConfig; a value given on the command line is used as
    given (0 is never replaced by a default). ``--preset`` fills in the settings it names that
    no option gave; ``--seed-arch`` implies the nasnet space. UserError names the option or
    file at fault.
    """
    base = _read_config_file(args.config) if args.config else RunConfig()
    given_args, args = args, apply_preset(args)
    if getattr(args, "seed_arch", None) is not None and args.search_space is None:
        args.search_space = "nasnet"
    if args.dataset in TABULAR_DATASETS and args.search_space is None and not args.config:
        args.search_space = TABULAR_SPACE
    try:
        text = args.dataset if args.dataset is not None else (base.dataset if args.config else "digits")
        spec = _absolute_data_path(check_dataset_spec(text))
        name = spec.name
        d = DATASET_DEFAULTS[name] if not args.config else {}

        def given(arg: str, default):
            value = getattr(args, arg)
            return default if value is None else value

        search_space = args.search_space or base.search_space
        # None: the search space's own default (aging for nasnet), resolved by RunConfig
        selection = args.selection or (base.selection if args.config else None)
        if selection is None:
            selection = space_class(search_space).default_selection
        pop = given("population_size", d.get("population_size", base.population_size))
        aging, nasnet = base.settings_of("aging"), base.settings_of("nasnet")
        default_s = min(25, max(2, pop // 4)) if selection == "aging" and not args.config else aging.tournament_size
        if "tournament_size" in d and args.population_size is None:
            default_s = d["tournament_size"]
        tournament = given("tournament_size", default_s)
        batch_size = given("batch_size", base.train.batch_size)
        steps = given("steps", d.get("steps", base.train.steps))
        data = replace(base.data, **{f: getattr(args, f) for f in DATA_OPTIONS if getattr(args, f, None) is not None})
        if args.preset_epochs is not None and name != "synthetic":
            steps = args.preset_epochs * math.ceil(train_images(spec, data) / batch_size) if batch_size >= 1 else steps
        train = replace(
            base.train,
            steps=steps,
            batch_size=given("batch_size", base.train.batch_size),
            augment=False if args.no_augment else d.get("augment", base.train.augment),
        )
        bounds = replace(base.bounds, max_channels=given("max_channels", base.bounds.max_channels),
                         max_vertices=given("max_vertices", base.bounds.max_vertices))
        plugins = dict(base.plugins)
        plugins["aging"] = replace(aging, tournament_size=tournament)
        synthetic, tabular = base.settings_of("synthetic"), base.settings_of("tabular")
        plugins["synthetic"] = replace(synthetic, train_seconds=given("synthetic_train_seconds", synthetic.train_seconds),
                                       weight_bytes=given("synthetic_weight_bytes", synthetic.weight_bytes))
        plugins["tabular"] = replace(tabular, time_scale=given("tabular_time_scale", tabular.time_scale))
        plugins["nasnet"] = replace(nasnet, cells_per_stack=given("nasnet_cells", nasnet.cells_per_stack),
                                    filters=given("nasnet_filters", nasnet.filters),
                                    seed_arch=given("seed_arch", nasnet.seed_arch))
        plugins = _with_set_options(plugins, getattr(args, "plugin_settings", None) or ())
        # None: the space's rule (the 2019 paper trains every nasnet child from scratch)
        inherit = False if args.no_inherit else (base.inherit_weights if args.config else None)
        config = replace(
            base, dataset=str(spec), population_size=pop, selection=selection,
            search_space=search_space, train=train, bounds=bounds,
            data=data, plugins=plugins, inherit_weights=inherit,
            keep_best=given("keep_best", base.keep_best), seed=given("seed", base.seed),
        )
        return _with_space_size_cap(config)
    except ConfigError as exc:
        where = _where(exc.field, given_args, args)
        raise UserError(f"{where}: {exc}" if where else str(exc)) from None
    except ValueError as exc:  # Bounds (dna/ raises plain ValueError)
        field = str(exc).split(" ", 1)[0]
        where = _where(field if field in OPTION_OF_FIELD else None, given_args, args)
        raise UserError(f"{where}: {exc}" if where else str(exc)) from None


def _with_space_size_cap(config: RunConfig) -> RunConfig:
    """A user dataset's automatic image size capped where the run's search space says
    (:meth:`evo.spaces.SearchSpace.auto_image_size_cap`), unless the config file set a cap."""
    if not config.dataset_spec.is_user or config.data.auto_size_cap != DataSettings().auto_size_cap:
        return config
    cap = make_space(config).auto_image_size_cap()
    return replace(config, data=replace(config.data, auto_size_cap=cap))


def _with_set_options(plugins: dict[str, Any], items: Any) -> dict[str, Any]:
    """``plugins`` with each ``--set BLOCK.KEY=VALUE`` applied (ConfigError from the plug-in's
    own checks; UserError for a block or key that is not there)."""
    for item in items:
        name, eq, text = item.partition("=")
        block, dot, key = name.strip().partition(".")
        if not eq or not dot or not key:
            raise UserError(f"--set {item}: give BLOCK.KEY=VALUE (e.g. --set nasnet.filters=32)")
        if block not in plugins:
            raise UserError(f"--set {item}: unknown plug-in settings block {block!r} "
                            f"(known: {', '.join(sorted(plugins))})")
        known = [f.name for f in fields(plugins[block])]
        if key not in known:
            raise UserError(f"--set {item}: {block} has no setting {key!r} (known: {', '.join(known)})")
        try:
            value = parse_json(text, "value", max_bytes=4096)
        except UntrustedJSONError:
            value = text
        plugins[block] = replace(plugins[block], **{key: value})
    return plugins


def _local_path(url: str) -> str | None:
    if url.startswith("file://"):
        return "/" + url[len("file://"):].partition("/")[2]
    return None if "://" in url else url


def _check_location(url: str) -> None:
    """A local population path must be a directory or creatable as one (no file on the way)."""
    path = _local_path(url)
    if path is None:
        return
    probe = os.path.normpath(path)
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent in ("", probe):
            return
        probe = parent
    if not os.path.isdir(probe):
        raise UserError(f"{url}: {probe} is a file, not a directory")


def init_run(url: str, config: RunConfig, *, force_new_config: bool = False,
             decode: bool = True, device_memory: int | None = None) -> tuple[RunConfig, bool]:
    """Write ``config`` to the store unless it holds one. Returns (config in force, created).

    Before writing, the dataset's files are checked, and for a user dataset that training a
    child fits the device's memory (``device_memory``: bytes, None: this machine's device, 0:
    no check; :func:`launch.commands.init_data.check_memory`) (and, with ``decode``, a user dataset
    is decoded into the store's ``data/`` and summarised: the workers then load it) and a
    directory holding individuals without a config.json is refused (unless
    ``force_new_config``): no config is written when any check fails. Refuses (UserError)
    when the store already holds a *different* config, or one that is not the one ``evo
    init`` sealed (``state/config.sha256``). Writing the config records its seal; a run
    made before seals (none recorded) whose config equals ``config`` gets one now.
    """
    from storage import StoreError, open_store

    _check_location(url)
    try:
        store = open_store(url)
        if not store.runinfo.has_config():
            if store.population.has_individuals() and not force_new_config:
                raise UserError(f"{url} holds individuals but no config.json (deleted?); writing a new one "
                                "would change the run under them: use --force-new-config if you mean it")
            check_data(config, device_memory)
            if decode:
                decode_data(store, config)
            if store.runinfo.init_config(config.to_json()):
                return config, True
        existing_text = store.runinfo.read_config()
        seal = store.runinfo.config_seal(existing_text)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"{exc.filename or url}: {exc.strerror or exc}") from None
    try:
        existing = RunConfig.from_json(existing_text)
    except ConfigError as exc:
        raise UserError(f"{url}/config.json: {exc}") from None
    if existing != config:
        diff = _diff(existing.to_dict(), config.to_dict())
        raise UserError(f"{url} already holds a different config ({diff}); use a new directory, "
                        "or pass no run options to join the existing run")
    if not seal.trusted:
        raise UserError(f"{seal.problem}; 'evo init' does not adopt it")
    if seal.state == "legacy":   # the user has just confirmed this config: seal it
        try:
            store.runinfo.seal_config(existing_text)
        except OSError as exc:
            raise UserError(f"{url}: cannot record config.json's seal: {exc.strerror or exc}") from None
    return existing, False


def _diff(a: dict, b: dict, prefix: str = "") -> str:
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            inner = _diff(a[k], b[k], prefix + k + ".")
            if inner:
                out.append(inner)
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k}: stored {json.dumps(a.get(k))}, given {json.dumps(b.get(k))}")
    return "; ".join(out)


DATA_OPTIONS = ("image_size", "resize", "color", "val_fraction", "test_fraction", "split_seed", "max_bad_fraction",
                "image_column", "label_column")
CONFIG_OPTIONS = ("population_size", "selection", "tournament_size", "search_space", "steps", "batch_size",
                  "keep_best", "seed", "max_channels", "max_vertices", "synthetic_train_seconds",
                  "synthetic_weight_bytes", "nasnet_cells", "nasnet_filters", "seed_arch", "tabular_time_scale",
                  "plugin_settings", "preset", "config", *DATA_OPTIONS)


def has_config_options(args: argparse.Namespace) -> bool:
    """True when the user asked for anything about the run itself (not just workers)."""
    if args.dataset is not None or args.no_augment or args.no_inherit:
        return True
    return any(getattr(args, name, None) not in (None, False) for name in CONFIG_OPTIONS)


def check_run_options(args: argparse.Namespace) -> None:
    """Refuse bad run options (values, dataset files, a file in the population's path) before
    a launcher creates anything; :func:`ensure_run` later writes the config."""
    _check_location(args.url)
    config = config_from_args(args)
    if has_config_options(args):
        check_data(config, getattr(args, "device_memory", None))


def ensure_run(url: str, args: argparse.Namespace) -> None:
    """Initialise the population from the run options when it has no config yet, or when
    options were given (then they must match the stored config, as for `evo launch`)."""
    from storage import StoreError, open_store

    _check_location(url)
    try:
        exists = open_store(url).runinfo.has_config()
    except StoreError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"{exc.filename or url}: {exc.strerror or exc}") from None
    if not exists or has_config_options(args):
        config, created = init_run(url, config_from_args(args), force_new_config=args.force_new_config,
                                   decode=not getattr(args, "defer_decode", False),
                                   device_memory=getattr(args, "device_memory", None))
        if created:
            print(f"initialised {url}: dataset={config.dataset} P={config.population_size} "
                  f"selection={config.selection} steps/child={config.train.steps}", flush=True)


def initialise(args: argparse.Namespace) -> tuple[RunConfig, bool]:
    """`evo init`'s work (and ``evo.init``'s) for parsed options: the config in force and
    whether it was written now. A store already holding this config is left as it is, but a
    user dataset's decode that failed or was deferred before is done now (unless
    ``--defer-decode``); UserError for bad options (a child that would not fit the device's
    memory included) or a different stored config."""
    config, created = init_run(args.url, config_from_args(args), force_new_config=args.force_new_config,
                               decode=not args.defer_decode, device_memory=args.device_memory)
    if not created and not args.defer_decode:
        from storage import open_store
        decode_data(open_store(args.url), config)
    return config, created


def run(args: argparse.Namespace) -> int:
    config, created = initialise(args)
    if created:
        print(f"initialised {args.url}: dataset={config.dataset} P={config.population_size} "
              f"selection={config.selection} steps={config.train.steps} search_space={config.search_space}")
        if config.dataset_spec.is_user and args.defer_decode:
            print("  the dataset is decoded by the first worker (--defer-decode); `evo status` shows it")
    else:
        print(f"{args.url} already holds this config; nothing to do")
    return 0


def register(sub) -> None:
    p = add_command(sub, "init", help="write a run's config into a population directory (once)")
    add_config_arguments(p)
    p.set_defaults(func=run)

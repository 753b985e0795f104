"""`evo init URL`: write the run's config into the population directory, once."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from evo.config import SEARCH_SPACES, SELECTIONS, ConfigError, RunConfig

from .errors import UserError

# Defaults that differ by dataset: the paper's 25,600 steps suit CIFAR on a GPU; the
# embedded digits default must finish a meaningful run on a laptop CPU in minutes.
DATASET_DEFAULTS = {
    "digits": {"population_size": 10, "steps": 400, "augment": False},
    "synthetic": {"population_size": 100, "steps": 0, "augment": False},
    "cifar10": {"population_size": 100, "steps": 25_600, "augment": True},
    "cifar100": {"population_size": 100, "steps": 25_600, "augment": True},
}


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """Options that define a run (shared by `evo init` and `evo launch`)."""
    g = p.add_argument_group("run configuration (written once to config.json)")
    g.add_argument("--dataset", default="digits",
                   help="digits (default, bundled) | cifar10=PATH | cifar100=PATH | synthetic")
    g.add_argument("--population-size", "-P", type=int, help="population size P (paper: 1000)")
    g.add_argument("--selection", choices=SELECTIONS, help="pairwise (2017), aging (2019) or random search")
    g.add_argument("--tournament-size", "-S", type=int, help="sample size S for aging evolution")
    g.add_argument("--search-space", choices=SEARCH_SPACES, default=None)
    g.add_argument("--steps", type=int, help="training steps per child (paper: 25,600)")
    g.add_argument("--batch-size", type=int, help="training batch size (paper: 50)")
    g.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    g.add_argument("--no-inherit", action="store_true", help="train every child from scratch")
    g.add_argument("--keep-best", type=int, help="keep the weights of the best K dead individuals")
    g.add_argument("--seed", type=int, help="run seed")
    g.add_argument("--max-channels", type=int)
    g.add_argument("--max-vertices", type=int)
    g.add_argument("--synthetic-train-seconds", type=float, help="simulated training time (synthetic)")
    g.add_argument("--synthetic-weight-bytes", type=int, help="weight file size (synthetic)")
    g.add_argument("--nasnet-cells", type=int, help="N normal cells per stack (nasnet)")
    g.add_argument("--nasnet-filters", type=int, help="F filters (nasnet)")
    g.add_argument("--config", metavar="FILE", help="start from this config.json instead of the defaults")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """A RunConfig from command-line options over dataset-specific defaults."""
    try:
        if args.config:
            try:
                with open(args.config, encoding="utf-8") as f:
                    base = RunConfig.from_json(f.read())
            except OSError as exc:
                raise UserError(f"{args.config}: {exc.strerror}") from None
        else:
            base = RunConfig()
        name = args.dataset.split("=", 1)[0]
        if name not in DATASET_DEFAULTS:
            raise UserError(f"unknown dataset {args.dataset!r} (digits, cifar10=PATH, cifar100=PATH, synthetic)")
        if name in ("cifar10", "cifar100") and "=" not in args.dataset:
            raise UserError(f"{name} needs a path: --dataset {name}=/path/to/data (local or gs://)")
        d = DATASET_DEFAULTS[name] if not args.config else {}
        search_space = args.search_space or base.search_space
        selection = args.selection or ("aging" if search_space == "nasnet" and not args.config else base.selection)
        pop = args.population_size or d.get("population_size", base.population_size)
        tournament = args.tournament_size or (min(25, max(2, pop // 4)) if selection == "aging" else base.tournament_size)
        train = replace(
            base.train,
            steps=args.steps if args.steps is not None else d.get("steps", base.train.steps),
            batch_size=args.batch_size or base.train.batch_size,
            augment=False if args.no_augment else d.get("augment", base.train.augment),
        )
        bounds_changes = {}
        if args.max_channels:
            bounds_changes["max_channels"] = args.max_channels
        if args.max_vertices:
            bounds_changes["max_vertices"] = args.max_vertices
        bounds = replace(base.bounds, **bounds_changes) if bounds_changes else base.bounds
        synthetic = base.synthetic
        if args.synthetic_train_seconds is not None:
            synthetic = replace(synthetic, train_seconds=args.synthetic_train_seconds)
        if args.synthetic_weight_bytes is not None:
            synthetic = replace(synthetic, weight_bytes=args.synthetic_weight_bytes)
        nasnet = base.nasnet
        if args.nasnet_cells:
            nasnet = replace(nasnet, cells_per_stack=args.nasnet_cells)
        if args.nasnet_filters:
            nasnet = replace(nasnet, filters=args.nasnet_filters)
        inherit = base.inherit_weights
        if args.no_inherit:
            inherit = False
        elif search_space == "nasnet" and not args.config:
            inherit = False  # the 2019 paper trains every child from scratch
        return replace(
            base, dataset=args.dataset, population_size=pop, selection=selection,
            tournament_size=tournament, search_space=search_space, train=train, bounds=bounds,
            synthetic=synthetic, nasnet=nasnet, inherit_weights=inherit,
            keep_best=args.keep_best if args.keep_best is not None else base.keep_best,
            seed=args.seed if args.seed is not None else base.seed,
        )
    except (ConfigError, ValueError, TypeError) as exc:
        if isinstance(exc, UserError):
            raise
        raise UserError(str(exc)) from None


def init_run(url: str, config: RunConfig, *, quiet: bool = False) -> tuple[RunConfig, bool]:
    """Write ``config`` to the store unless it holds one. Returns (config in force, created).

    Refuses (UserError) when the store already holds a *different* config.
    """
    from storage import open_store

    store = open_store(url)
    text = config.to_json()
    if store.init_config(text):
        return config, True
    existing_text = store.read_config()
    try:
        existing = RunConfig.from_json(existing_text)
    except ConfigError as exc:
        raise UserError(f"{url}/config.json: {exc}") from None
    if existing != config:
        diff = _diff(existing.to_dict(), config.to_dict())
        raise UserError(f"{url} already holds a different config ({diff}); use a new directory, "
                        "or pass no run options to join the existing run")
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


CONFIG_OPTIONS = ("population_size", "selection", "tournament_size", "search_space", "steps", "batch_size",
                  "keep_best", "seed", "max_channels", "max_vertices", "synthetic_train_seconds",
                  "synthetic_weight_bytes", "nasnet_cells", "nasnet_filters", "config")


def has_config_options(args: argparse.Namespace) -> bool:
    """True when the user asked for anything about the run itself (not just workers)."""
    if args.dataset != "digits" or args.no_augment or args.no_inherit:
        return True
    return any(getattr(args, name, None) not in (None, False) for name in CONFIG_OPTIONS)


def ensure_run(url: str, args: argparse.Namespace) -> None:
    """Initialise the population from the run options when it has no config yet, or when
    options were given (then they must match the stored config, as for `evo launch`)."""
    from storage import StoreError, open_store

    try:
        open_store(url).read_config()
        exists = True
    except StoreError:
        exists = False
    if not exists or has_config_options(args):
        config, created = init_run(url, config_from_args(args))
        if created:
            print(f"initialised {url}: dataset={config.dataset} P={config.population_size} "
                  f"selection={config.selection} steps/child={config.train.steps}", flush=True)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    config, created = init_run(args.url, config)
    if created:
        print(f"initialised {args.url}: dataset={config.dataset} P={config.population_size} "
              f"selection={config.selection} steps={config.train.steps} search_space={config.search_space}")
    else:
        print(f"{args.url} already holds this config; nothing to do")
    return 0


def register(sub) -> None:
    p = sub.add_parser("init", help="write a run's config into a population directory (once)")
    p.add_argument("url", help="population directory: PATH, file://PATH, gs://BUCKET/PREFIX")
    add_config_arguments(p)
    p.set_defaults(func=run)

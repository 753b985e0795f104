"""What `evo retrain` trains: the retrain requests its options ask for (the individuals of
a run, best first, one per architecture; or a published architecture or a DNA file), with
the final-training settings of ``--preset`` and the options on top. Nothing is written here:
``launch.commands.retrain`` writes the requests and trains them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dna.strict_json import UntrustedJSONError, parse_json
from ..errors import UserError

if TYPE_CHECKING:
    from evo.data.spec import DatasetSpec

SETTING_OPTIONS = {  # option dest -> FinalSettings field
    "epochs": "epochs", "batch_size": "batch_size", "lr": "learning_rate", "schedule": "schedule",
    "momentum": "momentum", "weight_decay": "weight_decay", "label_smoothing": "label_smoothing",
    "grad_clip": "grad_clip", "drop_path": "drop_path", "aux_weight": "aux_weight", "cutout": "cutout",
    "crop_padding": "crop_padding", "flip": "flip", "data": "data", "precision": "precision",
    "cuda_graphs": "cuda_graphs", "eval_batch_size": "eval_batch_size", "seed": "seed",
}


def settings_from_args(args: argparse.Namespace, dataset_name: str):
    """The FinalSettings the options ask for: the preset (default: by dataset) with the
    options given on top; ConfigError (one line, naming the option) for a bad value."""
    from evo.config import ConfigError
    from evo.train.final_settings import default_preset, preset

    base = preset(args.preset or default_preset(dataset_name))
    changes = {}
    for dest, name in SETTING_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is not None:
            changes[name] = None if (name == "learning_rate" and value == "dna") else value
    try:
        return base.with_changes(**changes)
    except ConfigError as exc:
        option = next((f"--{d.replace('_', '-')}" for d, n in SETTING_OPTIONS.items() if n == exc.field), None)
        raise UserError(f"{option}: {exc}" if option else str(exc)) from None


def open_target(url: str, dataset: str | None):
    """(store, config or None, dataset spec, parsed): a population, or any directory with --dataset."""
    import storage
    from evo.config import ConfigError, RunConfig, check_dataset_spec
    from evo.spaces import for_config

    try:
        store = storage.open_store(url)
        has_config = store.runinfo.has_config()
    except storage.StoreError as exc:
        raise UserError(str(exc)) from None
    config = None
    if has_config:
        try:
            text = store.runinfo.read_config()
            config = RunConfig.from_json(text)
        except (ConfigError, storage.StoreError) as exc:
            raise UserError(f"{url}/config.json: {exc}") from None
        seal = store.runinfo.config_seal(text)
        if not seal.trusted:   # its dataset and bounds are not the run's: train nothing on them
            raise UserError(f"{seal.problem}; evo retrain refuses to run against it")
        store = store.with_run(keep_best=config.keep_best, bounds=config.bounds,
                               dna_validator=for_config(config).parse)
    text = dataset or (config.dataset if config else None)
    if text is None:
        raise UserError(f"{url} holds no run (no config.json): give --dataset (digits, cifar10=PATH, ...)")
    try:
        spec = check_dataset_spec(text)
    except ConfigError as exc:
        raise UserError(f"--dataset: {exc}") from None
    if spec.is_synthetic:
        raise UserError("the synthetic dataset has no images to train on; give --dataset digits or cifar10=PATH")
    return store, config, spec


def _size(args: argparse.Namespace, kind: str, config) -> dict[str, Any] | None:
    """NASNet: {cells, filters} from the options, else the published architecture's paper
    size (--arch), else the run's search size, and the run's ``stem`` where it sets one
    (absent: auto); None for the 2017 space (its DNA fixes it)."""
    if kind != "nasnet":
        if args.cells or args.filters:
            raise UserError("--cells/--filters apply only to NASNet architectures (a 2017-space DNA fixes its size)")
        return None
    default = (3, 24)
    stem = config.settings_of("nasnet").stem if config is not None else "auto"
    if args.arch:
        from dna.published import PUBLISHED, canonical_name

        paper = PUBLISHED[canonical_name(args.arch)]
        default = (paper.cells_per_stack, paper.filters)
    elif config is not None and config.search_space == "nasnet":
        default = (config.settings_of("nasnet").cells_per_stack, config.settings_of("nasnet").filters)
    cells = args.cells or default[0]
    filters = args.filters or default[1]
    if filters < 2:
        raise UserError("--filters must be at least 2")
    # the run's stem when it is not auto (auto is what a size without one means, so the
    # requests of runs that never set it keep their rids)
    return {"cells": cells, "filters": filters, **({"stem": stem} if stem != "auto" else {})}


def _candidates(store, config, args) -> list[dict[str, Any]]:
    """The individuals to retrain, best first: ``{id, fitness, dna, dna_hash, weights}``."""
    if config is None:
        raise UserError(f"{store.url} holds no run: --top/--id need a population (or use --arch/--dna)")
    census = store.history.census(read_alive=True)
    people: dict[str, dict[str, Any]] = {}
    for h in census.history:
        people[h["id"]] = {"id": h["id"], "fitness": float(h["fitness"]), "dna": h["dna"], "dna_hash": h["dna_hash"],
                           "alive": False}
    for info in census.listed:
        commit = census.commits.get(info.id)
        if isinstance(commit, dict) and info.id not in people and info.id not in census.quarantined_ids:
            people[info.id] = {"id": info.id, "fitness": float(commit["fitness"]), "dna": commit["dna"],
                               "dna_hash": commit["dna_hash"], "alive": True}
    if args.id:
        missing = [i for i in args.id if i not in people]
        if missing:
            raise UserError(f"{store.url}: no individual {missing[0]!r} (neither alive nor in history/)")
        return [people[i] for i in args.id]
    best: dict[str, dict[str, Any]] = {}
    for p in sorted(people.values(), key=lambda p: (-p["fitness"], p["id"])):
        if args.from_weights and not p["alive"] and store.history.read_kept(p["id"]) is None:
            continue
        best.setdefault(p["dna_hash"], p)   # one per architecture: its best-scoring individual
    ranked = list(best.values())[:args.top]
    if not ranked:
        raise UserError(f"{store.url}: no individuals yet" + (" with trained weights" if args.from_weights else ""))
    return ranked


def build_requests(args: argparse.Namespace, store, config, spec: DatasetSpec) -> list[dict[str, Any]]:
    """The retrain requests the options ask for (not yet written)."""
    from evo.train.retrain_request import make_request

    settings = settings_from_args(args, spec.name)
    init = "weights" if args.from_weights else "scratch"
    if args.arch or args.dna:
        if args.from_weights:
            raise UserError("--from-weights needs individuals of a run (--top/--id): a bare architecture has no weights")
        label, source, dna = _named_dna(args)
        kind = dna.get("kind", "large_scale")
        return [make_request(label=label, source=source, dna=dna, dna_hash=_dna_hash(dna), dataset=str(spec),
                             settings=settings, size=_size(args, kind, config), init="scratch")]
    requests = []
    for p in _candidates(store, config, args):
        kind = p["dna"].get("kind", "large_scale")
        if args.from_weights and kind != "large_scale":
            raise UserError("--from-weights continues a 2017-space individual's training; NASNet "
                            "individuals are retrained from scratch (as in the 2019 paper)")
        source = {"kind": "individual", "id": p["id"], "fitness": p["fitness"], "run": store.url}
        if args.from_weights:
            ind = store.population.read_individual(p["id"]) if p["alive"] else store.history.read_kept(p["id"])
            if ind is None:
                raise UserError(f"{p['id']}: its weights are gone (it died, or they did not verify)")
            source["payload_sha256"] = _sha256(ind.weights)
        requests.append(make_request(label=p["id"], source=source, dna=p["dna"], dna_hash=p["dna_hash"],
                                     dataset=str(spec), settings=settings, size=_size(args, kind, config), init=init))
    return requests


def _named_dna(args: argparse.Namespace) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(label, source, DNA as a JSON object) of ``--arch NAME`` or ``--dna FILE``."""
    import dna as dna_lib

    if args.arch:
        try:
            from dna.published import canonical_name, published
        except ImportError:
            raise UserError("--arch: this evo has no published architectures (dna.published)") from None
        genome = published(args.arch)   # DNAError (one line) names the known ones
        name = canonical_name(args.arch)
        return name, {"kind": "arch", "name": name}, genome.to_dict()
    path = Path(args.dna)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{args.dna}: cannot read the DNA file: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        obj = parse_json(text, "DNA file")
    except UntrustedJSONError as exc:
        raise UserError(f"{args.dna}: {exc}") from None
    if isinstance(obj, dict) and isinstance(obj.get("dna"), dict):
        obj = obj["dna"]   # a commit or history record, or an export's model record
    try:
        if isinstance(obj, dict) and obj.get("kind") == "nasnet":
            from dna.nasnet import nasnet_from_dict
            nasnet_from_dict(obj)
        else:
            dna_lib.from_dict(obj)
    except dna_lib.DNAError as exc:
        raise UserError(f"{args.dna}: {exc}") from None
    return path.stem or "dna", {"kind": "dna", "file": str(path)}, obj


def _dna_hash(d: dict[str, Any]) -> str:
    from storage import dna_hash

    return dna_hash(d)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()

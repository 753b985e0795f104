"""Regenerate ``bench/archs/{small,mid,large}.json``: ``python -m bench make_archs``.

- ``small``: the fittest individual of a real evolution run made here: digits, pairwise
  selection, P=10, 100 individuals of 200 steps, one in-process worker, seed 0 (about a
  minute on one CPU core).
- ``mid`` and ``large``: grown from ``small`` by the project's own mutation operators
  (insert_convolution, alter_channels, alter_filter_size, alter_stride, add_skip), drawn with
  a seeded generator, keeping only steps that leave the convolutions' cost on a 3x32x32 image
  under a ceiling, until they reach about 40 and 250 million multiply-accumulates per image.
  They are what a longer CIFAR run grows into, without spending GPU-days to get there.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

import dna as dna_lib
import mutations

from ._archs import ARCH_DIR, conv_macs, describe
from ._report import say

CIFAR_SHAPE = (3, 32, 32)
GROWTH = ("insert_convolution", "alter_channels", "alter_filter_size", "alter_stride", "add_skip")
TARGET_MMACS = {"mid": 40.0, "large": 250.0}
# Caps that keep the walk from piling up cheap strided layers and skip connections.
MAX_CONVS = {"mid": 10, "large": 16}
MAX_SKIPS = {"mid": 3, "large": 5}


def evolve_small(seed: int = 0, individuals: int = 100) -> dna_lib.DNA:
    """The fittest DNA of a real digits evolution run (pairwise, P=10, 200 steps per child)."""
    import torch

    from evo.config import RunConfig, TrainSettings
    from evo.search.assemble import open_worker
    from evo.search.worker import WorkerOptions
    from storage import open_store

    torch.set_num_threads(1)
    config = RunConfig(dataset="digits", population_size=10, selection="pairwise", seed=seed,
                       train=TrainSettings(steps=200, augment=False))
    with tempfile.TemporaryDirectory(prefix="evo-archs-") as tmp:
        store = open_store(tmp)
        store.runinfo.init_config(config.to_json())
        say(f"evolving on digits: {individuals} individuals, P=10, 200 steps each")
        open_worker(tmp, WorkerOptions(max_individuals=individuals), device="cpu", index=0).run()
        records = list(store.history.read_history())
        for info in store.population.list_alive():
            ind = store.population.read_individual(info, bounds=config.bounds)
            if ind is not None:
                records.append({"fitness": ind.fitness, "dna": ind.dna, "birth": info.birth})
    best = max(records, key=lambda r: (r["fitness"], r.get("birth", 0.0)))
    say(f"fittest individual: validation accuracy {best['fitness']:.4f}")
    return dna_lib.validate(dna_lib.from_dict(best["dna"]))


def grow(start: dna_lib.DNA, target_mmacs: float, max_convs: int, max_skips: int, rng: np.random.Generator,
         bounds: dna_lib.Bounds = dna_lib.DEFAULT_BOUNDS, max_tries: int = 20_000) -> dna_lib.DNA:
    """Apply growth mutations to ``start`` until its convolutions cost ``target_mmacs`` million
    MACs per CIFAR image, never stepping above 1.25x the target, ``max_convs`` convolutions or
    ``max_skips`` skip connections."""
    current = start
    ceiling = 1.25 * target_mmacs * 1e6
    for _ in range(max_tries):
        if conv_macs(current, CIFAR_SHAPE) >= target_mmacs * 1e6:
            return current
        child = mutations.mutate(current, rng, bounds, GROWTH)
        shape = describe(child, CIFAR_SHAPE, 10)
        if shape["mmacs"] * 1e6 <= ceiling and shape["convs"] <= max_convs and shape["skips"] <= max_skips:
            current = child
    raise RuntimeError(f"could not grow to {target_mmacs} MMACs in {max_tries} tries")


def make_archs(out_dir: Path = ARCH_DIR, seed: int = 0, individuals: int = 100,
               evolve: bool = True) -> dict[str, dna_lib.DNA]:
    """Write small/mid/large JSON files into ``out_dir``; return the DNAs.

    ``evolve=False`` keeps the existing ``small.json`` and only regrows mid and large.
    """
    if evolve or not (out_dir / "small.json").exists():
        small = evolve_small(seed, individuals)
    else:
        small = dna_lib.from_json((out_dir / "small.json").read_text(encoding="utf-8"))
    rng = np.random.default_rng(seed)
    archs = {"small": small}
    for name, target in TARGET_MMACS.items():
        archs[name] = grow(archs["small"] if name == "mid" else archs["mid"], target, MAX_CONVS[name],
                           MAX_SKIPS[name], rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, d in archs.items():
        (out_dir / f"{name}.json").write_text(json.dumps(d.to_dict(), indent=1) + "\n", encoding="utf-8")
        say(f"{name}: {describe(d, CIFAR_SHAPE, 10)}")
    return archs


def main(args) -> int:
    """CLI entry (``python -m bench make_archs``)."""
    make_archs(evolve=not getattr(args, "keep_small", False))
    return 0

"""``python -m bench overhead``: where a worker's time goes, child by child, in a real run.

A real digits run in a fresh local population directory, one in-process ``evo.search.worker.Worker``
driven step by step exactly as ``Worker.run`` does. Each step is timed from the outside
(``wall``: everything, the final heartbeat included; steps that made no child count too);
the parts come from what the worker records: ``select_s`` (listing + choosing, which includes
reading the parent and mutating: shown apart), ``build_s``, ``inherit_s``, ``train_s``,
``eval_s`` from the child's metrics; ``publish_s`` and ``kill_s`` from the step's record.
``other`` is the rest: heartbeats, weight serialisation, logging.

Coordination overhead = (wall - train - eval) / wall, summed over the run's steps.

In ``full`` mode the number of training steps is calibrated first so that the initial DNA (the
cheapest child there is, and the commonest in a run's first minutes) trains about
``--train-seconds`` (default 10) on this machine; children with convolutions train longer.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from ._report import BenchError, markdown_table, say, write_report

PARTS = ("select", "read_parent", "mutate", "build", "inherit", "train", "eval", "publish", "kill", "other")


@dataclass(frozen=True)
class OverheadSettings:
    """What one overhead run does."""

    children: int              # individuals to publish
    population_size: int
    steps: int | None          # None: calibrate to train_seconds
    train_seconds: float
    seed: int = 0


MODES = {
    "full": OverheadSettings(children=15, population_size=5, steps=None, train_seconds=10.0),
    "small": OverheadSettings(children=6, population_size=3, steps=30, train_seconds=0.0),
}


def calibrate_steps(device: str, target_seconds: float, seed: int = 0) -> tuple[int, float]:
    """Steps that make the initial DNA (every run's first P children, and the commonest child
    of its first minutes) train ``target_seconds`` on digits; and the s/step measured."""
    import dna
    from dna.build import build
    from evo.config import TrainSettings
    from evo.data.datasets import load_dataset
    from evo.train.training import train

    data = load_dataset("digits", device)
    probe = 2000
    times = []
    for _ in range(3):
        model = build(dna.initial(), data.input_shape, data.num_classes)
        result = train(model, data, TrainSettings(steps=probe, augment=False), learning_rate=0.1, seed=seed,
                       device=device)
        times.append(result.seconds / probe)
    per_step = sorted(times)[1]
    return max(1, round(target_seconds / per_step)), per_step


def run_steps(url: str, device: str, children: int) -> tuple[list[dict[str, Any]], float]:
    """Drive one worker until it has published ``children``; (one row per step, worker start-up s)."""
    from evo.search.assemble import open_worker
    from evo.search.worker import WorkerOptions

    t = time.perf_counter()
    worker = open_worker(url, WorkerOptions(max_individuals=children), device=device, index=0)
    worker.evaluator.prepare()   # load the dataset inside the start-up time
    worker.beat("starting", force=True)
    startup = time.perf_counter() - t
    rows = []
    while worker.stats.published < children:
        t = time.perf_counter()
        record = worker.step()
        wall = time.perf_counter() - t
        rows.append(breakdown(record, wall))
        if record is not None:
            say(f"child {worker.stats.published}/{children}: {record['mutation']}, "
                f"fitness {record['fitness']:.3f}, train {record['train_s']:.2f}s, wall {wall:.2f}s")
        if len(rows) > 5 * children + 20:
            raise BenchError(f"the worker made only {worker.stats.published} children in {len(rows)} steps")
    worker.beat("stopped", force=True)
    return rows, startup


def breakdown(record: dict[str, Any] | None, wall: float) -> dict[str, Any]:
    """One step's row: the child's time in each of :data:`PARTS` (from its record's metrics)
    out of ``wall`` seconds, the rest ``other``."""
    if record is None:   # a step that made no child (vanished parent, failed child): all overhead
        return {"child": None, "wall": wall, **{p: 0.0 for p in PARTS[:-1]}, "other": wall}
    m = record["metrics"]
    row = {
        "child": record["id"], "mutation": record["mutation"], "wall": wall,
        "read_parent": m.get("read_parent_s", 0.0), "mutate": m.get("mutate_s", 0.0),
        "build": m.get("build_s", 0.0), "inherit": m.get("inherit_s", 0.0),
        "train": m.get("train_s", 0.0), "eval": m.get("eval_s", 0.0),
        "publish": record["publish_s"], "kill": record["kill_s"],
    }
    row["select"] = max(0.0, m.get("select_s", 0.0) - row["read_parent"] - row["mutate"])
    row["other"] = wall - sum(row[p] for p in PARTS[:-1])
    return row


def run(mode: str = "small", device: str = "cpu", out_dir: str = "bench/results", *,
        children: int | None = None, train_seconds: float | None = None, steps: int | None = None,
        store_dir: str | None = None) -> dict[str, Any]:
    """Run the benchmark; write ``overhead-{mode}-{kind}.json`` and ``.md``; return the document."""
    import torch

    from evo.config import RunConfig, TrainSettings
    from storage import open_store

    s = MODES[mode]
    children = children or s.children
    train_seconds = train_seconds if train_seconds is not None else s.train_seconds
    steps = steps or s.steps
    if children < 1:
        raise BenchError("--children must be at least 1")
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    per_step = None
    if steps is None:
        if train_seconds <= 0:
            raise BenchError("--train-seconds must be > 0")
        steps, per_step = calibrate_steps(device, train_seconds, s.seed)
        say(f"calibrated: {1000 * per_step:.3f} ms/step for the initial DNA -> {steps} steps per child")
    config = RunConfig(dataset="digits", population_size=s.population_size, selection="pairwise", seed=s.seed,
                       train=TrainSettings(steps=steps, augment=False))
    with tempfile.TemporaryDirectory(prefix="evo-overhead-", dir=store_dir) as url:
        open_store(url).runinfo.init_config(config.to_json())
        say(f"overhead {mode}: {children} children, P={s.population_size}, {steps} steps each, store {url}")
        rows, startup = run_steps(url, device, children)
    totals = {p: sum(r[p] for r in rows) for p in PARTS}
    wall = sum(r["wall"] for r in rows)
    overhead = (wall - totals["train"] - totals["eval"]) / wall
    made = [r for r in rows if r["child"] is not None]
    table = markdown_table(["part", "total s", "mean ms per child", "share of wall"], [
        (p, f"{totals[p]:.3f}", f"{1000 * totals[p] / len(made):.2f}", f"{100 * totals[p] / wall:.2f}%") for p in PARTS
    ] + [("wall", f"{wall:.3f}", f"{1000 * wall / len(made):.2f}", "100%")])
    per_child = markdown_table(["#", "mutation", "wall s", "train s", "eval s", "overhead"], [
        (i + 1, r["mutation"], f"{r['wall']:.3f}", f"{r['train']:.3f}", f"{r['eval']:.4f}",
         f"{100 * (r['wall'] - r['train'] - r['eval']) / r['wall']:.2f}%") for i, r in enumerate(made)])
    worst = max((r["wall"] - r["train"] - r["eval"]) / r["wall"] for r in made)
    summary = (f"coordination overhead (wall - train - eval) / wall = {100 * overhead:.2f}% over {len(made)} children "
               f"(worst child {100 * worst:.2f}%; {len(rows) - len(made)} steps without a child), "
               f"training {min(r['train'] for r in made):.1f}-{max(r['train'] for r in made):.1f} s per child "
               f"(mean {totals['train'] / len(made):.1f} s)")
    markdown = (table + f"\n\nWorker construction (once per worker: open the store, read the config, load the dataset onto the device; torch already imported): {startup:.2f} s, not in the wall above.\n\n"
                "## Per child\n\n" + per_child + "\n")
    settings = {"dataset": "digits", "children": children, "population_size": s.population_size, "steps": steps,
                "train_seconds_target": train_seconds if per_step else None,
                "calibrated_s_per_step": per_step, "workers": 1, "selection": "pairwise",
                "store": "local directory (" + (store_dir or tempfile.gettempdir()) + ")",
                "omp_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads()}
    results = {"coordination_overhead": overhead, "worst_child_overhead": worst, "totals_s": totals, "wall_s": wall, "children": len(made),
               "steps_without_child": len(rows) - len(made), "worker_startup_s": startup, "rows": rows}
    return write_report("overhead", mode, device, out_dir, settings=settings, results=results,
                        markdown=markdown, summary=summary)

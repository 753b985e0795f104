"""``python -m bench search --space nasbench201``: evolution against random search on
NAS-Bench-201's tables, with real asynchronous workers, many seeds, equal budgets.

Every run is a real run: its own local population directory, ``workers`` ``evo worker``
processes started together (asynchronous: each publishes its share of the budget as fast as
it goes, the store is all they share), a tabular config (``evo init --dataset nb201-*``: a
child's fitness is the 200-epoch validation accuracy of one of its cell's recorded training
seeds, drawn at random, so the search sees noisy fitness as in reality). Schemes:

- ``pairwise``: Real et al. 2017's tournament (two at random; the fitter is the parent, the
  other dies), P=10;
- ``aging-rea``: aging evolution with the settings of NAS-Bench-201's REA baseline, P=10,
  S=3 (D-X-Y/AutoDL-Projects ``scripts-search/NAS-Bench-201-algos/R-EA.sh``:
  ``--ea_population 10``, and its usage line ``R-EA.sh cifar10 3 -1`` gives the sample size 3);
- ``aging-p100``: aging evolution with Real et al. 2019's P=100, S=25;
- ``rl-ppo``: the NASNet paper's RL controller (``--selection rl``: an LSTM trained with PPO,
  its appendix A.2/A.3 settings, minibatches of 20 children), P=10 (the population only
  holds the best; the first 10 cells are random, as the untrained controller's nearly
  uniform samples would be);
- ``rl-ppo-1w``: the same with one worker (sequential: every child sampled by the newest
  policy), the control for whether asynchrony is what keeps the controller from learning;
- ``reinforce``: NAS-Bench-201's REINFORCE baseline (``--selection reinforce``: independent
  softmaxes, its learning rate 0.01 and baseline momentum 0.9), P=10 likewise;
- ``random``: random search (every child a fresh uniform cell).

``--mode long`` asks whether the controllers learn at all: 1,000 cells per run (about 9x the
benchmark's budget), 30 seeds, CIFAR-10, aging-rea, rl-ppo, reinforce and random, with the
two workers of a run as threads of one process on a ``memory://`` store (real workers, each
its own store handle, strategy and random stream; at 110 cells this agrees with the real
processes' runs: ``bench/results/nb201-110-in-process``). Finished runs are appended to
``search-nasbench201-{mode}-runs.jsonl`` and skipped when the command runs again.

All start from random cells (as the benchmark's REA does) and evaluate the same number of
cells. A run's result is its best-by-validation cell (highest fitness the search saw, ties to
the earliest), scored by that cell's MEAN validation accuracy over its recorded seeds (what
the benchmark reports), and its regret to the table's best mean. The curve is that score for
the best-by-validation cell among the first i cells evaluated (by birth), against i.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._report import BenchError, markdown_table, say, write_report

REPO = Path(__file__).resolve().parent.parent
TABLES = ("nb201-cifar10", "nb201-cifar100")


@dataclass(frozen=True)
class Scheme:
    """One search configuration: a strategy and its population size P and sample size S."""

    name: str
    selection: str
    population_size: int
    tournament_size: int
    source: str
    workers: int | None = None   # None: the run's workers; 1: the sequential control
    controller: tuple[tuple[str, Any], ...] = ()   # controller settings other than the strategy's defaults


SCHEMES = (
    Scheme("pairwise", "pairwise", 10, 2, "Real et al. 2017 (tournament of two), P=10"),
    Scheme("aging-rea", "aging", 10, 3, "NAS-Bench-201's REA baseline: P=10, S=3"),
    Scheme("aging-p100", "aging", 100, 25, "Real et al. 2019: P=100, S=25"),
    Scheme("rl-ppo", "rl", 10, 2, "NASNet's RL controller (appendix A.2/A.3): LSTM of 100 units, PPO, lr 0.00035, "
           "entropy 1e-5, baseline EMA 0.95 of previous rewards, minibatches of 20"),
    Scheme("reinforce", "reinforce", 10, 2, "NAS-Bench-201's REINFORCE: independent softmaxes, Adam lr 0.01, "
           "baseline EMA 0.9"),
    Scheme("random", "random", 10, 2, "random search"),
    Scheme("rl-ppo-1w", "rl", 10, 2, "the same RL controller with one worker: sequential, every child on-policy "
           "(the control for asynchrony)", workers=1),
    Scheme("rl-ppo-b1", "rl", 10, 2, "the same RL controller updated after every child (batch 1): 1,000 cells make "
           "1,000 updates, as many as the paper's 20,000 children in minibatches of 20 (the control for the "
           "number of updates)", controller=(("batch_size", 1),)),
)
DEFAULT_SCHEMES = ("pairwise", "aging-rea", "aging-p100", "rl-ppo", "reinforce", "random")


@dataclass(frozen=True)
class Nb201Settings:
    """One comparison: every table x scheme x seed, ``cells`` evaluated cells per run."""

    cells: int
    seeds: tuple[int, ...]
    workers: int
    tables: tuple[str, ...] = TABLES
    time_scale: float = 0.0
    parallel: int = 1          # runs at once (each with its own population and workers)
    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    in_process: bool = False   # workers as threads of this process on a memory:// store (not processes on a local one)


# Budget: NAS-Bench-201's REA searched CIFAR-10 for 12,000 simulated seconds
# (D-X-Y/AutoDL-Projects scripts-search/NAS-Bench-201-algos/R-EA.sh, --time_budget 12000),
# each cell costing its 12-epoch training time; the table's mean 200-epoch CIFAR-10 training time is 1,828 s, so a cell costs ~110 s
# and the budget buys ~109 cells. Every run here evaluates 110 cells, whatever the scheme.
MODES = {
    "full": Nb201Settings(cells=110, seeds=tuple(range(30)), workers=2, parallel=2),
    "small": Nb201Settings(cells=24, seeds=(0, 1), workers=2, tables=("nb201-cifar10",)),
    # Does the controller learn? 1,000 cells (about 9x the benchmark's budget), CIFAR-10, the
    # four strategies the question is about; the workers are threads on a memory:// store (a
    # 110-cell run of --in-process agrees with the real processes' runs: see bench/results).
    "long": Nb201Settings(cells=1000, seeds=tuple(range(30)), workers=2, tables=("nb201-cifar10",),
                          schemes=("aging-rea", "rl-ppo", "reinforce", "random"), in_process=True),
}


def scheme_for(scheme: Scheme, cells: int) -> Scheme:
    """The scheme at this budget: a population must be smaller than the budget, so in a small
    run P shrinks to half the budget (S to P/4, at least 2); the full run keeps the papers'."""
    if scheme.population_size < cells:
        return scheme
    p = max(2, cells // 2)
    return replace(scheme, population_size=p, tournament_size=min(p, max(2, p // 4)))


def one_run(settings: Nb201Settings, table: str, scheme: Scheme, seed: int) -> dict[str, Any]:
    """Run ``settings.workers`` worker processes on a fresh population until ``cells`` cells
    were evaluated; the cells in birth order (table key, fitness seen) and the wall time."""
    from dna.nasbench201 import nb201_from_dict
    from evo.config import RunConfig
    from evo.train.tabular import TabularSettings
    from evo.strategies.controller_settings import ControllerSettings
    from evo.strategies.evolution import AgingSettings
    from storage import open_store

    plugins = {"aging": AgingSettings(tournament_size=scheme.tournament_size),
               "tabular": TabularSettings(time_scale=settings.time_scale)}
    if scheme.controller:
        plugins["controller"] = ControllerSettings(**dict(scheme.controller))
    config = RunConfig(dataset=table, search_space="nasbench201", selection=scheme.selection,
                       population_size=scheme.population_size, seed=seed, plugins=plugins)
    workers = scheme.workers or settings.workers
    shares = [settings.cells // workers + (i < settings.cells % workers) for i in range(workers)]
    if settings.in_process:
        return _in_process_run(config, shares, table, scheme, seed)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"evo-nb201-{scheme.name}-") as url:
        open_store(url).runinfo.init_config(config.to_json())
        procs = [subprocess.Popen([sys.executable, "-m", "launch", "worker", url, "--max-individuals", str(k),
                                   "--index", str(i), "--quiet", "--heartbeat-seconds", "60"],
                                  cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for i, k in enumerate(shares) if k > 0]
        errors = []
        for p in procs:
            _, err = p.communicate(timeout=600)
            if p.returncode != 0:
                errors.append(err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}")
        if errors:
            raise BenchError(f"{table} {scheme.name} seed {seed}: a worker failed: {errors[0]}"[:300])
        from launch.views.snapshot import open_population

        census = open_population(url)[0].history.census()
        records = [c for c in census.commits.values() if isinstance(c, dict)] + list(census.history)
    records.sort(key=lambda r: (r["birth"], r["id"]))
    cells = [(nb201_from_dict(r["dna"]).table_key(), float(r["fitness"])) for r in records]
    return {"table": table, "scheme": scheme.name, "seed": seed, "cells": cells,
            "seconds": time.perf_counter() - t}


def _in_process_run(config: Any, shares: list[int], table: str, scheme: Scheme, seed: int) -> dict[str, Any]:
    """As :func:`one_run`, with the workers as threads of this process on a fresh memory://
    store (each a whole worker: its own store handle, strategy and random stream)."""
    import uuid

    from dna.nasbench201 import nb201_from_dict
    from storage import drop_memory_store, open_store

    from ._inprocess import run_worker_threads

    name = f"nb201-{uuid.uuid4().hex}"
    url = f"memory://{name}"
    open_store(url).runinfo.init_config(config.to_json())
    t = time.perf_counter()
    errors = run_worker_threads(url, shares)
    if errors:
        raise BenchError(f"{table} {scheme.name} seed {seed}: a worker failed: {errors[0]}"[:300])
    from launch.views.snapshot import open_population

    census = open_population(url)[0].history.census()
    records = [c for c in census.commits.values() if isinstance(c, dict)] + list(census.history)
    drop_memory_store(name)
    records.sort(key=lambda r: (r["birth"], r["id"]))
    cells = [(nb201_from_dict(r["dna"]).table_key(), float(r["fitness"])) for r in records]
    return {"table": table, "scheme": scheme.name, "seed": seed, "cells": cells,
            "seconds": time.perf_counter() - t}


def curve(cells: list[tuple[str, float]], mean_acc) -> list[float]:
    """After each cell: the mean validation accuracy of the best-by-validation cell so far."""
    out, best_fit, best_key = [], -math.inf, None
    for key, fitness in cells:
        if fitness > best_fit:
            best_fit, best_key = fitness, key
        out.append(mean_acc(best_key))
    return out


def paired_test(a: list[float], b: list[float]) -> dict[str, Any]:
    """Paired comparison of a against b (same seeds): mean and sd of a - b, wins/ties/losses,
    the two-sided Wilcoxon signed-rank p-value (scipy) and the exact two-sided sign-test p."""
    diffs = [x - y for x, y in zip(a, b)]
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    n = wins + losses
    k = min(wins, losses)
    sign_p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    try:
        from scipy.stats import wilcoxon

        wilcoxon_p = float(wilcoxon(diffs).pvalue) if n else 1.0
    except ImportError:   # scikit-learn brings scipy; the sign test stands alone without it
        wilcoxon_p = None
    return {"mean_diff": statistics.fmean(diffs), "sd_diff": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "wins": wins, "ties": len(diffs) - n, "losses": losses, "wilcoxon_p": wilcoxon_p, "sign_test_p": sign_p}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict[str, Any]], settings: Nb201Settings, schemes: tuple[Scheme, ...]) -> dict[str, Any]:
    """Per table and scheme: curves (mean, sd), per-seed finals, regret, the paired test vs random."""
    from evo.data.nasbench201_tables import load_table

    out: dict[str, Any] = {}
    for table_name in settings.tables:
        table = load_table(table_name)
        best_key, best = table.best()
        by = {(r["scheme"], r["seed"]): curve(r["cells"], table.mean_val_acc)
              for r in runs if r["table"] == table_name}
        entry: dict[str, Any] = {"table_best_cell": best_key, "table_best_mean_val_acc": best, "schemes": {}}
        for scheme in schemes:
            curves = [by[(scheme.name, s)] for s in settings.seeds]
            finals = [c[-1] for c in curves]
            e = {"P": scheme.population_size, "S": scheme.tournament_size,
                 "curve_mean": [statistics.fmean(c[i] for c in curves) for i in range(settings.cells)],
                 "curve_sd": [statistics.stdev([c[i] for c in curves]) if len(curves) > 1 else 0.0
                              for i in range(settings.cells)],
                 "final_mean_val_acc_seeds": finals, "final": _mean_sd(finals),
                 "regret_seeds": [best - f for f in finals], "regret": _mean_sd([best - f for f in finals]),
                 "found_table_best_seeds": sum(r["cells"][-1] is not None and
                                               max(r["cells"], key=lambda c: c[1])[0] == best_key
                                               for r in runs if r["table"] == table_name
                                               and r["scheme"] == scheme.name),
                 "seconds_per_run": _mean_sd([r["seconds"] for r in runs
                                              if r["table"] == table_name and r["scheme"] == scheme.name])}
            window = min(settings.cells, max(10, settings.cells // 20))
            seen = [[f for _, f in r["cells"]] for r in runs if r["table"] == table_name and r["scheme"] == scheme.name]
            e["sampled_window"] = window
            e["sampled_mean"] = [statistics.fmean(statistics.fmean(f[i:i + window]) for f in seen)
                                 for i in range(0, settings.cells - window + 1, window)]
            entry["schemes"][scheme.name] = e
        rand = entry["schemes"]["random"]["final_mean_val_acc_seeds"]
        for scheme in schemes:
            if scheme.name != "random":
                entry["schemes"][scheme.name]["vs_random"] = paired_test(
                    entry["schemes"][scheme.name]["final_mean_val_acc_seeds"], rand)
        names = entry["schemes"]
        if "aging-rea" in names and "rl-ppo" in names:
            entry["aging-vs-rl"] = paired_test(names["aging-rea"]["final_mean_val_acc_seeds"],
                                               names["rl-ppo"]["final_mean_val_acc_seeds"])
        out[table_name] = entry
    return out


def plot(summary: dict[str, Any], settings: Nb201Settings, schemes: tuple[Scheme, ...], path: Path) -> None:
    """Best-so-far (mean validation accuracy of the best-by-validation cell) vs cells evaluated,
    mean and +-1 sd band per scheme, one panel per table; the table's best as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(settings.tables), figsize=(6.5 * len(settings.tables), 8.5), squeeze=False)
    colors = {"pairwise": "tab:blue", "aging-rea": "tab:green", "aging-p100": "tab:olive", "rl-ppo": "tab:purple",
              "reinforce": "tab:orange", "random": "tab:red", "rl-ppo-1w": "tab:pink",
              "rl-ppo-b1": "tab:brown"}
    for ax, table_name in zip(axes[0], settings.tables):
        entry = summary[table_name]
        lows = []
        for scheme in schemes:
            e = entry["schemes"][scheme.name]
            mean, sd = [100 * m for m in e["curve_mean"]], [100 * s for s in e["curve_sd"]]
            x = range(1, len(mean) + 1)
            ax.plot(x, mean, color=colors.get(scheme.name), label=f"{scheme.name} (P={e['P']}, S={e['S']})")
            ax.fill_between(x, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                            color=colors.get(scheme.name), alpha=0.12)
            lows.append(mean[min(len(mean) - 1, 9)] - sd[min(len(sd) - 1, 9)])
        best = 100 * entry["table_best_mean_val_acc"]
        ax.axhline(best, color="black", lw=0.8, ls="--", label=f"table's best {best:.2f}")
        ax.set_ylim(min(lows) - 0.5, best + 0.4)
        ax.set_xlabel("cells evaluated")
        ax.set_ylabel("validation accuracy (%) of the best cell so far")
        ax.set_title(f"NAS-Bench-201 {table_name[6:]}: {len(settings.seeds)} seeds, {settings.workers} "
                     f"async workers per run{' (threads)' if settings.in_process else ''} (mean ± sd)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    for ax, table_name in zip(axes[1], settings.tables):   # what each strategy samples: does it learn?
        for scheme in schemes:
            e = summary[table_name]["schemes"][scheme.name]
            w = e["sampled_window"]
            ax.plot([w * (i + 1) for i in range(len(e["sampled_mean"]))], [100 * m for m in e["sampled_mean"]],
                    marker=".", color=colors.get(scheme.name), label=scheme.name)
        ax.set_xlabel("cells evaluated")
        ax.set_ylabel(f"mean fitness seen of the last {w} cells (%)")
        ax.set_title("the cells each strategy evaluates (mean over seeds): a learning controller's rise", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(mode: str = "small", out_dir: str | Path = "bench/results", *, seeds: int | None = None,
        cells: int | None = None, workers: int | None = None, tables: tuple[str, ...] | None = None,
        schemes: tuple[str, ...] | None = None, first_seed: int = 0, in_process: bool | None = None,
        report_only: bool = False) -> dict[str, Any]:
    """Every table x scheme x seed; writes ``search-nasbench201-{mode}-cpu.{json,md,png}``.

    Each finished run is appended at once to ``search-nasbench201-{mode}-runs.jsonl`` under
    ``out_dir``; a run already there (same table, scheme, seed and budget) is not run again,
    so an interrupted command, or one split over processes by ``first_seed``, is finished by
    running it again. The report covers the seeds every scheme has finished
    (``report_only``: write it from that file, running nothing)."""
    from evo.data.nasbench201_tables import TableError, load_table

    settings = MODES[mode]
    changes: dict[str, Any] = {}
    if seeds is not None:
        changes["seeds"] = tuple(range(first_seed, first_seed + seeds))
    elif first_seed:
        changes["seeds"] = tuple(s for s in settings.seeds if s >= first_seed)
    if cells is not None:
        changes["cells"] = cells
    if workers is not None:
        changes["workers"] = workers
    if tables is not None:
        changes["tables"] = tuple(t if t.startswith("nb201-") else f"nb201-{t}" for t in tables)
    if schemes is not None:
        known = {s.name for s in SCHEMES}
        if not set(schemes) <= known or "random" not in schemes:
            raise BenchError(f"--schemes must name random and some of {', '.join(sorted(known))}")
        changes["schemes"] = tuple(schemes)
    if in_process is not None:
        changes["in_process"] = in_process
    settings = replace(settings, **changes)
    if len(settings.seeds) < 2 and not report_only:
        raise BenchError("--seeds must be at least 2 (the comparison is paired over seeds)")
    if settings.workers < 1 or settings.cells < 4 * settings.workers:
        raise BenchError(f"--individuals ({settings.cells}) must be at least 4 per worker ({settings.workers} workers)")
    for t in settings.tables:
        try:
            load_table(t)
        except TableError as exc:
            raise BenchError(str(exc)) from None
    chosen = tuple(scheme_for(s, settings.cells) for s in SCHEMES if s.name in settings.schemes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / f"search-nasbench201-{mode}-runs.jsonl"
    done = _read_runs(runs_file, settings.cells)
    specs = [(table, scheme, seed) for table in settings.tables for seed in settings.seeds for scheme in chosen
             if (table, scheme.name, seed) not in done]
    if not report_only:
        say(f"search-nasbench201 {mode}: {len(specs)} runs of {settings.cells} cells ({len(done)} done before), "
            f"{settings.workers} workers each ({'threads on memory://' if settings.in_process else 'processes'}), "
            f"tables {', '.join(settings.tables)}")
        from concurrent.futures import ThreadPoolExecutor

        from launch.views.snapshot import open_population  # noqa: F401  (imported once, before the threads)

        parallel = 1 if settings.in_process else settings.parallel   # threads of one process share its GIL
        with ThreadPoolExecutor(max_workers=parallel) as pool:   # each run is its own processes
            for i, r in enumerate(pool.map(lambda spec: one_run(settings, *spec), specs), 1):
                if len(r["cells"]) != settings.cells:
                    raise BenchError(f"{r['table']} {r['scheme']} seed {r['seed']}: {len(r['cells'])} cells, "
                                     f"expected {settings.cells}")
                _append_run(runs_file, r)
                done[(r["table"], r["scheme"], r["seed"])] = r
                say(f"[{i}/{len(specs)}] {r['table']} {r['scheme']} seed {r['seed']}: best seen "
                    f"{max(f for _, f in r['cells']):.4f} in {r['seconds']:.1f} s")
    complete = tuple(sorted(seed for seed in {k[2] for k in done}
                            if all((t, s.name, seed) in done for t in settings.tables for s in chosen)))
    if len(complete) < 2:
        raise BenchError(f"{runs_file}: fewer than 2 seeds finished by every scheme (the comparison is paired)")
    settings = replace(settings, seeds=complete)
    runs = [done[(t, s.name, seed)] for t in settings.tables for seed in complete for s in chosen]
    # the long runs' cells stay in the runs file only (megabytes); the other modes' in the JSON too
    return report(runs, settings, chosen, mode, out_dir, runs_file=runs_file.name if mode == "long" else None)


def _read_runs(path: Path, cells: int) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The finished runs of ``cells`` cells in the runs file (an unfinished last line is skipped)."""
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if len(r.get("cells", ())) == cells:
            r["cells"] = [tuple(c) for c in r["cells"]]
            done[(r["table"], r["scheme"], r["seed"])] = r
    return done


def _append_run(path: Path, r: dict[str, Any]) -> None:
    """One run as one line, in one append (processes sharing the file do not interleave)."""
    import os

    line = (json.dumps({k: r[k] for k in ("table", "scheme", "seed", "seconds", "cells")}) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def report(runs: list[dict[str, Any]], settings: Nb201Settings, schemes: tuple[Scheme, ...], mode: str,
           out_dir: str | Path, runs_file: str | None = None) -> dict[str, Any]:
    """Summarise finished runs; write the JSON (per-seed finals kept), the markdown and the plot.
    The runs' cells go in the JSON, or, given ``runs_file`` (which holds them), are named by it."""
    name = "search-nasbench201"
    summary = summarise(runs, settings, schemes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}-{mode}-cpu.png"
    plot(summary, settings, schemes, png)
    parts, lines = [], []
    for table_name in settings.tables:
        entry = summary[table_name]
        rows = []
        for scheme in schemes:
            e = entry["schemes"][scheme.name]
            vs = e.get("vs_random")
            test = ("-" if vs is None else
                    f"{100 * vs['mean_diff']:+.2f} ± {100 * vs['sd_diff']:.2f} ({vs['wins']}/{vs['ties']}/"
                    f"{vs['losses']}); Wilcoxon p={_p(vs['wilcoxon_p'])}, sign p={_p(vs['sign_test_p'])}")
            rows.append((scheme.name, f"{e['P']}/{e['S']}", f"{100 * e['final'][0]:.2f} ± {100 * e['final'][1]:.2f}",
                         f"{100 * e['regret'][0]:.2f} ± {100 * e['regret'][1]:.2f}",
                         f"{e['found_table_best_seeds']}/{len(settings.seeds)}", test,
                         f"{e['seconds_per_run'][0]:.1f}"))
        parts.append(f"### {table_name}: table's best cell {entry['table_best_cell']} at "
                     f"{100 * entry['table_best_mean_val_acc']:.2f}% mean validation accuracy\n\n" + markdown_table(
                         ["scheme", "P/S", f"mean val acc (%) after {settings.cells} cells", "regret (%)",
                          "found the best", "vs random, paired: diff (wins/ties/losses), p", "s per run"], rows))
        w = entry["schemes"]["random"]["sampled_window"]
        marks = list(range(0, len(entry["schemes"]["random"]["sampled_mean"]),
                           max(1, len(entry["schemes"]["random"]["sampled_mean"]) // 5)))
        parts.append(f"Mean fitness seen (validation accuracy of one seed, %) of the cells each scheme evaluated, "
                     f"in windows of {w} cells, mean over seeds (a controller that learns samples better cells as "
                     "it goes; random search's stays flat):\n\n" + markdown_table(
                         ["scheme"] + [f"cells {w * i + 1}-{w * (i + 1)}" for i in marks] + ["last window"],
                         [(sc.name, *[f"{100 * entry['schemes'][sc.name]['sampled_mean'][i]:.2f}" for i in marks],
                           f"{100 * entry['schemes'][sc.name]['sampled_mean'][-1]:.2f}") for sc in schemes]))
        rnd = entry["schemes"]["random"]
        versus = []
        for label, key in (("aging (REA)", "aging-rea"), ("RL (PPO)", "rl-ppo"), ("REINFORCE", "reinforce"),
                           ("RL (PPO), one worker", "rl-ppo-1w"), ("RL (PPO), batch 1", "rl-ppo-b1")):
            if key not in entry["schemes"]:
                continue
            e = entry["schemes"][key]
            vs = e["vs_random"]
            versus.append(f"{label} {100 * e['final'][0]:.2f} ± {100 * e['final'][1]:.2f} "
                          f"(paired {100 * vs['mean_diff']:+.2f}, Wilcoxon p={_p(vs['wilcoxon_p'])})")
        line = (f"{table_name[6:]}: " + ", ".join(versus) +
                f" vs random {100 * rnd['final'][0]:.2f} ± {100 * rnd['final'][1]:.2f}")
        if "aging-vs-rl" in entry:
            vs = entry["aging-vs-rl"]
            line += (f"; aging vs RL paired {100 * vs['mean_diff']:+.2f} ({vs['wins']}/{vs['ties']}/{vs['losses']}), "
                     f"Wilcoxon p={_p(vs['wilcoxon_p'])}")
        lines.append(line)
    text = (f"NAS-Bench-201, {settings.cells} cells per run, {len(settings.seeds)} seeds, mean validation accuracy "
            "of the best-by-validation cell: " + "; ".join(lines))
    markdown = ("\n\n".join(parts) + f"\n\n![best so far vs cells evaluated]({png.name})\n\n"
                "Mean validation accuracy: the average over the cell's recorded training seeds of its 200-epoch "
                "validation accuracy in the benchmark's table (the search saw one seed's, drawn at random). "
                "Regret: the table's best mean minus that. Paired over seeds against random search; "
                "Wilcoxon signed-rank and exact sign test, two-sided.\n")
    settings_d = {"cells": settings.cells, "seeds": list(settings.seeds), "workers_per_run": settings.workers,
                  "runs_at_once": 1 if settings.in_process else settings.parallel,
                  "workers_as": "threads on memory://" if settings.in_process else "evo worker processes on a local store",
                  "tables": list(settings.tables), "time_scale": settings.time_scale,
                  "schemes": {s.name: {"selection": s.selection, "P": s.population_size, "S": s.tournament_size,
                                       "workers": s.workers or settings.workers, "source": s.source}
                              for s in schemes}}
    slim: Any = runs_file or [{"table": r["table"], "scheme": r["scheme"], "seed": r["seed"], "seconds": r["seconds"],
                               "cells": [k for k, _ in r["cells"]], "fitness_seen": [f for _, f in r["cells"]]}
                              for r in runs]
    return write_report(name, mode, "cpu", out_dir, settings=settings_d,
                        results={"summary": summary, "runs": slim, "plot": png.name}, markdown=markdown, summary=text)


def _p(p: float | None) -> str:
    return "-" if p is None else (f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}")

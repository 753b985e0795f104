"""``python -m bench search``: evolution (pairwise, aging) against random search at equal budget.

Every run is a real run: its own local population directory, one in-process
``evo.search.worker.Worker`` with ``max_individuals`` = the budget, on digits. The three schemes use
identical settings and the same seeds (config seed s, worker index 0), so their seeding phases
(P copies of the initial DNA) coincide; after it, pairwise and aging mutate a selected parent
(inheriting its weights), random search trains a fresh random architecture
(``mutations.random_dna``) per individual. Every individual trains the same number of steps.

The curve of a run is the best validation accuracy among the first i individuals trained;
the report gives mean and standard deviation over seeds at every i, a plot, and per scheme the
final best, the area under the curve (mean of the curve: how early accuracy arrives), and a
paired comparison with random search (same seed).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._report import BenchError, device_kind, markdown_table, say, write_report

SCHEMES = ("pairwise", "aging", "random")


@dataclass(frozen=True)
class SearchSettings:
    """One comparison: every scheme x every seed, identical budgets."""

    individuals: int
    population_size: int
    steps: int
    seeds: tuple[int, ...]
    search_space: str = "large_scale"
    dataset: str = "digits"
    nasnet_cells: int = 1
    nasnet_filters: int = 8


MODES = {
    "full": SearchSettings(individuals=80, population_size=10, steps=200, seeds=(0, 1, 2, 3, 4)),
    "small": SearchSettings(individuals=8, population_size=3, steps=10, seeds=(0, 1)),
}


def tournament_size(population_size: int) -> int:
    """Aging evolution's sample size S: ``evo init``'s default rule, P/4 clipped to [2, 25]."""
    return min(25, max(2, population_size // 4))


def run_config(settings: SearchSettings, scheme: str, seed: int):
    """The RunConfig of one run (everything but selection and seed is shared by all runs)."""
    from evo.config import RunConfig, TrainSettings
    from evo.spaces.nasnet import NasnetSettings
    from evo.strategies.evolution import AgingSettings

    nasnet = settings.search_space == "nasnet"
    return RunConfig(
        dataset=settings.dataset, population_size=settings.population_size, selection=scheme,
        search_space=settings.search_space,
        inherit_weights=not nasnet,   # the 2019 paper trains every NASNet child from scratch
        seed=seed, train=TrainSettings(steps=settings.steps, augment=False),
        plugins={"aging": AgingSettings(tournament_size=tournament_size(settings.population_size)),
                 "nasnet": NasnetSettings(cells_per_stack=settings.nasnet_cells, filters=settings.nasnet_filters)},
    )


def one_run(settings: SearchSettings, scheme: str, seed: int, device: str) -> dict[str, Any]:
    """Fitness of every individual in publishing order, and the run's wall time."""
    from evo.search.assemble import open_worker
    from evo.search.worker import WorkerOptions
    from storage import open_store

    config = run_config(settings, scheme, seed)
    fitness: list[float] = []
    made_by: list[str] = []
    failures = 0
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"evo-search-{scheme}-") as url:
        open_store(url).runinfo.init_config(config.to_json())
        worker = open_worker(url, WorkerOptions(max_individuals=settings.individuals), device=device, index=0,
                             on_publish=lambda r: (fitness.append(r["fitness"]), made_by.append(r["mutation"])))
        stats = worker.run()
        failures = stats.failures
    return {"scheme": scheme, "seed": seed, "fitness": fitness, "mutations": made_by,
            "failures": failures, "seconds": time.perf_counter() - t}


def best_so_far(fitness: list[float]) -> list[float]:
    """Running maximum: the curve 'best validation accuracy vs individuals trained'."""
    out, best = [], float("-inf")
    for f in fitness:
        best = max(best, f)
        out.append(best)
    return out


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict[str, Any]], settings: SearchSettings) -> dict[str, Any]:
    """Per-scheme curves (mean, sd), finals, areas, and paired differences against random search."""
    out: dict[str, Any] = {}
    by = {(r["scheme"], r["seed"]): best_so_far(r["fitness"]) for r in runs}
    for scheme in SCHEMES:
        curves = [by[(scheme, s)] for s in settings.seeds]
        n = min(len(c) for c in curves)
        mean = [statistics.fmean(c[i] for c in curves) for i in range(n)]
        sd = [statistics.stdev([c[i] for c in curves]) if len(curves) > 1 else 0.0 for i in range(n)]
        finals = [c[-1] for c in curves]
        areas = [statistics.fmean(c) for c in curves]
        half = [c[len(c) // 2 - 1] for c in curves]
        entry = {"curve_mean": mean, "curve_sd": sd, "final": _mean_sd(finals), "finals": finals,
                 "area": _mean_sd(areas), "areas": areas, "at_half_budget": _mean_sd(half),
                 "seconds": _mean_sd([r["seconds"] for r in runs if r["scheme"] == scheme])}
        if scheme != "random":
            rand = [by[("random", s)] for s in settings.seeds]
            diffs = [c[-1] - r[-1] for c, r in zip(curves, rand)]
            area_diffs = [statistics.fmean(c) - statistics.fmean(r) for c, r in zip(curves, rand)]
            entry["final_minus_random"] = _mean_sd(diffs)
            entry["area_minus_random"] = _mean_sd(area_diffs)
            entry["wins_final"] = sum(d > 0 for d in diffs)
            entry["ties_final"] = sum(d == 0 for d in diffs)
        out[scheme] = entry
    return out


def plot(summary: dict[str, Any], settings: SearchSettings, path: Path, title: str) -> None:
    """Mean best validation accuracy vs individuals trained, with a +-1 sd band per scheme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for scheme, color in zip(SCHEMES, ("tab:blue", "tab:green", "tab:red")):
        mean, sd = summary[scheme]["curve_mean"], summary[scheme]["curve_sd"]
        x = range(1, len(mean) + 1)
        ax.plot(x, mean, color=color, label=f"{scheme} (n={len(settings.seeds)})")
        ax.fill_between(x, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                        color=color, alpha=0.15)
    ax.axvline(settings.population_size, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("individuals trained")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title(title, fontsize=10)
    low = min(min(summary[s]["curve_mean"][settings.population_size - 1:] or [0]) for s in SCHEMES)
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(mode: str = "small", device: str = "cpu", out_dir: str = "bench/results", *,
        seeds: int | None = None, individuals: int | None = None, steps: int | None = None,
        population_size: int | None = None, search_space: str = "large_scale") -> dict[str, Any]:
    """All schemes x seeds; writes ``search[-nasnet]-{mode}-{kind}.json``, ``.md`` and ``.png``."""
    import torch

    settings = MODES[mode]
    changes: dict[str, Any] = {"search_space": search_space}
    if seeds is not None:
        changes["seeds"] = tuple(range(seeds))
    if individuals is not None:
        changes["individuals"] = individuals
    if steps is not None:
        changes["steps"] = steps
    if population_size is not None:
        changes["population_size"] = population_size
    settings = replace(settings, **changes)
    if settings.individuals <= settings.population_size:
        raise BenchError(f"--individuals ({settings.individuals}) must exceed the population size "
                         f"({settings.population_size}), or nothing is ever selected")
    if len(settings.seeds) < 1:
        raise BenchError("--seeds must be at least 1")
    if search_space not in ("large_scale", "nasnet"):
        raise BenchError(f"unknown search space {search_space!r} (large_scale, nasnet)")
    if device_kind(device) == "cpu":
        torch.set_num_threads(1)
    name = "search" if search_space == "large_scale" else f"search-{search_space}"
    total = len(SCHEMES) * len(settings.seeds)
    say(f"{name} {mode}: {total} runs of {settings.individuals} individuals, P={settings.population_size}, "
        f"{settings.steps} steps each")
    runs = []
    for seed in settings.seeds:
        for scheme in SCHEMES:
            r = one_run(settings, scheme, seed, device)
            runs.append(r)
            if len(r["fitness"]) < settings.individuals:
                raise BenchError(f"{scheme} seed {seed} published only {len(r['fitness'])} individuals")
            say(f"[{len(runs)}/{total}] {scheme} seed {seed}: best {max(r['fitness']):.4f} "
                f"in {r['seconds']:.0f} s ({r['failures']} failed children)")
    return report(runs, settings, name, mode, device, out_dir)


def report(runs: list[dict[str, Any]], settings: SearchSettings, name: str, mode: str, device: str,
           out_dir: str | Path) -> dict[str, Any]:
    """Summarise finished runs; write the JSON, markdown and plot; return the document."""
    import torch

    summary = summarise(runs, settings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}-{mode}-{device_kind(device)}.png"
    plot(summary, settings, png, f"{settings.dataset}, {settings.search_space}: P={settings.population_size}, "
         f"{settings.steps} steps/child, {len(settings.seeds)} seeds (mean ± sd)")
    rows = []
    for scheme in SCHEMES:
        e = summary[scheme]
        vs = (f"{e['final_minus_random'][0]:+.4f} ± {e['final_minus_random'][1]:.4f} "
              f"({e['wins_final']} wins, {e['ties_final']} ties)") if scheme != "random" else "-"
        vs_area = (f"{e['area_minus_random'][0]:+.4f} ± {e['area_minus_random'][1]:.4f}"
                   if scheme != "random" else "-")
        rows.append((scheme, f"{e['final'][0]:.4f} ± {e['final'][1]:.4f}",
                     f"{e['at_half_budget'][0]:.4f} ± {e['at_half_budget'][1]:.4f}",
                     f"{e['area'][0]:.4f} ± {e['area'][1]:.4f}", vs, vs_area, f"{e['seconds'][0]:.0f}"))
    table = markdown_table(["scheme", f"best after {settings.individuals}", f"best after {settings.individuals // 2}",
                            "area (mean of curve)", "final - random (paired)", "area - random (paired)",
                            "s per run"], rows)
    best_evo = max(("pairwise", "aging"), key=lambda s: summary[s]["final"][0])
    e, r = summary[best_evo], summary["random"]
    verdict = "beats" if e["final"][0] > r["final"][0] else "does not beat"
    earlier = "later" if e["area"][0] < r["area"][0] else "earlier"
    text = (f"{best_evo} evolution {verdict} random search at {settings.individuals} individuals: best validation "
            f"accuracy {e['final'][0]:.4f} ± {e['final'][1]:.4f} vs {r['final'][0]:.4f} ± {r['final'][1]:.4f} "
            f"(mean ± sd over {len(settings.seeds)} seeds; paired difference {e['final_minus_random'][0]:+.4f} ± "
            f"{e['final_minus_random'][1]:.4f}, higher in {e['wins_final']} of {len(settings.seeds)} seeds); "
            f"it gets there {earlier} (area under the curve {e['area'][0]:.4f} vs {r['area'][0]:.4f})")
    markdown = (table + f"\n\n![best validation accuracy vs individuals trained]({png.name})\n\n"
                f"Validation accuracy on the {settings.dataset} validation split. The first "
                f"{settings.population_size} individuals of every run are the seeding phase (the initial DNA).\n")
    settings_d = {"individuals": settings.individuals, "population_size": settings.population_size,
                  "steps": settings.steps, "seeds": list(settings.seeds), "dataset": settings.dataset,
                  "search_space": settings.search_space, "aging_tournament_size": tournament_size(settings.population_size),
                  "schemes": list(SCHEMES), "workers_per_run": 1, "torch_threads": torch.get_num_threads()}
    if settings.search_space == "nasnet":
        settings_d.update(nasnet_cells=settings.nasnet_cells, nasnet_filters=settings.nasnet_filters)
    return write_report(name, mode, device, out_dir, settings=settings_d,
                        results={"summary": summary, "runs": runs, "plot": png.name}, markdown=markdown, summary=text)

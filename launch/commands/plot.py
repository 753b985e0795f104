"""`evo plot URL -o progress.png`: the progress figure of Real et al. (2017), Figure 1.

Every individual that ever lived is a dot: its validation accuracy against the wall time of
its birth. Live individuals are highlighted; a line follows the best accuracy so far. The
data behind the figure is written beside it as JSON (``--data``, default ``progress.json``
next to the PNG), so the figure can be checked and redrawn. ``--arch FILE`` also draws the
best live individual's architecture. Needs matplotlib (``pip install 'evo[plot]'``).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..errors import UserError
from ..options import add_command, check_extension
from ..views.snapshot import Snapshot, take_snapshot


def progress_data(snap: Snapshot) -> dict[str, Any]:
    """Points of every individual (``t``: seconds since the first birth) and the best-so-far steps."""
    records = sorted(snap.records.values(), key=lambda r: (r.birth, r.id))
    start = records[0].birth if records else snap.taken
    points = [{"id": r.id, "t": r.birth - start, "fitness": r.fitness, "alive": r.alive,
               "mutation": r.mutation, "parent": r.parent} for r in records]
    best_so_far = []
    best = None
    for p in points:
        if best is None or p["fitness"] > best:
            best = p["fitness"]
            best_so_far.append({"t": p["t"], "fitness": best, "id": p["id"]})
    cfg = snap.config
    return {"url": snap.url, "dataset": cfg.dataset, "selection": cfg.selection,
            "search_space": cfg.search_space, "start": start, "time": snap.taken,
            "count": len(points), "alive": sum(1 for p in points if p["alive"]),
            "points": points, "best_so_far": best_so_far, "policy": policy_curve(records)}


POLICY_WINDOW = 25   # children in the moving mean of a controller's reward curve


def policy_curve(records: list[Any]) -> dict[str, Any] | None:
    """A learned strategy's reward curve: each child a controller proposed, with the policy
    version that proposed it and its reward (fitness), by version (then birth), and the
    moving mean of the last ``POLICY_WINDOW`` rewards. None when no child came from a
    controller."""
    points = [{"id": r.id, "version": r.metrics["policy_version"], "reward": r.fitness} for r in records
              if isinstance(r.metrics.get("policy_version"), int) and not isinstance(r.metrics["policy_version"], bool)]
    if not points:
        return None
    points.sort(key=lambda p: p["version"])   # stable: births in order within a version
    rewards = [p["reward"] for p in points]
    mean = [sum(rewards[max(0, i + 1 - POLICY_WINDOW):i + 1]) / min(i + 1, POLICY_WINDOW) for i in range(len(rewards))]
    return {"window": POLICY_WINDOW, "points": points, "moving_mean": mean}


def draw_progress(data: dict[str, Any], path: str) -> None:
    """Render :func:`progress_data` to a PNG at ``path``."""
    import numpy as np

    from ..views.plotting import pyplot

    plt = pyplot()
    span = max((p["t"] for p in data["points"]), default=0.0)
    unit, scale = ("hours", 3600.0) if span > 3 * 3600 else ("minutes", 60.0)
    dead = [p for p in data["points"] if not p["alive"]]
    alive = [p for p in data["points"] if p["alive"]]
    policy = data.get("policy")
    if policy:
        fig, (ax, pax) = plt.subplots(2, 1, figsize=(7.5, 7.5), height_ratios=(3, 2))
        draw_policy(pax, policy)
    else:
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
    # float arrays, not lists: matplotlib converts a list of 20,000 floats one by one
    ax.scatter(np.array([p["t"] for p in dead], float) / scale, np.array([p["fitness"] for p in dead], float),
               s=9, c="0.6", alpha=0.7, linewidths=0, label=f"dead ({len(dead)})")
    ax.scatter(np.array([p["t"] for p in alive], float) / scale, np.array([p["fitness"] for p in alive], float),
               s=22, c="#d62728",
               edgecolors="black", linewidths=0.4, zorder=3, label=f"alive ({len(alive)})")
    steps = data["best_so_far"]
    if steps:
        xs = [s["t"] / scale for s in steps] + [span / scale]
        ys = [s["fitness"] for s in steps] + [steps[-1]["fitness"]]
        ax.step(xs, ys, where="post", color="#1f77b4", lw=1.5, label=f"best so far ({ys[-1]:.4f})")
    ax.set_xlabel(f"wall time ({unit} since the first birth)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{data['url']}: {data['count']} individuals ({data['dataset']}, {data['selection']})",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_policy(ax: Any, policy: dict[str, Any]) -> None:
    """The controller's reward curve: rewards against the version that proposed them."""
    pts = policy["points"]
    xs = [p["version"] for p in pts]
    ax.scatter(xs, [p["reward"] for p in pts], s=7, c="0.6", alpha=0.6, linewidths=0, label="child's reward")
    ax.plot(xs, policy["moving_mean"], color="#2ca02c", lw=1.5,
            label=f"mean of the last {policy['window']} ({policy['moving_mean'][-1]:.4f})")
    ax.set_xlabel("policy version that proposed the child")
    ax.set_ylabel("reward (validation accuracy)")
    ax.set_title(f"controller: {len(pts)} children", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def default_data_path(png: str) -> str:
    """``progress.png`` -> ``progress.json`` (beside the figure)."""
    root, _ = os.path.splitext(png)
    return root + ".json"


def run(args: argparse.Namespace) -> int:
    from ..views.plotting import pyplot

    plt = pyplot()  # fail in one line, before reading the store, when matplotlib is missing
    # the format comes from the extension: refuse a wrong one before reading the store
    check_extension(args.output, "-o", sorted(plt.figure().canvas.get_supported_filetypes()))
    plt.close("all")
    if args.arch:
        from ..views.drawing import ARCH_FORMATS

        check_extension(args.arch, "--arch", ARCH_FORMATS)
    data_path = args.data or default_data_path(args.output)
    paths = [os.path.abspath(p) for p in (args.output, data_path, args.arch) if p]
    if len(set(paths)) < len(paths):
        raise UserError(f"-o, --data and --arch must name different files (got {', '.join(paths)})")
    for path in paths:  # every output's folder, before anything is drawn or written
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            what = "is not a folder" if os.path.exists(folder) else "does not exist"
            raise UserError(f"{path}: its folder {folder} {what}")
    snap = take_snapshot(args.url, history_dna=False,   # the dead's DNA is never drawn here
                         alive_dna=bool(args.arch))     # the live best's only with --arch
    data = progress_data(snap)
    if not data["points"]:
        raise UserError(f"{args.url}: nothing to plot yet (no individual has been published)")
    try:
        draw_progress(data, args.output)
        with open(data_path, "w", encoding="utf-8") as f:
            # no indent: only then does json use its C encoder (20,000 points: 0.05 s, not 0.7 s)
            f.write(json.dumps(data, sort_keys=True) + "\n")
    except OSError as exc:
        raise UserError(f"{exc.filename or args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output} ({data['count']} individuals, {data['alive']} alive, best "
          f"{data['best_so_far'][-1]['fitness']:.4f}) and its data {data_path}")
    if args.arch:
        best = snap.best_alive()
        if best is None or best.dna is None:
            raise UserError(f"{args.url}: no readable live individual to draw")
        from ..views.drawing import draw_architecture

        try:
            how = draw_architecture(best.dna, args.arch, title=f"{best.id}\nvalidation accuracy {best.fitness:.4f}")
        except OSError as exc:
            raise UserError(f"{args.arch}: {exc.strerror or exc}") from None
        print(f"wrote {args.arch} (architecture of {best.id}, drawn with {how})")
    return 0


def register(sub) -> None:
    p = add_command(sub, "plot", help="progress figure: every individual's validation accuracy over time",
                    description="Draw the paper's progress figure from the store: every individual "
                                "that ever lived (dots), live ones highlighted, the best-so-far line.")
    p.add_argument("-o", "--output", default="progress.png",
                   help="figure to write; the extension picks the format (.png, .pdf, .svg, ...)")
    p.add_argument("--data", help="where to write the plotted data as JSON (default: beside the figure, .json)")
    p.add_argument("--arch", metavar="FILE", help="also draw the best live individual's architecture here "
                   "(.png, .pdf or .svg)")
    p.set_defaults(func=run)

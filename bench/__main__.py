"""``python -m bench NAME [--mode small|full] [--device D] [--out DIR] [options]``.

Run from the repository root. Each benchmark prints progress lines as it goes and writes
``DIR/NAME-MODE-DEVICEKIND.{json,md}``. A bad option or a missing piece is one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ._report import DEFAULT_OUT, BenchError, say


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per benchmark, each with the common options and its own."""
    parser = argparse.ArgumentParser(prog="python -m bench", description="evo's benchmark suite")
    sub = parser.add_subparsers(dest="name", metavar="NAME", required=True)

    def add(name: str, help_text: str, device_default: str = "auto") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--mode", choices=("small", "full", "long"), default="small",
                       help="small: CI-sized, runs on a CPU in seconds; full: the numbers the README quotes; "
                            "long: search --space nasbench201 only, 1,000 cells per run")
        p.add_argument("--device", default=device_default,
                       help=f"cpu | cuda | cuda:N | auto (CUDA when available) (default {device_default})")
        p.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (default bench/results)")
        return p

    p = add("overhead", "per-child time breakdown of a real digits run; coordination overhead", "cpu")
    p.add_argument("--children", type=int, help="children to publish (full: 15)")
    p.add_argument("--train-seconds", type=float, help="calibrate steps so a child trains this long (full: 10)")
    p.add_argument("--steps", type=int, help="training steps per child (skips calibration)")
    p.add_argument("--store-dir", help="make the population directory under this folder (e.g. an NFS mount)")

    p = add("report", "evo report's wall time and file size on a generated run (full: 20,000 individuals)", "cpu")
    p.add_argument("--individuals", type=int, help="individuals in the generated run (full: 20000)")
    p.add_argument("--reps", type=int, help="cold evo report runs, median reported (full: 3)")
    p.add_argument("--store-dir", help="make the population directory under this folder")
    p.add_argument("--population", help="time this existing population instead of generating one")

    p = add("train_speed", "img/s of bench/archs with evo's trainer vs a naive eager loop; fixed cost per child")
    p.add_argument("--archs", type=_names, help="comma-separated subset of small,mid,large")
    p.add_argument("--batch-sizes", type=_ints, help="comma-separated batch sizes (full: 50,256)")
    p.add_argument("--images", type=int, help="training images = one epoch (full: 45000)")
    p.add_argument("--reps", type=int, help="repetitions, median reported (default 3)")

    p = add("retrain_speed", "final-training img/s of AmoebaNet-A (evo's retrain path vs plain fp32 eager) "
                             "and one CIFAR-sized epoch")
    p.add_argument("--cells", type=int, help="N cells per stack (full: 6)")
    p.add_argument("--filters", type=int, help="F filters (full: 36)")
    p.add_argument("--images", type=int, help="training images = one epoch (full: 50000)")
    p.add_argument("--batch-size", type=int, help="images per step (full: 128)")

    p = add("packing", "children/hour with K workers sharing one device")
    p.add_argument("--workers", type=_ints, help="comma-separated K values (full: 1,2,4,8)")
    p.add_argument("--steps", type=int, help="training steps per child (full: 900 = one epoch at batch 50)")
    p.add_argument("--window", type=float, help="seconds of counting per K (full: 20)")

    p = add("search", "evolution (pairwise, aging) vs random search at equal budget: on digits, or on "
                      "NAS-Bench-201's tables with --space nasbench201", "cpu")
    p.add_argument("--seeds", type=int, help="seeds per scheme (full: 5; nasbench201: 30)")
    p.add_argument("--individuals", type=int, help="individuals trained per run (full: 80; nasbench201: 200 cells)")
    p.add_argument("--steps", type=int, help="training steps per individual (full: 200)")
    p.add_argument("--population-size", "-P", type=int, help="population size (full: 10)")
    p.add_argument("--search-space", "--space", dest="search_space", choices=("large_scale", "nasnet", "nasbench201"),
                   default="large_scale", help="nasbench201: the tabular benchmark (real worker processes)")
    p.add_argument("--workers", type=int, help="nasbench201: worker processes per run (full: 3)")
    p.add_argument("--tables", type=_names, help="nasbench201: comma-separated of cifar10,cifar100,imagenet16 "
                                                 "(full: cifar10,cifar100)")
    p.add_argument("--schemes", type=_names, help="nasbench201: comma-separated schemes, random among them (full: "
                                                  "pairwise,aging-rea,aging-p100,rl-ppo,reinforce,random; long: "
                                                  "aging-rea,rl-ppo,reinforce,random; also rl-ppo-1w, the "
                                                  "one-worker control)")
    p.add_argument("--first-seed", type=int, default=0, help="nasbench201: seeds from this one (split a run over "
                                                                "processes; finished runs are kept and skipped)")
    p.add_argument("--in-process", action=argparse.BooleanOptionalAction, default=None,
                   help="nasbench201: workers as threads on a memory:// store (long: on; else real processes)")
    p.add_argument("--report-only", action="store_true", help="nasbench201: report the finished runs, run nothing")

    p = add("storage", "the store's individuals/s against worker count, zero training time", "cpu")
    p.add_argument("--backend", default="local", help="store backend to measure (default local)")
    p.add_argument("--workers", type=_ints, help="comma-separated worker counts")
    p.add_argument("--seconds", type=float, help="seconds per worker count")
    p.add_argument("--compare", choices=("optuna",),
                   help="optuna: evo and Optuna's journal file storage side by side in one run "
                        "(local directory; small: W=1,2; full: W=1,8,32,128,250; needs the bench extra)")

    p = add("api", "evo.open(url).individuals() on a big rolled-up synthetic run (full: 20,000 individuals)",
            "cpu")
    p.add_argument("--store-dir", help="build (or reuse) the synthetic run under this folder (default: a temp "
                                       "folder, built anew)")

    p = add("inspect", "wall time and peak RSS of status/plot/lineage/audit on a big synthetic run, local and "
                       "on the GCS emulator (cold and warm read cache)", "cpu")
    p.add_argument("--store-dir", help="build (or reuse) the synthetic run under this folder (default: a temp "
                                       "folder, built anew)")
    p.add_argument("--no-gcs", action="store_true", help="measure the local directory only")

    p = add("policy", "bytes and objects a learned strategy writes to policy/ per child: a version per child "
                      "(batch size 1) vs minibatches of B", "cpu")
    p.add_argument("--children", type=int, help="controller children per run (full: 400)")
    p.add_argument("--workers", type=int, help="worker threads per run (full: 4)")
    p.add_argument("--batch-size", type=int, help="B of the second run (default 20, rl's)")

    p = sub.add_parser("make_archs", help="regenerate bench/archs/{small,mid,large}.json")
    p.add_argument("--keep-small", action="store_true", help="keep small.json; only regrow mid and large")
    return parser


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``; BenchError for a device
    string torch does not know or CUDA asked for where there is none."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise BenchError(f"unknown device {device!r} (cpu, cuda, cuda:N, auto)") from None
    if kind not in ("cpu", "cuda"):
        raise BenchError(f"unsupported device {device!r} (cpu, cuda, cuda:N, auto)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"device {device} requested but CUDA is not available")
    return device


# (worker counts, seconds per count, population size or None for storage_throughput's own default)
STORAGE_DEFAULTS = {"small": ((1, 2), 3.0, 20), "full": ((1, 4, 16, 64), 20.0, None)}


# --compare optuna: (worker counts, seconds per point, population size, warm-up seconds, audit evo's stores)
COMPARE_DEFAULTS = {"small": ((1, 2), 1.5, 20, 0.5, False), "full": ((1, 8, 32, 128, 250), 30.0, 1000, 3.0, True)}


def run_compare(args: argparse.Namespace) -> dict:
    """``bench storage --compare optuna``: ``bench/storage_compare.py``'s ``run``; the full
    mode writes ``storage-compare-optuna.{json,md,png}``, the small one ``...-small.*``."""
    if args.backend != "local":
        raise BenchError("--compare optuna runs on a local directory only (Optuna's journal is a local file)")
    from . import storage_compare

    try:
        storage_compare.optuna_version()
    except ImportError as exc:
        raise BenchError(str(exc)) from None
    workers, seconds, population, warmup, audit = COMPARE_DEFAULTS[args.mode]
    name = "storage-compare-optuna" + ("" if args.mode == "full" else f"-{args.mode}")
    try:
        report = storage_compare.run(list(args.workers or workers), args.seconds or seconds, args.out, name=name,
                                     population=population, warmup=warmup, audit=audit, progress=say)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    rows = ", ".join(f"W={p['workers']} {p['evo'].get('births_per_s', '-')} vs {p['optuna'].get('trials_per_s', '-')}"
                     for p in report["points"])
    return dict(report, summary=f"evo births/s vs Optuna journal trials/s: {rows} (wrote {args.out}/{name}.md)")


def run_storage(args: argparse.Namespace) -> dict:
    """Delegate to ``bench/storage_throughput.py``'s ``run(backend, workers, seconds, out_dir)``,
    or with ``--compare`` to :func:`run_compare`."""
    if args.compare:
        return run_compare(args)
    try:
        module = importlib.import_module("bench.storage_throughput")
    except ModuleNotFoundError as exc:
        if exc.name == "bench.storage_throughput":
            raise BenchError("the storage benchmark lives in bench/storage_throughput.py, which is not there yet") from None
        raise
    workers, seconds, population = STORAGE_DEFAULTS[args.mode]
    extra = {"population": population} if population else {}
    try:
        report = module.run(args.backend, list(args.workers or workers), args.seconds or seconds, args.out,
                            progress=say, **extra)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    scaling = report.get("scaling") or {}
    if "summary" not in report and "peak_births_per_s" in scaling:
        report = dict(report, summary=f"{args.backend}: peak {scaling['peak_births_per_s']:.1f} individuals/s "
                                      f"at {scaling['peak_at_workers']} workers (zero training time)")
    return report


def dispatch(args: argparse.Namespace) -> dict | None:
    """Run the benchmark ``args`` names; returns its JSON document."""
    if args.name == "make_archs":
        from . import make_archs
        make_archs.main(args)
        return None
    if args.name == "storage":
        return run_storage(args)
    if args.name == "report":
        from . import report_speed
        return report_speed.run(args.mode, args.out, individuals=args.individuals, store_dir=args.store_dir,
                                reps=args.reps, population=args.population)
    if args.name == "api":
        from . import api as api_bench
        return api_bench.run(args.mode, args.out, store_dir=args.store_dir, progress=say)
    if args.name == "inspect":
        from . import inspect as inspect_bench
        return inspect_bench.run(args.mode, args.out, store_dir=args.store_dir, gcs=not args.no_gcs, progress=say)
    if args.name == "policy":
        from . import policy_writes
        return policy_writes.run(args.mode, args.out, children=args.children, workers=args.workers,
                                 batch=args.batch_size, progress=say)
    device = resolve_device(args.device)
    if args.name == "overhead":
        from . import overhead
        return overhead.run(args.mode, device, args.out, children=args.children, train_seconds=args.train_seconds,
                            steps=args.steps, store_dir=args.store_dir)
    if args.name == "train_speed":
        from . import train_speed
        return train_speed.run(args.mode, device, args.out, archs=args.archs, batch_sizes=args.batch_sizes,
                               images=args.images, reps=args.reps)
    if args.name == "retrain_speed":
        from . import retrain_speed
        return retrain_speed.run(args.mode, device, args.out, cells=args.cells, filters=args.filters,
                                 images=args.images, batch_size=args.batch_size)
    if args.name == "packing":
        from . import packing
        return packing.run(args.mode, device, args.out, ks=args.workers, steps=args.steps, window=args.window)
    if args.name == "search":
        if args.search_space == "nasbench201":
            from . import search_nb201
            if args.steps is not None or args.population_size is not None:
                raise BenchError("--steps and -P do not apply to --space nasbench201 (tabular; each scheme has its P)")
            return search_nb201.run(args.mode, args.out, seeds=args.seeds, cells=args.individuals,
                                    workers=args.workers, tables=args.tables, schemes=args.schemes,
                                    first_seed=args.first_seed, in_process=args.in_process,
                                    report_only=args.report_only)
        if args.workers is not None or args.tables is not None or args.schemes is not None or args.first_seed \
                or args.in_process is not None or args.report_only:
            raise BenchError("--workers, --tables, --schemes, --first-seed, --in-process and --report-only apply "
                             "only to --space nasbench201")
        from . import search
        return search.run(args.mode, device, args.out, seeds=args.seeds, individuals=args.individuals,
                          steps=args.steps, population_size=args.population_size, search_space=args.search_space)
    raise BenchError(f"unknown benchmark {args.name!r}")


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print the summary line; one-line errors with exit code 2."""
    from launch.errors import one_line_errors, run_reporting

    args = build_parser().parse_args(argv)
    docs: list[dict | None] = []
    code = run_reporting(f"bench {args.name}", lambda: docs.append(dispatch(args)),
                         (BenchError, *one_line_errors()))
    if code == 0 and docs[0] is not None and docs[0].get("summary"):
        print(f"bench {args.name}: {docs[0]['summary']}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""`evo report URL -o report.html [--top K] [--watch SECONDS]`: the run as one HTML page.

One self-contained file (plotly.js, the data and the drawings embedded: no server, no CDN;
it opens offline): the progress figure (zoom, hover for id/mutation/fitness, click a point
for its lineage), the best individual's lineage as a tree, the top individuals and drawings
of the top K architectures, which mutations produced improvements, worker health over
time, and where present the retrain results and a learned strategy's reward curve. The
population is read once per report through the store's reading API; nothing is written to
it. The file is replaced atomically (a temporary file beside it, then a rename), so a
browser never loads half a report; ``--watch N`` rewrites it every N seconds until Ctrl-C.
Needs plotly (``pip install 'evo[report]'``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

from ..errors import UserError
from ..options import add_command, positive_int, positive_seconds

DEFAULT_TOP = 5


def check_output(path: str) -> None:
    """UserError (one line, naming ``path``) unless ``path`` can be written: its folder
    exists and takes a new file, and ``path`` is not a folder. Leaves nothing behind."""
    if os.path.isdir(path):
        raise UserError(f"{path}: is a folder; -o names the HTML file to write")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise UserError(f"{path}: its folder {folder} {what}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".evo-report-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UserError(f"{path}: cannot write in {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: a temporary file in the same folder, then a
    rename; the temporary file is removed if anything fails (an interrupt included)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".evo-report-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_report(url: str, top: int, *, spinner: bool = True) -> dict[str, Any]:
    """The report's data (:func:`launch.views.report_data.report_data`) of the population at
    ``url``: one census without any DNA (validating 20,000 DNAs would be for nothing), then
    the DNA of the ``top`` individuals to draw."""
    from ..views.report_data import MIN_TABLE_ROWS, report_data
    from ..views.snapshot import open_population, take_snapshot, with_checked_dna

    population = open_population(url)
    snap = take_snapshot(url, spinner=spinner, history_dna=False, alive_dna=False, population=population)
    # the rows of the top table, alive or dead, are shown as the run's best: their DNA is
    # checked (a row whose DNA does not check out is a broken entry, not a row)
    return report_data(with_checked_dna(snap, population[0], max(top, MIN_TABLE_ROWS)), top)


def build_report(url: str, top: int, *, spinner: bool = True) -> tuple[str, dict]:
    """(the HTML page of the population at ``url``, its data): one read of the store."""
    from ..views.report_html import architecture_figures, render

    data = read_report(url, top, spinner=spinner)
    return render(data, architecture_figures(data["top"], top)), data


def write_report(args: argparse.Namespace, *, spinner: bool = True) -> str:
    """Read the population, write the report to ``args.output``; the line to print."""
    t0 = time.perf_counter()
    page, data = build_report(args.url, args.top, spinner=spinner)
    try:
        write_atomically(args.output, page)
    except OSError as exc:
        raise UserError(f"{args.output}: {exc.strerror or exc}") from None
    s, best = data["summary"], data["best"]
    what = f"best {best['fitness']:.4f} ({best['id']})" if best else "no individual yet"
    return (f"wrote {args.output} ({len(page.encode()) / 1e6:.1f} MB; {s['born']} individuals, "
            f"{s['alive']} alive, {what}) in {time.perf_counter() - t0:.1f}s")


def run(args: argparse.Namespace) -> int:
    from ..views.report_html import plotly_modules
    from ..views.snapshot import open_population

    check_output(args.output)
    open_population(args.url)  # not a population: one line, before anything is imported or drawn
    plotly_modules()  # plotly missing: one line, before the whole store is read
    if not args.watch:
        print(write_report(args))
        return 0
    while True:  # until Ctrl-C: the runner prints "evo report: interrupted" and exits 130
        print(f"{time.strftime('%H:%M:%S')} {write_report(args, spinner=False)}", flush=True)
        time.sleep(args.watch)


def register(sub) -> None:
    p = add_command(sub, "report", help="the run as one self-contained HTML page (figures, lineage, workers)",
                    description="Write one HTML file that opens offline: progress figure (zoom, hover, click "
                                "for lineage), the best lineage, top individuals and their architectures, "
                                "mutations that improved, worker health, retrain results, strategy state.")
    p.add_argument("-o", "--output", default="report.html", help="the HTML file to write (replaced atomically)")
    p.add_argument("--top", type=positive_int, default=DEFAULT_TOP, metavar="K",
                   help="draw the architectures of the K best individuals")
    p.add_argument("--watch", type=positive_seconds, default=None, metavar="SECONDS",
                   help="rewrite the report every SECONDS seconds until Ctrl-C")
    p.set_defaults(func=run)

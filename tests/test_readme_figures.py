"""The figures README.md and docs/ quote from benchmark results agree with bench/results.

A paragraph or table that links a results file (``bench/results/NAME.md|json|png``) or names a
full benchmark run (``python -m bench NAME ... --mode full``) quotes that run: every **bold**
number in it, and every cell of its tables that holds only numbers, must be a number of the
results file (``NAME.md`` or ``NAME.json``) rounded to the digits quoted. A README that still
quotes an older run than the committed results fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*\.?\d*")
NUMERIC_CELL = re.compile(r"[\d\s.,/()*%x×±+-]*(?:s|ms|MiB|MB|GB)?[\d\s.,/()*%x×±+-]*")
BENCH_RUN = re.compile(r"python -m bench (\w+)(?: --space (\w+))?(?: --compare (\w+))?[^`]*--mode full")


def numbers_in(text: str) -> list[str]:
    """Every number written in ``text``, as written (thousands separators dropped)."""
    return [m.group(0).replace(",", "").rstrip(".") for m in NUMBER.finditer(text)]


def agrees(quoted: str, pool: list[float]) -> bool:
    """True when ``quoted`` is some number of ``pool`` rounded to the digits ``quoted`` has."""
    digits = len(quoted.split(".")[1]) if "." in quoted else 0
    value = float(quoted)
    return any(abs(v - value) <= 10 ** -digits / 2 + 1e-9 for v in pool)


def results_named(line: str, results: Path = RESULTS) -> set[str]:
    """The results files (stems) a line links, or the full run of the benchmark it names."""
    stems = set(re.findall(r"bench/results/([\w.-]+)\.(?:md|json|png)", line))
    run = BENCH_RUN.search(line)
    if run and not stems:
        name, space, compare = run.groups()
        name = f"{name}-compare-{compare}" if compare else name + (f"-{space}" if space else "")
        stems = {p.stem for p in results.glob(f"{name}-full-*.md")} | {p.stem for p in results.glob(f"{name}.md")}
    return stems


def stale_figures(text: str, results: Path = RESULTS) -> list[str]:
    """``line N: 'figure' not in [files]`` for each quoted figure its results do not hold."""
    blocks: list[list[tuple[int, str]]] = [[]]
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            blocks[-1].append((number, line))
        elif blocks[-1]:
            blocks.append([])
    problems = []
    for block in blocks:
        block_stems = set().union(*(results_named(line, results) for _, line in block))
        if not block_stems:
            continue
        for number, line in block:
            stems = results_named(line, results) or block_stems
            pool = [float(n) for stem in stems for ext in ("md", "json")
                    if (results / f"{stem}.{ext}").exists()
                    for n in numbers_in((results / f"{stem}.{ext}").read_text())]
            quoted = re.findall(r"\*\*([^*]+)\*\*", line)
            if line.startswith("|"):
                quoted += [cell for cell in line.split("|")[2:]
                           if re.search(r"\d", cell) and NUMERIC_CELL.fullmatch(cell)]
            problems += [f"line {number}: {figure!r} not in {sorted(stems)}"
                         for part in quoted for figure in numbers_in(part) if not agrees(figure, pool)]
    return problems


def test_readme_and_docs_quote_the_committed_results():
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        assert stale_figures(doc.read_text()) == [], doc.name


def test_a_figure_from_an_older_run_is_caught(tmp_path):
    # the check can fail: a quote that the committed results do not hold
    (tmp_path / "speed-full-cpu.md").write_text("| W | births/s |\n|---|---|\n| 8 | 169.35 |\n")
    good = "evo makes **169.4** births/s at W=8 ([table](bench/results/speed-full-cpu.md))\n"
    stale = "evo makes **82.0** births/s at W=8 ([table](bench/results/speed-full-cpu.md))\n"
    table = "([table](bench/results/speed-full-cpu.md)):\n| W | births/s |\n|---|---|\n| 8 | 82.0 |\n"
    assert stale_figures(good, tmp_path) == []
    assert stale_figures(stale, tmp_path) == ["line 1: '82.0' not in ['speed-full-cpu']"]
    assert stale_figures(table, tmp_path) == ["line 4: '82.0' not in ['speed-full-cpu']"]

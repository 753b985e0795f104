"""README.md as a newcomer reads it: a few screens, every moved section linked, and its
"From Python" example run verbatim after the quickstart's run (at a tiny budget)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_cli import evo as evo_cli
from test_readme_figures import results_named, stale_figures

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def python_example(text: str) -> str:
    """The ```python block after ``<!-- from-python -->``."""
    found = re.search(r"<!-- from-python -->\s*```python\n(.*?)\n```", text, re.S)
    assert found, "README.md has no python block after <!-- from-python -->"
    return found.group(1)


def test_readme_is_a_few_screens_with_both_commands_and_every_moved_section_linked():
    assert len(README.splitlines()) <= 220
    for marker in ("<!-- main-command -->", "<!-- test-command -->", "<!-- from-python -->", "## From Python",
                   "## Commands", "## Evolve on your own images", "## Running on clusters"):
        assert marker in README, marker
    links = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", README))
    assert {"docs/performance.md", "docs/development.md", "docs/datasets.md", "docs/digits-run.md",
            "docs/how-it-works.md"} <= links
    assert all((REPO / link).is_file() for link in links), links
    moved = (REPO / "docs" / "performance.md").read_text()
    for heading in ("### NAS-Bench-201: evolution, RL and random search", "## Scale and chaos",
                    "## Reading a run at the papers' scale"):
        assert heading in moved, heading


@pytest.mark.slow  # reads every results file the moved text names (7-19 s on the shared machine)
def test_the_moved_figures_are_still_checked_against_the_results():
    moved = (REPO / "docs" / "performance.md").read_text()
    named = set().union(*(results_named(line) for line in moved.splitlines()))
    assert {"inspect-full-cpu", "chaos-local-250w", "storage-compare-optuna", "search-nasbench201-full-cpu",
            "overhead-full-cpu"} <= named
    assert stale_figures(moved) == []
    # control: the same text with one figure changed fails
    assert stale_figures(moved.replace("**1.94 s**", "**719.4 s**", 1)) != []


def test_the_python_example_is_the_api():
    code = python_example(README)
    compile(code, "README.md", "exec")
    for call in ("evo.open(", ".individuals()", ".best()", ".export(", ".evaluate()", ".module()", "savefig("):
        assert call in code, call


@pytest.mark.slow  # a real worker, then the example (torch, pandas, matplotlib)
def test_the_readme_python_example_runs_verbatim_after_the_quickstart(tmp_path):
    # the quickstart's `evo launch runs/digits ...`, at a budget of seconds
    done = evo_cli("launch", str(tmp_path / "runs" / "digits"), "-n", "1", "--max-individuals", "6",
                   "-P", "4", "--steps", "5", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    run = subprocess.run([sys.executable, "-c", python_example(README)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin",
                                                      "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert re.search(r"^\d+ born$", run.stdout, re.M), run.stdout
    assert (tmp_path / "fitness.png").stat().st_size > 0
    assert (tmp_path / "best-py" / "load.py").is_file() and (tmp_path / "best-py" / "test.npz").is_file()

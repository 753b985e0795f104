"""`evo report URL -o report.html` as a user runs it (a real process), on runs written through the
store's publish/kill API by bench/report_speed.py's generator; what the page says is checked
against the population's files read directly. The page in a real browser: test_report_browser.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from bench.report_speed import make_population
from helpers_hostile import CAN_DROP_BYPASS, NO_BYPASS_REASON, WITHOUT_BYPASS
from helpers_store import REPO, subprocess_env
from launch.cli import main

pytest.importorskip("plotly", reason="evo report needs plotly (pip install -e '.[report]')")

POLL = 0.02


def evo(*args: str, prefix: tuple[str, ...] = (), timeout: float = 120) -> subprocess.CompletedProcess:
    """``evo ARGS`` in a fresh process, as a user runs it."""
    return subprocess.run([*prefix, sys.executable, "-m", "launch", *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def run(capsys, *args: str) -> tuple[int, str, str]:
    """``evo ARGS`` in this process (cheaper than a process each): (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two finished runs: ``plain`` (evolution) and ``learned`` (children carry a policy version)."""
    root = tmp_path_factory.mktemp("report")
    made = {}
    for name, policy in (("plain", False), ("learned", True)):
        made[name] = root / name
        make_population(str(made[name]), 150, 20, 3, seed=1, policy=policy)
    return made


def on_disk(path: Path) -> dict[str, dict]:
    """Every individual (commit or history record) by id, straight from the files."""
    out = {}
    for folder in ("alive", "history"):
        for name in os.listdir(path / folder):
            rec = json.loads((path / folder / name).read_text())
            out[rec["id"]] = dict(rec, alive=folder == "alive")
    for rec in out.values():  # a dead one listed still (a zombie) is dead
        if "death" in rec:
            rec["alive"] = False
    return out


def table(page: str, table_id: str) -> list[list[str]]:
    """The cells of the table ``table_id`` (text, tags stripped), header row excluded."""
    body = re.search(f'<table id="{table_id}">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)[1:]
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows]


def test_report_is_one_self_contained_file_that_agrees_with_the_store(runs, tmp_path):
    out = tmp_path / "report.html"
    r = evo("report", str(runs["plain"]), "-o", str(out), "--top", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and r.stdout.startswith(f"wrote {out} ") and "150 individuals" in r.stdout
    page = out.read_text()
    # self-contained: plotly.js inline, no file fetched from anywhere
    assert "plotly.js" in page and len(page) > 3_000_000
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|@import|src=\"https?:", page)
    assert not list(tmp_path.glob(".evo-report-*"))

    recs = on_disk(runs["plain"])
    best = max(recs.values(), key=lambda x: (x["fitness"], -x["birth"]))
    top = table(page, "top-table")
    ranked = sorted(recs.values(), key=lambda x: (-x["fitness"], x["birth"], x["id"]))
    assert [row[1] for row in top] == [x["id"] for x in ranked[:len(top)]] and len(top) == 20
    assert top[0][2] == f"{best['fitness']:.4f}" and top[0][3] == f"{best['metrics']['params']:,}"
    assert top[0][5] == ("alive" if best["alive"] else "dead") and top[0][6] == best["mutation"]
    assert top[0][7] == best["worker"]
    assert page.count('<div id="arch-figure-') == 3

    # the best individual's lineage, generation by generation, back to a seed
    chain = [best]
    while chain[-1]["parent"]:
        chain.append(recs[chain[-1]["parent"]])
    tree = re.search(r'<ol class="tree" id="best-lineage" start="0">(.*?)</ol>', page, re.S).group(1)
    assert re.findall(r'<li data-id="([^"]+)"', tree) == [x["id"] for x in reversed(chain)]
    assert chain[-1]["mutation"] == "initial"

    # mutations that improved: child fitter than its parent
    children, improved = Counter(), Counter()
    for x in recs.values():
        if x["parent"]:
            children[x["mutation"]] += 1
            improved[x["mutation"]] += x["fitness"] > recs[x["parent"]]["fitness"]
    rows = {row[0]: row for row in table(page, "improvements-table")}
    assert set(rows) == set(children)
    for m, row in rows.items():
        assert (int(row[1]), int(row[2])) == (children[m], improved[m])
        assert row[3] == f"{100 * improved[m] / children[m]:.1f}%"

    # worker health: every heartbeat, the generator's last worker lost, births per worker
    workers = {row[0]: row for row in table(page, "workers-table")}
    births = Counter(x["worker"] for x in recs.values())
    assert set(workers) == set(births) and len(workers) == 3
    assert [w for w, row in workers.items() if row[2] == "lost"] == ["gen-002"]
    assert all(int(row[4]) == births[w] for w, row in workers.items())

    # the click-to-lineage data: every individual, parents as indices
    points = json.loads(re.search(r'<script type="application/json" id="evo-points">(.*?)</script>', page,
                                  re.S).group(1))
    assert sorted(points["id"]) == sorted(recs)
    for i, ident in enumerate(points["id"]):
        parent = recs[ident]["parent"]
        assert (points["id"][points["parent"][i]] if points["parent"][i] >= 0 else None) == parent
    assert 'id="strategy"' not in page and 'id="retrains"' not in page


def test_learned_strategy_state_is_drawn_when_children_carry_a_policy_version(runs, tmp_path, capsys):
    out = tmp_path / "learned.html"
    code, _, err = run(capsys, "report", str(runs["learned"]), "-o", str(out), "--top", "1")
    assert code == 0, err
    page = out.read_text()
    assert 'id="strategy"' in page and "strategy-figure" in page
    per_version = defaultdict(list)
    for x in on_disk(runs["learned"]).values():
        if "policy_version" in x["metrics"]:
            per_version[x["metrics"]["policy_version"]].append(x["fitness"])
    rows = table(page, "strategy-table")
    assert [int(row[0]) for row in rows] == sorted(per_version)
    for row in rows:
        fs = per_version[int(row[0])]
        assert int(row[1]) == len(fs) and row[2] == f"{sum(fs) / len(fs):.4f}" and row[3] == f"{max(fs):.4f}"


def test_store_strings_are_escaped_and_odd_metrics_ignored(tmp_path, capsys):
    import storage
    from bench.report_speed import placeholder_weights
    from evo.config import RunConfig

    url = tmp_path / "pop"
    store = storage.open_store(str(url))
    store.runinfo.init_config(RunConfig(dataset="synthetic", population_size=2).to_json())
    evil = "<script>alert(1)</script>"
    d = __import__("dna").initial(0.1).to_dict()
    a = store.population.publish(d, placeholder_weights(), parent=None, mutation="initial", fitness=0.5,
                                 worker=evil[:30])
    store.population.publish(d, placeholder_weights(), parent=a.id, mutation=evil, fitness=0.6, worker="w",
                  metrics={"params": 10, "policy": evil, "policy_version": 0})
    store.population.publish(d, placeholder_weights(), parent=a.id, mutation="identity", fitness=0.4, worker="w",
                  metrics={"params": True, "policy_version": 2**40})   # neither is taken as a number
    out = tmp_path / "r.html"
    code, _, err = run(capsys, "report", str(url), "-o", str(out), "--top", "1")
    assert code == 0, err
    page = out.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
    assert table(page, "strategy-table") == [["0", "1", "0.6000", "0.6000"]]
    assert [row[3] for row in table(page, "top-table")] == ["10", "-", "-"]


def test_wrong_input_is_one_line_and_exit_2(runs, tmp_path, capsys):
    url = str(runs["plain"])
    cases = [
        (("report", str(tmp_path / "nothing"), "-o", str(tmp_path / "a.html")), "nothing"),
        (("report", "ftp://host/x", "-o", str(tmp_path / "a.html")), "ftp://host/x"),
        (("report", url, "-o", str(tmp_path / "no" / "a.html")), "does not exist"),
        (("report", url, "-o", str(tmp_path)), "is a folder"),
        (("report", url, "--top", "0"), "--top"),
        (("report", url, "--top", "-3"), "--top"),
        (("report", url, "--watch", "0"), "--watch"),
    ]
    for args, words in cases:
        code, out, err = run(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and err.startswith("evo report: error: "), (args, err)
        assert words in err and out == "", (args, err)
    assert not (tmp_path / "a.html").exists()


@pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
def test_unwritable_output_folder_is_refused_before_reading(runs, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    r = evo("report", str(runs["plain"]), "-o", str(folder / "r.html"), prefix=tuple(WITHOUT_BYPASS))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"{folder}/r.html: cannot write in {folder}" in r.stderr and "ermission denied" in r.stderr
    assert os.listdir(folder) == []


@pytest.mark.slow  # a real `evo report --watch` process, interrupted
def test_watch_rewrites_atomically_until_ctrl_c(runs, tmp_path):
    out = tmp_path / "w.html"
    proc = subprocess.Popen([sys.executable, "-m", "launch", "report", str(runs["plain"]), "-o", str(out),
                             "--watch", "0.1", "--top", "1"], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a suite started in the background (nohup, `&`) ignores SIGINT, and
                            # the child would inherit that: give it the default, as a terminal would
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    inodes = set()
    deadline = time.monotonic() + 120
    try:
        while len(inodes) < 2 and time.monotonic() < deadline and proc.poll() is None:
            try:
                inodes.add(out.stat().st_ino)   # a rename puts a new file in place each time
            except FileNotFoundError:
                pass
            time.sleep(POLL)
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert len(inodes) >= 2, stderr
    assert proc.returncode == 130 and stderr == "evo report: interrupted\n", stderr
    assert stdout.count(f"wrote {out} ") >= len(inodes) - 1   # the last rename's line may not be out yet
    assert out.read_text().endswith("</html>")
    assert [p.name for p in tmp_path.iterdir()] == ["w.html"]


def test_empty_run_quarantined_parent_and_retrain_results(tmp_path, capsys):
    """A run with no individual yet gets a page that says so; a child whose parent's record is
    gone still shows (its chain stops there); a finished retrain appears with its test accuracy."""
    import dna
    import storage
    from bench.report_speed import placeholder_weights
    from evo.config import RunConfig
    from evo.train.final_settings import FinalSettings
    from evo.train.retrain_request import make_request

    url = tmp_path / "pop"
    store = storage.open_store(str(url))
    store.runinfo.init_config(RunConfig(dataset="synthetic", population_size=2).to_json())
    out = tmp_path / "r.html"
    code, stdout, err = run(capsys, "report", str(url), "-o", str(out))
    assert code == 0 and "0 individuals" in stdout and "no individual yet" in stdout, err
    assert "No individual has been published yet." in out.read_text()

    d = dna.initial(0.1).to_dict()
    gone = store.population.publish(d, placeholder_weights(), parent=None, mutation="initial", fitness=0.2, worker="w")
    child = store.population.publish(d, placeholder_weights(), parent=gone.id, mutation="identity", fitness=0.3,
                                     worker="w")
    store.backend.delete(gone.key)  # its record is gone (as if quarantined and cleaned away)
    request = make_request(label=child.id, source={"kind": "individual", "id": child.id, "fitness": 0.3,
                                                   "run": str(url)}, dna=d, dna_hash=storage.dna_hash(d),
                           dataset="synthetic", settings=FinalSettings(), size=None)
    assert store.retrains.put_retrain_request(request["rid"], request)
    claim = store.retrains.claim_retrain(request["rid"], {"host": "h"}, 60)
    assert store.retrains.finish_retrain(claim, {"dna.json": b"{}"}, {"test_accuracy": 0.8125, "parameters": 1234})
    code, _, err = run(capsys, "report", str(url), "-o", str(out), "--top", "1")
    assert code == 0, err
    page = out.read_text()
    assert table(page, "top-table") == [["1", child.id, "0.3000", "-", table(page, "top-table")[0][4], "alive",
                                         "identity", "w"]]
    assert 'has no record (quarantined?)' in page and gone.id in page
    assert table(page, "improvements-table") == [["identity", "0", "0", "-", "-", "-", "1"]]
    retrain = table(page, "retrains-table")
    assert len(retrain) == 1 and retrain[0][:5] == [request["rid"], "done", child.id, "0.3000", "0.8125"]
    assert retrain[0][6] == "1,234"


@pytest.mark.slow  # a small benchmark report (~5 s on a loaded 2-core machine)
def test_bench_report_small_writes_its_numbers(tmp_path):
    from bench import report_speed

    doc = report_speed.run("small", str(tmp_path), individuals=80, reps=1)
    saved = json.loads((tmp_path / "report-small-cpu.json").read_text())
    assert saved["results"]["population"] == {**doc["results"]["population"]}
    pop = saved["results"]["population"]
    assert (pop["individuals"], pop["alive"], pop["dead"]) == (80, 50, 30)
    run1 = saved["results"]["runs"][0]
    assert run1["seconds"] > 0 and 3 < run1["file_mb"] < 10 and "80 individuals" in run1["line"]
    assert "evo report on 80 individuals" in (tmp_path / "report-small-cpu.md").read_text()
    assert set(saved["results"]["phases"]) == {"import", "read_store_and_sections", "page", "write"}
    assert all(v > 0 for v in saved["results"]["phases"].values())

"""`evo status`, `evo plot`, `evo lineage`, `evo best` as a user runs them, on a real run.

The module's population is made once by a short real run: `evo init` (digits, P=6, 30
steps per child), then two `evo worker` processes of 12 individuals each, at the same time.
Expected numbers are computed here from the population directory's files directly.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import storage

EVO = str(Path(sys.executable).with_name("evo")) if Path(sys.executable).with_name("evo").exists() \
    else shutil.which("evo") or "evo"  # the installed console script
PER_WORKER = 12
WORKERS = 2


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    e.pop("PYTHONPATH", None)
    return e


def evo(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EVO, *args], capture_output=True, text=True, timeout=timeout, env=kw.pop("env", env()),
                          **kw)


def ok(*args: str, **kw) -> subprocess.CompletedProcess:
    r = evo(*args, **kw)
    assert r.returncode == 0, f"evo {' '.join(args)} failed: {r.stderr[-2000:]}"
    return r


def start_workers(url: str, n: int, per_worker: int) -> None:
    procs = [subprocess.Popen([EVO, "worker", url, "--max-individuals", str(per_worker), "--index", str(i),
                               "--quiet"], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> Path:
    """A population made by a short real digits run (2 workers x 12 individuals)."""
    path = tmp_path_factory.mktemp("inspect") / "pop"
    ok("init", str(path), "--dataset", "digits", "-P", "6", "--steps", "30")
    start_workers(str(path), WORKERS, PER_WORKER)
    return path


def read_dir(path: Path, folder: str) -> dict[str, dict]:
    """Every JSON file under ``folder``, by file name."""
    d = path / folder
    return {n: json.loads((d / n).read_text()) for n in sorted(os.listdir(d))} if d.exists() else {}


def on_disk(path: Path) -> dict:
    """The population's facts, straight from its files."""
    alive = read_dir(path, "alive")
    history = read_dir(path, "history")
    alive_ids = {c["id"] for c in alive.values()} - {h["id"] for h in history.values()}
    live = [c for c in alive.values() if c["id"] in alive_ids]
    return {"alive": live, "history": list(history.values()),
            "workers": [b for b in read_dir(path, "workers").values()]}


# ----- status -----

@pytest.mark.slow  # the population fixture runs real worker processes
def test_status_json_agrees_with_the_store(population):
    facts = on_disk(population)
    report = json.loads(ok("status", str(population), "--json").stdout)
    live, dead = facts["alive"], facts["history"]
    assert report["alive"] == len(live)
    assert report["killed"] == len(dead)
    assert report["born"] == len(live) + len(dead) == WORKERS * PER_WORKER
    best = max(live, key=lambda c: c["fitness"])
    assert report["best"]["id"] == best["id"] and report["best"]["fitness"] == best["fitness"]
    assert report["median"] == statistics.median(c["fitness"] for c in live)
    assert report["worst"]["fitness"] == min(c["fitness"] for c in live)
    assert report["mutations"] == dict(Counter(c["mutation"] for c in live + dead))
    assert report["mutations"].get("initial", 0) >= 6
    assert report["quarantined"] == 0
    births = sorted(c["birth"] for c in live + dead)
    assert report["first_birth"] == births[0] and report["last_birth"] == births[-1]
    assert report["individuals_per_hour"] == pytest.approx(len(births) / ((births[-1] - births[0]) / 3600))
    assert report["individuals_last_hour"] == len(births)
    beats = {b["worker"]: b["info"] for b in facts["workers"]}
    assert {w["worker"] for w in report["workers"]} == set(beats) and len(beats) == WORKERS
    for w in report["workers"]:
        assert w["individuals"] == beats[w["worker"]]["individuals"] == PER_WORKER
        assert w["pid"] == beats[w["worker"]]["pid"] and w["host"] == beats[w["worker"]]["host"]
        assert w["status"] == "stopped"
    assert report["race_losses"] == sum(b["race_losses"] for b in beats.values())
    assert sum(w["kills"] for w in report["workers"]) == len(dead)


@pytest.mark.slow  # the population fixture runs real worker processes
def test_status_screen_names_the_numbers(population):
    report = json.loads(ok("status", str(population), "--json").stdout)
    text = ok("status", str(population)).stdout
    assert f"alive {report['alive']} | born {report['born']} | killed {report['killed']}" in text
    assert report["best"]["id"] in text and f"{report['best']['fitness']:.4f}" in text
    for w in report["workers"]:
        assert w["worker"] in text
    for name, n in report["mutations"].items():
        assert f"{name} {n}" in text


@pytest.mark.slow  # the population fixture runs real worker processes
def test_silent_worker_is_shown_as_lost_and_quarantine_is_counted(tmp_path, population):
    url = str(tmp_path / "copy")
    shutil.copytree(population, url)
    backend = storage.open_backend(url)
    old = storage.PopulationStore(backend, clock=lambda: time.time() - 5000)
    old.runinfo.heartbeat("ghost-1", {"host": "gone", "pid": 4242, "state": "training", "individuals": 3})
    store = storage.open_store(url)
    victim = min(store.population.list_alive(), key=lambda i: i.fitness)
    assert store.population.quarantine(victim, "test: damaged on purpose")
    report = json.loads(ok("status", url, "--json", "--lost-after", "600").stdout)
    ghost = next(w for w in report["workers"] if w["worker"] == "ghost-1")
    assert ghost["status"] == "lost" and ghost["silent_s"] > 4000 and ghost["pid"] == 4242
    assert report["workers_lost"] == 1
    assert report["quarantined"] == 1
    assert report["alive"] == len(on_disk(population)["alive"]) - 1
    assert report["born"] == WORKERS * PER_WORKER  # a quarantined individual was still born
    assert "LOST" in ok("status", url).stdout


@pytest.mark.slow  # the population fixture runs real worker processes
def test_watch_refreshes_until_count(population):
    r = ok("status", str(population), "--watch", "--interval", "0.2", "--count", "3", "--json")
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert len(lines) == 3 and all(x["born"] == WORKERS * PER_WORKER for x in lines)
    assert lines[0]["time"] < lines[-1]["time"]


@pytest.mark.slow  # the GCS emulator
def test_status_on_a_gcs_population(gcs_bucket_url):
    ok("init", gcs_bucket_url, "--dataset", "synthetic", "-P", "5")
    ok("worker", gcs_bucket_url, "--max-individuals", "9", "--index", "0", "--quiet")
    report = json.loads(ok("status", gcs_bucket_url, "--json").stdout)
    assert report["born"] == 9 and report["alive"] + report["killed"] == 9 and report["alive"] >= 5
    assert report["workers"][0]["individuals"] == 9


# in the quick tier (four evo processes, a few seconds): this module's one test without workers
def test_not_a_population_is_one_line(tmp_path):
    for cmd in (["status"], ["plot"], ["lineage", "x"], ["best"]):
        r = evo(cmd[0], str(tmp_path / "nothing"), *cmd[1:])
        assert r.returncode == 2
        assert r.stderr.count("\n") == 1 and "no config.json" in r.stderr and "Traceback" not in r.stderr


# ----- plot -----

@pytest.mark.slow  # the population fixture runs real worker processes
def test_plot_draws_every_individual(population, tmp_path):
    png = tmp_path / "progress.png"
    arch = tmp_path / "arch.png"
    ok("plot", str(population), "-o", str(png), "--arch", str(arch))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert arch.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and arch.stat().st_size > 5_000
    data = json.loads((tmp_path / "progress.json").read_text())
    facts = on_disk(population)
    everyone = facts["alive"] + facts["history"]
    assert data["count"] == len(data["points"]) == len(everyone) == WORKERS * PER_WORKER
    assert {p["id"] for p in data["points"]} == {c["id"] for c in everyone}
    assert {p["id"] for p in data["points"] if p["alive"]} == {c["id"] for c in facts["alive"]}
    assert [p["t"] for p in data["points"]] == sorted(p["t"] for p in data["points"])
    best = [b["fitness"] for b in data["best_so_far"]]
    assert best == sorted(best) and best[-1] == max(c["fitness"] for c in everyone)


@pytest.mark.slow  # the population fixture runs real worker processes
def test_plot_data_path_option(population, tmp_path):
    ok("plot", str(population), "-o", str(tmp_path / "a.png"), "--data", str(tmp_path / "d.json"))
    assert json.loads((tmp_path / "d.json").read_text())["count"] == WORKERS * PER_WORKER
    assert not (tmp_path / "a.json").exists()


@pytest.mark.slow  # the population fixture runs real worker processes
def test_plot_without_matplotlib_is_one_line(population, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from launch.cli import main\n"
            f"sys.exit(main(['plot', {str(population)!r}, '-o', {str(tmp_path / 'x.png')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == ("evo plot: error: plotting needs matplotlib, which is not installed: "
                                "pip install 'evo[plot]' (or pip install matplotlib)")
    assert not (tmp_path / "x.png").exists()


# ----- lineage -----

def _check_chain(result: dict, ident: str, facts: dict) -> None:
    by_id = {c["id"]: c for c in facts["alive"] + facts["history"]}
    steps = result["steps"]
    assert result["complete"] and steps[-1]["id"] == ident
    assert steps[0]["parent"] is None and steps[0]["mutation"] == "initial"
    assert result["generations"] == len(steps) - 1
    for prev, step in zip(steps, steps[1:]):
        assert step["parent"] == prev["id"]
    for step in steps:
        rec = by_id[step["id"]]
        assert (step["mutation"], step["fitness"], step["birth"]) == (rec["mutation"], rec["fitness"], rec["birth"])


@pytest.mark.slow  # the population fixture runs real worker processes
def test_lineage_of_the_best_reaches_the_initial_model(population):
    facts = on_disk(population)
    best = max(facts["alive"], key=lambda c: c["fitness"])
    result = json.loads(ok("lineage", str(population), best["id"], "--json").stdout)
    _check_chain(result, best["id"], facts)
    text = ok("lineage", str(population), "best").stdout
    assert best["id"] in text and "initial" in text


@pytest.mark.slow  # the population fixture runs real worker processes
def test_lineage_of_dead_individuals(population):
    facts = on_disk(population)
    dead = [h for h in facts["history"] if h["parent"] is not None] or facts["history"]
    assert dead
    for rec in dead[:3]:
        result = json.loads(ok("lineage", str(population), rec["id"], "--json").stdout)
        _check_chain(result, rec["id"], facts)
        assert result["steps"][-1]["alive"] is False


@pytest.mark.slow  # the population fixture runs real worker processes
def test_lineage_errors(population):
    r = evo("lineage", str(population), "20990101T000000.000000Z-00000000")
    assert r.returncode == 2 and "no individual" in r.stderr and r.stderr.count("\n") == 1


# ----- best -----

@pytest.mark.slow  # the population fixture runs real worker processes
def test_best_is_the_fittest_live_individual(population):
    facts = on_disk(population)
    best = max(facts["alive"], key=lambda c: c["fitness"])
    shown = json.loads(ok("best", str(population), "--json").stdout)
    assert shown["id"] == best["id"] and shown["fitness"] == best["fitness"] and shown["dna"] == best["dna"]
    assert best["id"] in ok("best", str(population)).stdout

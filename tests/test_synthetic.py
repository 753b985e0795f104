"""The synthetic-fitness mode: the real worker without training, light enough for 250 per machine.

A synthetic worker must never import torch (checked with torch made unimportable), its
fitness is a deterministic function of the DNA plus seeded noise, it sleeps the simulated
training time, and it stores real safetensors files of the configured size. Its peak
memory is measured (and bounded far below what a torch import costs).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import dna
import mutations
from evo.config import RunConfig
from evo.train.synthetic import SyntheticSettings
from evo.strategies.evolution import AgingSettings
from evo.spaces import make_space
from evo.train.synthetic import SyntheticEvaluator, safetensors_blob, synthetic_fitness
from storage import open_store, safetensors_problem

REPO = Path(__file__).resolve().parent.parent

# A synthetic worker measured ~37 MiB peak RSS on the project's machine; `import torch`
# alone is ~220 MiB. The bound catches a torch (or other heavy) import, not small growth.
MAX_WORKER_PEAK_RSS_MIB = 120


def init_synthetic(url: str, **synthetic) -> RunConfig:
    config = RunConfig(dataset="synthetic", population_size=10, seed=5,
                       plugins={"synthetic": SyntheticSettings(**{"train_seconds": 0.0, **synthetic})})
    assert open_store(url).runinfo.init_config(config.to_json())
    return config


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


@pytest.mark.slow  # a real worker process
def test_a_synthetic_worker_runs_with_torch_unimportable(tmp_path):
    url = str(tmp_path / "pop")
    init_synthetic(url)
    out = run_python(f"""
        import sys
        sys.modules["torch"] = None          # any `import torch` now raises ImportError
        from launch.cli import main
        code = main(["worker", {url!r}, "--max-individuals", "40", "--quiet"])
        loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] == "torch")
        print(code, loaded)
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[0] == "0 []", out.stdout + out.stderr[-2000:]
    store = open_store(url)
    assert len(store.population.list_alive()) + store.history.count_history() == 40


def test_the_torch_blocker_has_teeth():
    out = run_python("""
        import sys
        sys.modules["torch"] = None
        try:
            import dna.build
            print("imported")
        except ImportError:
            print("blocked")
    """)
    assert out.stdout.strip() == "blocked", out.stdout + out.stderr


@pytest.mark.slow  # a real worker process
def test_synthetic_worker_peak_memory_is_small(tmp_path):
    """Peak RSS of one synthetic worker process, measured from its parent (RUSAGE_CHILDREN)."""
    url = str(tmp_path / "pop")
    init_synthetic(url, weight_bytes=65536)
    out = run_python(f"""
        import resource, subprocess, sys
        subprocess.run([sys.executable, "-m", "launch", "worker", {url!r}, "--max-individuals", "150",
                        "--quiet"], check=True)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    peak_mib = int(out.stdout.strip()) / 1024
    print(f"synthetic worker peak RSS: {peak_mib:.1f} MiB")
    assert 5 < peak_mib < MAX_WORKER_PEAK_RSS_MIB


def _conv_dna(rng: np.random.Generator):
    d = dna.initial()
    for _ in range(4):
        d = mutations.REGISTRY["large_scale/insert_convolution"](d, rng, dna.Bounds()) or d
    return d


def test_synthetic_fitness_is_deterministic_and_rewards_capacity():
    rng = np.random.default_rng(0)
    trivial = dna.initial()
    deeper = _conv_dna(rng)
    assert len(deeper.conv_edges) >= 2
    assert synthetic_fitness(trivial) == synthetic_fitness(dna.from_json(trivial.to_json(), dna.Bounds()))
    assert 0.0 <= synthetic_fitness(trivial) < synthetic_fitness(deeper) <= 1.0


def test_evaluator_is_seeded_and_stores_real_safetensors_of_the_configured_size():
    import safetensors.numpy

    config = RunConfig(dataset="synthetic", plugins={"synthetic": SyntheticSettings(weight_bytes=10_000, noise=0.05)})
    ev = SyntheticEvaluator(make_space(config), config.settings_of("synthetic"))
    child = _conv_dna(np.random.default_rng(1))
    a, b, c = (ev.evaluate(child, seed=s) for s in (7, 7, 8))
    assert (a.fitness, a.weights) == (b.fitness, b.weights)
    assert a.fitness != c.fitness and a.weights != c.weights
    assert abs(a.fitness - synthetic_fitness(child)) < 0.5
    assert safetensors_problem(a.weights) is None
    tensors = safetensors.numpy.load(a.weights)
    assert list(tensors) == ["w"] and tensors["w"].dtype == np.uint8 and tensors["w"].size == 10_000
    assert a.metrics["synthetic"] is True and a.metrics["steps"] == 0


def test_simulated_training_time_is_slept_with_progress_calls():
    config = RunConfig(dataset="synthetic", plugins={"synthetic": SyntheticSettings(train_seconds=0.3)})
    calls = []
    t = time.monotonic()
    out = SyntheticEvaluator(make_space(config), config.settings_of("synthetic")).evaluate(dna.initial(), seed=0, progress=lambda: calls.append(1))
    assert time.monotonic() - t >= 0.3
    assert out.metrics["train_s"] >= 0.3 and calls


def test_safetensors_blob_is_valid_for_any_size():
    for n in (0, 1, 7, 8, 4096, 100_003):
        assert safetensors_problem(safetensors_blob(bytes(n))) is None


def test_nasnet_dna_gets_a_synthetic_fitness():
    from dna import nasnet as nas

    rng = np.random.default_rng(3)
    values = [synthetic_fitness(nas.random_nasnet(rng)) for _ in range(20)]
    assert all(0.0 <= v <= 1.0 for v in values) and len(set(values)) > 1


def test_init_writes_the_synthetic_options_and_payloads_have_that_size(tmp_path):
    url = str(tmp_path / "pop")
    out = subprocess.run([sys.executable, "-m", "launch", "init", url, "--dataset", "synthetic", "-P", "5",
                          "--synthetic-train-seconds", "0", "--synthetic-weight-bytes", "20000"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "pop" / "config.json").read_text())
    assert config["dataset"] == "synthetic" and config["synthetic"]["weight_bytes"] == 20000
    subprocess.run([sys.executable, "-m", "launch", "worker", url, "--max-individuals", "8", "--quiet"],
                   check=True, cwd=REPO)
    sizes = [p.stat().st_size for p in (tmp_path / "pop" / "payload").iterdir()]
    assert sizes and all(20000 < s < 20000 + 200 for s in sizes)


@pytest.mark.parametrize("selection", ["pairwise", "aging", "random"])
def test_every_selection_runs_synthetically(tmp_path, selection):
    from evo.search.assemble import open_worker
    from evo.search.worker import WorkerOptions

    url = str(tmp_path / "pop")
    config = RunConfig(dataset="synthetic", population_size=6, selection=selection,
                       plugins={"aging": AgingSettings(tournament_size=2), "synthetic": SyntheticSettings(weight_bytes=64)})
    open_store(url).runinfo.init_config(config.to_json())
    stats = open_worker(url, WorkerOptions(max_individuals=30), index=0).run()
    assert stats.published == 30 and stats.killed == 24
    assert len(open_store(url).population.list_alive()) == 6

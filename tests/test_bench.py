"""The benchmark suite (bench/): every benchmark's small mode runs end to end on the CPU and
writes a report that holds together; the pieces the GPU modes share are checked on CPU.
No timing is asserted: only that the numbers exist, are consistent and add up."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:   # bench/ is run from the checkout, not installed
    sys.path.insert(0, str(REPO))

from bench import __main__ as cli  # noqa: E402
from bench._archs import ARCH_NAMES, conv_macs, describe, load_arch  # noqa: E402
from bench._fakecifar import write_fake_cifar  # noqa: E402
from bench._report import BenchError, fmt, markdown_table  # noqa: E402
from bench.overhead import PARTS, breakdown  # noqa: E402
from bench.search import SCHEMES, best_so_far, summarise, SearchSettings  # noqa: E402

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def read_doc(out: Path, stem: str) -> dict:
    doc = json.loads((out / f"{stem}.json").read_text())
    md = (out / f"{stem}.md").read_text()
    assert doc["machine"]["torch"] == torch.__version__ and doc["machine"]["python"]
    assert doc["summary"] in md and "| " in md
    return doc


# ----- pieces ----------------------------------------------------------------------------

def test_archs_are_valid_evolved_dnas_of_growing_cost():
    from dna.build import build

    archs = [load_arch(n) for n in ARCH_NAMES]
    macs = [conv_macs(d, (3, 32, 32)) for d in archs]
    assert macs == sorted(macs) and macs[0] > 0 and len(set(macs)) == 3
    for d in archs:
        info = describe(d, (3, 32, 32), 10)
        model = build(d, (3, 32, 32), 10)
        assert sum(p.numel() for p in model.parameters()) == info["params"]
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_conv_macs_counts_a_known_net():
    import dna
    import mutations

    child = mutations.REGISTRY["large_scale/insert_convolution"](dna.initial(), np.random.default_rng(0), dna.DEFAULT_BOUNDS)
    (edge,) = child.conv_edges
    # input 3x32x32 into one conv: 3 * C * kh * kw per output pixel, H/stride x W/stride pixels
    side = math.ceil(32 / edge.stride)
    assert conv_macs(child, (3, 32, 32)) == 3 * edge.channels * edge.filter_h * edge.filter_w * side * side


def test_missing_arch_is_a_one_line_error():
    with pytest.raises(BenchError, match="unknown architecture 'huge'"):
        load_arch("huge")


def test_fake_cifar_goes_through_the_real_loader(tmp_path):
    from evo.data.datasets import read_dataset

    path = write_fake_cifar(tmp_path, train_images=5_010, test_images=7, seed=3)
    data = read_dataset(f"cifar10={path.parent}")
    assert data.train_x.shape == (10, 3, 32, 32) and data.val_x.shape == (5_000, 3, 32, 32)
    assert data.test_x.shape == (7, 3, 32, 32) and data.num_classes == 10
    assert data.train_x.dtype == np.uint8 and set(np.unique(data.train_y)) <= set(range(10))


def test_markdown_table_and_cells():
    table = markdown_table(["a", "b"], [(1234567, 0.012345), (None, True)])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1,234,567 | 0.01235 |", "| - | yes |"]
    assert fmt(2.5) == "2.5" and fmt(12345.6) == "12,346"


def test_breakdown_parts_add_up_to_the_wall():
    record = {"id": "x", "mutation": "identity", "publish_s": 0.02, "kill_s": 0.01,
              "metrics": {"select_s": 0.05, "read_parent_s": 0.02, "mutate_s": 0.01, "build_s": 0.1,
                          "inherit_s": 0.03, "train_s": 2.0, "eval_s": 0.2}}
    row = breakdown(record, 2.5)
    assert row["select"] == pytest.approx(0.02)
    assert sum(row[p] for p in PARTS) == pytest.approx(2.5)
    skipped = breakdown(None, 0.3)
    assert skipped["other"] == 0.3 and sum(skipped[p] for p in PARTS) == pytest.approx(0.3)


def test_search_summary_pairs_seeds_against_random():
    assert best_so_far([0.1, 0.3, 0.2, 0.5]) == [0.1, 0.3, 0.3, 0.5]
    settings = SearchSettings(individuals=3, population_size=2, steps=1, seeds=(0, 1))
    fits = {"pairwise": [[0.1, 0.5, 0.9], [0.1, 0.4, 0.8]], "aging": [[0.1, 0.2, 0.3], [0.1, 0.2, 0.2]],
            "random": [[0.1, 0.6, 0.6], [0.1, 0.3, 0.7]]}
    runs = [{"scheme": s, "seed": i, "fitness": f, "seconds": 1.0} for s in SCHEMES for i, f in enumerate(fits[s])]
    out = summarise(runs, settings)
    assert out["pairwise"]["curve_mean"] == pytest.approx([0.1, 0.45, 0.85])
    assert out["pairwise"]["final_minus_random"][0] == pytest.approx(0.2)   # (0.3 + 0.1) / 2
    assert out["pairwise"]["wins_final"] == 2 and out["aging"]["wins_final"] == 0
    assert out["random"]["final"] == (pytest.approx(0.65), pytest.approx(math.sqrt(0.005)))


@pytest.mark.slow  # a small benchmark run (several seconds)
def test_naive_loop_trains_the_model():
    from bench.train_speed import naive_train

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    x = torch.randn(64, 3, 2, 2)
    y = (x.sum(dim=(1, 2, 3)) > 0).long()
    before = torch.nn.functional.cross_entropy(model(x), y).item()
    seconds = naive_train(model, x, y, steps=40, batch_size=16, learning_rate=0.1, device="cpu")
    assert seconds > 0
    assert torch.nn.functional.cross_entropy(model(x), y).item() < before


# ----- the CLI ---------------------------------------------------------------------------

def test_cli_errors_are_one_line(capsys):
    if not torch.cuda.is_available():
        assert cli.main(["train_speed", "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.strip() == "bench train_speed: error: device cuda requested but CUDA is not available"
    assert cli.main(["search", "--device", "tpu9"]) == 2
    assert "unknown device 'tpu9'" in capsys.readouterr().err
    assert cli.main(["search", "--individuals", "3", "-P", "3"]) == 2
    assert "must exceed the population size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["packing", "--workers", "one,two"])


def test_cli_storage_delegates_to_storage_throughput(capsys, tmp_path):
    assert cli.main(["storage", "--backend", "nfs9", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("bench storage: error: ")


# ----- small modes end to end ------------------------------------------------------------

@pytest.mark.slow  # a small benchmark run (several seconds)
def test_train_speed_small(tmp_path):
    from bench import train_speed

    train_speed.run("small", "cpu", tmp_path)
    doc = read_doc(tmp_path, "train_speed-small-cpu")
    (row,) = doc["results"]["rows"]
    assert row["arch"] == "small" and row["batch_size"] == 16 and row["steps"] == 20
    for key in ("evo_img_s", "naive_img_s", "evo_fp32_img_s", "evo_aug_img_s"):
        assert row[key] > 0
    assert len(row["seconds"]["evo"]) == len(row["seconds"]["naive"]) == 3
    assert row["speedup"] == pytest.approx(sorted(row["seconds"]["naive"])[1] / sorted(row["seconds"]["evo"])[1])
    assert row["cuda_graph"] is False   # CPU: no graph


@pytest.mark.slow  # a small benchmark run (several seconds)
def test_overhead_small(tmp_path):
    from bench import overhead

    overhead.run("small", "cpu", tmp_path)
    res = read_doc(tmp_path, "overhead-small-cpu")["results"]
    assert res["children"] == 6 and len(res["rows"]) == 6 + res["steps_without_child"]
    assert sum(res["totals_s"].values()) == pytest.approx(res["wall_s"])
    expected = (res["wall_s"] - res["totals_s"]["train"] - res["totals_s"]["eval"]) / res["wall_s"]
    assert res["coordination_overhead"] == pytest.approx(expected) and 0 < expected < 1
    made = [r for r in res["rows"] if r["child"]]
    assert [r["mutation"] for r in made[:3]] == ["initial"] * 3 and all(r["train"] > 0 for r in made)


@pytest.mark.slow  # a small benchmark run (several seconds)
def test_search_small_same_seeding_phase_in_every_scheme(tmp_path):
    from bench import search

    search.run("small", "cpu", tmp_path)
    doc = read_doc(tmp_path, "search-small-cpu")
    runs = doc["results"]["runs"]
    assert sorted((r["scheme"], r["seed"]) for r in runs) == sorted((s, i) for s in SCHEMES for i in (0, 1))
    for seed in (0, 1):
        seeding = {tuple(r["fitness"][:3]) for r in runs if r["seed"] == seed}
        assert len(seeding) == 1    # identical seeds: identical initial individuals, same fitness
    for r in runs:
        assert len(r["fitness"]) == 8 and r["mutations"][:3] == ["initial"] * 3
        assert all(m == "random" for m in r["mutations"][3:]) == (r["scheme"] == "random")
    assert (tmp_path / "search-small-cpu.png").stat().st_size > 1000


@pytest.mark.slow
def test_packing_small(tmp_path):
    from bench import packing

    packing.run("small", "cpu", tmp_path)
    res = read_doc(tmp_path, "packing-small-cpu")["results"]
    assert [r["k"] for r in res["rows"]] == [1, 2]
    assert res["best_k"] in (1, 2) and any(r["children"] > 0 for r in res["rows"])
    for r in res["rows"]:
        assert r["children_per_hour"] == pytest.approx(r["children"] / r["window_s"] * 3600)
        assert r["workers_seen"] <= r["k"] and r["total_children"] >= r["children"]


@pytest.mark.slow
def test_storage_small_runs_through_the_suite(tmp_path, capsys):
    assert cli.main(["storage", "--out", str(tmp_path)]) == 0
    assert "individuals/s" in capsys.readouterr().out
    report = json.loads((tmp_path / "storage-local.json").read_text())
    assert [p["workers"] for p in report["points"]] == [1, 2]


@pytest.mark.slow  # a small benchmark run (several seconds)
def test_retrain_speed_small(tmp_path):
    from bench import retrain_speed

    retrain_speed.run("small", "cpu", tmp_path)
    doc = read_doc(tmp_path, "retrain_speed-small-cpu")
    r = doc["results"]
    assert r["arch"] == "amoebanet-a" and r["parameters"] > 0 and r["aux_parameters"] > 0
    assert r["evo"]["steps"] == 256 // 16 and r["evo"]["used_cuda_graph"] is False
    assert all(r["evo"]["applied"][k] for k in ("cosine", "drop_path", "aux_head", "cutout", "grad_clip"))
    assert r["evo"]["steady_img_s"] > 0 and r["naive"]["steady_img_s"] > 0
    assert r["speedup"] == pytest.approx(r["evo"]["steady_img_s"] / r["naive"]["steady_img_s"])
    assert "evo_eager" not in r   # CPU: nothing to compare the graph against


@pytest.mark.slow
def test_inspect_small_measures_every_command_local_and_on_the_emulator(tmp_path):
    """``bench inspect --mode small``: a synthetic run, rolled up, every command measured on
    the local directory (records as files, then in segments) and on the GCS emulator (cold
    and warm read cache); every command exits 0 and the report says which targets it met."""
    from bench import inspect as inspect_bench

    doc = inspect_bench.run("small", tmp_path / "out", store_dir=str(tmp_path / "runs"))
    results = doc["results"]
    assert results["rollup"]["layout"]["segments"] == 6 and results["rollup"]["layout"]["files"] == 30
    for where in ("local_files", "local_segments", "gcs_cold", "gcs_warm", "local_floor", "gcs_floor_warm"):
        assert results[where], where
        for name, m in results[where].items():
            assert m["exit"] == 0, (where, name, m["stderr"])
            assert m["wall_s"] > 0 and m["peak_rss_mib"] > 10
    # one row per command in the table, and again in the floor's
    assert (tmp_path / "out" / "inspect-small-cpu.md").read_text().count("| `evo ") == 2 * 5
    assert results["local_refresh"]["exit"] == 0 and results["gcs_refresh"]["exit"] == 0
    assert doc["summary"].startswith("P=20, 330 dead: ")


@pytest.mark.slow  # a small benchmark run (several seconds)
def test_storage_compare_optuna_small_side_by_side(tmp_path, capsys):
    """The tiny comparison: evo and Optuna's journal, W = 1 and 2, in one run, alternating."""
    pytest.importorskip("optuna", reason="bench storage --compare optuna needs the bench extra (optuna)")
    assert cli.main(["storage", "--compare", "optuna", "--out", str(tmp_path)]) == 0
    assert "evo births/s vs Optuna journal trials/s" in capsys.readouterr().out
    report = json.loads((tmp_path / "storage-compare-optuna-small.json").read_text())
    assert [p["workers"] for p in report["points"]] == [1, 2]
    assert [p["order"][0] for p in report["points"]] == ["evo", "optuna"]
    for p in report["points"]:
        assert p["evo"]["births"] > 0 and p["optuna"]["trials"] > 0
        assert p["evo"]["unexpected_worker_exits"] == 0 and p["optuna"]["unexpected_worker_exits"] == 0
        assert p["ratio"] == pytest.approx(p["evo"]["births_per_s"] / p["optuna"]["trials_per_s"], rel=0.02)
    assert report["targets"]["evo_at_least_optuna_for_w_ge_8"] is None   # no W >= 8 in the small mode
    md = (tmp_path / "storage-compare-optuna-small.md").read_text()
    assert "| 1 |" in md and "| 2 |" in md and (tmp_path / "storage-compare-optuna-small.png").stat().st_size > 0


def test_storage_compare_rejects_a_remote_backend(capsys, tmp_path):
    assert cli.main(["storage", "--compare", "optuna", "--backend", "gcs", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench storage: error: ") and "local directory only" in err and len(err.splitlines()) == 1


def test_compare_targets_from_points():
    from bench.storage_compare import targets

    def point(w, evo, opt):
        return {"workers": w, "evo": {"births_per_s": evo}, "optuna": {"trials_per_s": opt}}
    got = targets([point(1, 20, 70), point(8, 100, 90), point(32, 85, 60), point(250, 79, 30)])
    assert got == {"evo_at_least_optuna_for_w_ge_8": True, "evo_min_over_its_w8": 0.79,
                   "evo_never_below_0.8x_w8": False}
    assert targets([point(8, 100, 101)])["evo_at_least_optuna_for_w_ge_8"] is False
    assert targets([point(8, 100, 90), {"workers": 32, "evo": {"skipped": "memory"}, "optuna": {"trials_per_s": 5}}]
                   )["evo_at_least_optuna_for_w_ge_8"] is False


def test_policy_writes_counts_what_each_batch_size_writes(tmp_path, capsys):
    assert cli.main(["policy", "--out", str(tmp_path), "--children", "12", "--workers", "1",
                     "--batch-size", "4"]) == 0
    assert "fewer bytes to policy/" in capsys.readouterr().out
    runs = json.loads((tmp_path / "policy-small-cpu.json").read_text())["results"]["runs"]
    assert [(r["batch_size"], r["versions"], r["intake_records"]) for r in runs] == [(1, 13, 0), (4, 4, 9)]
    assert runs[1]["bytes"] * 2 < runs[0]["bytes"]
    assert cli.main(["policy", "--out", str(tmp_path), "--batch-size", "1"]) == 2
    assert "--batch-size 2..256" in capsys.readouterr().err

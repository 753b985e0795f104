"""The published architectures (dna.published), `evo arch`, seeding a run with one, and the
NASNet search defaults and presets of `evo init`.

The papers' CIFAR-10 parameter counts are the acceptance test of the builder: NASNet-A at
N=6, F=32 has 3.3M parameters (Zoph et al. 2018) and AmoebaNet-A at N=6, F=36 has 3.2M (Real
et al. 2019), without the auxiliary head; `evo arch ... --json` must report both within 2%.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from dna.genome import DNAError
from dna.nasnet import nasnet_from_json
from dna.nasnet_network import nasnet_parameter_count
from dna.published import PUBLISHED, canonical_name, match, published, published_names
from evo.config import ConfigError, RunConfig
from evo.spaces.nasnet import NasnetSettings
from launch.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``evo ARGV`` in this process: (exit code, stdout, stderr)."""
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *argv: str, words: tuple[str, ...] = ()) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "", (argv, code, out, err)
    assert err.count("\n") == 1 and err.startswith("evo") and "Traceback" not in err, (argv, err)
    for w in words:
        assert w in err, (argv, w, err)
    return err


def arch_json(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, "arch", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


# ----- the table -----

@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_cells_are_valid_and_round_trip(name):
    p = PUBLISHED[name]
    assert p.name == name and published(name) is p.dna and match(p.dna) == name
    again = nasnet_from_json(p.dna.to_json())
    assert again == p.dna and again.content_hash() == p.dna.content_hash()
    assert p.dna.learning_rate == 0.1 and p.dna.mutation == "initial"
    assert "tensorflow/" in p.source  # where it was transcribed from


def test_the_published_cells_concatenate_what_the_references_do():
    # used_hiddenstates of the references, inverted: the states each cell's output concatenates
    expected = {"nasnet-a": ((1, 2, 3, 4, 5, 6), (3, 4, 5, 6)),
                "amoebanet-a": ((1, 3, 4, 6), (2, 3, 4, 5, 6)),
                "amoebanet-c": ((1, 2, 4, 5, 6), (0, 2, 3, 4, 5, 6))}
    assert {n: (p.dna.normal.output_states(), p.dna.reduction.output_states()) for n, p in PUBLISHED.items()} \
        == expected
    # NASNet-A "6 @ 768" (Zoph et al. 2018): six states of 4F = 128 channels at the end
    assert 6 * 4 * 32 == 768


def test_names_are_forgiving_in_case_and_separator_and_unknown_ones_are_one_line_errors():
    assert canonical_name(" AmoebaNet_A ") == "amoebanet-a" and published("NASNET-A") is PUBLISHED["nasnet-a"].dna
    assert published_names() == ["nasnet-a", "amoebanet-a", "amoebanet-c"]
    with pytest.raises(DNAError, match=r"unknown architecture 'resnet' \(published: nasnet-a, amoebanet-a"):
        published("resnet")
    with pytest.raises(DNAError, match=r"amoebanet-b is not expressible in the NASNet space: it uses 1x1"):
        published("AmoebaNet_B")


# ----- the papers' parameter counts, as `evo arch --json` reports them -----

@pytest.mark.parametrize("name,cells,filters,paper", [("nasnet-a", 6, 32, 3.3e6), ("amoebanet-a", 6, 36, 3.2e6)])
def test_evo_arch_reports_the_papers_parameter_counts_within_two_percent(capsys, name, cells, filters, paper):
    s = arch_json(capsys, name, "--cells", str(cells), "--filters", str(filters))
    assert (s["name"], s["cells_per_stack"], s["filters"], s["input_shape"], s["num_classes"]) == \
        (name, cells, filters, [3, 32, 32], 10)
    assert abs(s["parameters"] - paper) / paper < 0.02, s["parameters"]
    assert s["parameters"] == nasnet_parameter_count(published(name), 3, 10, cells, filters)
    assert s["aux_head_parameters"] > 0
    assert s["parameters"] + s["aux_head_parameters"] == nasnet_parameter_count(
        published(name), 3, 10, cells, filters, aux_head=True)
    assert s["cells"] == {"normal": 18, "reduction": 2}


def test_evo_arch_text_defaults_and_multiply_adds(capsys):
    code, out, err = run(capsys, "arch", "amoebanet-a")
    assert code == 0 and err == ""
    assert "amoebanet-a" in out and "N=6, F=36" in out and "3,218,266 (3.22M)" in out
    assert "auxiliary head adds" in out and "multiply-adds per image" in out
    small = arch_json(capsys, "amoebanet-a", "--cells", "1", "--filters", "4", "--input-shape", "1x8x8",
                      "--classes", "3")
    assert (small["input_shape"], small["num_classes"]) == ([1, 8, 8], 3)
    assert small["parameters"] == nasnet_parameter_count(published("amoebanet-a"), 1, 3, 1, 4)
    # the stem alone: 3x3 conv 1 -> 12 channels at 8x8; the classifier 4F*4 states -> 3
    assert small["multiply_adds"] > 8 * 8 * 12 * 9 + 16 * 4 * 3
    bigger = arch_json(capsys, "amoebanet-a", "--cells", "1", "--filters", "4", "--input-shape", "1x16x16",
                       "--classes", "3")
    assert bigger["parameters"] == small["parameters"]
    assert 3.5 * small["multiply_adds"] < bigger["multiply_adds"] < 4.5 * small["multiply_adds"]  # ~ pixels


def test_evo_arch_reads_dna_files_exports_and_evo_best_output(capsys, tmp_path):
    dna_file = tmp_path / "a.json"
    dna_file.write_text(published("nasnet-a").to_json())
    from_file = arch_json(capsys, str(dna_file))
    assert from_file["same_cells_as"] == "nasnet-a" and (from_file["cells_per_stack"], from_file["filters"]) == (3, 24)
    wrapped = tmp_path / "best.json"
    wrapped.write_text(json.dumps({"id": "x", "dna": json.loads(published("nasnet-a").to_json())}))
    assert arch_json(capsys, str(wrapped))["dna_hash"] == from_file["dna_hash"]
    export = tmp_path / "export"
    export.mkdir()
    (export / "dna.json").write_text(dna_file.read_text())
    assert arch_json(capsys, str(export))["dna_hash"] == from_file["dna_hash"]
    large = tmp_path / "large.json"
    from dna.genome import initial

    large.write_text(initial().to_json())
    s = arch_json(capsys, str(large), "--input-shape", "1x8x8")
    assert (s["kind"], s["parameters"], s["aux_head_parameters"], s["vertices"], s["convolutions"]) == \
        ("large_scale", 1 * 10 + 10, 0, 2, 0)


def test_evo_arch_refuses_bad_input_in_one_line(capsys, tmp_path):
    refused(capsys, "arch", "amoebanet-z", words=("'amoebanet-z' is neither a published architecture", "nasnet-a"))
    refused(capsys, "arch", str(tmp_path), words=("without dna.json",))
    (tmp_path / "config.json").write_text("{}")
    refused(capsys, "arch", str(tmp_path), words=("is a population directory: give an individual",))
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "nasnet", "schema": 1}')
    refused(capsys, "arch", str(bad), words=(str(bad), "missing field(s)"))
    bad.write_text("not json")
    refused(capsys, "arch", str(bad), words=(str(bad), "not valid JSON"))
    large = tmp_path / "large.json"
    from dna.genome import initial

    large.write_text(initial().to_json())
    refused(capsys, "arch", str(large), "--cells", "6", words=("--cells and --filters set the size of NASNet",))
    refused(capsys, "arch", "nasnet-a", "--input-shape", "3x32", words=("--input-shape", "CxHxW"))
    refused(capsys, "arch", "nasnet-a", "--cells", "0", words=("--cells", "integer >= 1"))
    refused(capsys, "arch", "nasnet-a", "-o", str(tmp_path / "a.gif"), words=("unsupported file type for -o",))
    refused(capsys, "arch", "nasnet-a", "--filters", "1", words=("filters must be an integer >= 2",))


def test_evo_arch_draws_the_cells(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "cells.png"
    code, text, err = run(capsys, "arch", "amoebanet-a", "--cells", "2", "--filters", "8", "-o", str(out))
    assert code == 0 and f"wrote {out}" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from launch.views.drawing import architecture_graph

    graph = architecture_graph(json.loads(published("amoebanet-a").to_json()))
    into_normal_output = sorted(s for s, d, _ in graph.edges if d == "normal:out")
    assert into_normal_output == ["normal:h1", "normal:h3", "normal:h4", "normal:h6"]  # the concat list


# ----- seeding a run, and the individuals of a run -----

def test_a_run_seeded_with_a_published_architecture_starts_from_it(capsys, tmp_path):
    url = str(tmp_path / "pop")
    code, out, err = run(capsys, "init", url, "--seed-arch", "AmoebaNet-A", "--dataset", "synthetic", "-P", "3")
    assert code == 0, err
    config = json.loads(Path(url, "config.json").read_text())
    assert (config["search_space"], config["nasnet"]["seed_arch"]) == ("nasnet", "amoebanet-a")
    code, out, err = run(capsys, "worker", url, "--max-individuals", "5")
    assert code == 0, err
    from launch.views.snapshot import take_snapshot

    records = take_snapshot(url, spinner=False).records.values()
    initial = [r for r in records if r.mutation == "initial"]
    assert len(initial) == 3
    for r in initial:
        assert nasnet_from_json(json.dumps(r.dna)) == published("amoebanet-a")
        s = arch_json(capsys, url, r.id)
        assert s["same_cells_as"] == "amoebanet-a" and (s["cells_per_stack"], s["filters"]) == (3, 24)
    children = [r for r in records if r.mutation != "initial"]
    assert children and all(nasnet_from_json(json.dumps(r.dna)) for r in children)
    code, out, err = run(capsys, "lineage", url, children[-1].id)
    assert code == 0 and "initial" in out
    refused(capsys, "arch", url, "nosuchid", words=("no individual 'nosuchid'",))


def test_seed_arch_is_checked_when_given(capsys, tmp_path):
    url = str(tmp_path / "pop")
    refused(capsys, "init", url, "--seed-arch", "resnet", words=("--seed-arch", "nasnet.seed_arch: unknown architecture 'resnet'"))
    refused(capsys, "init", url, "--seed-arch", "nasnet-c", words=("--seed-arch", "nasnet-c is not expressible"))
    refused(capsys, "arch", "nasnet-b", words=("nasnet-b is not expressible", "four combinations"))
    refused(capsys, "init", url, "--seed-arch", "nasnet-a", "--search-space", "large_scale",
            words=("--seed-arch", "seeds the nasnet search space"))
    assert not Path(url).exists()
    with pytest.raises(ConfigError, match="nasnet.seed_arch"):
        RunConfig(search_space="nasnet", plugins={"nasnet": NasnetSettings(seed_arch="vgg")})
    assert RunConfig(search_space="nasnet", plugins={"nasnet": NasnetSettings(seed_arch="NASNet_A")}).settings_of("nasnet").seed_arch == "nasnet-a"
    old = json.loads(RunConfig(search_space="nasnet").to_json())
    del old["nasnet"]["seed_arch"]                     # a config.json written before seed_arch existed
    assert RunConfig.from_dict(old).settings_of("nasnet").seed_arch is None


# ----- search defaults and presets -----

def _init(capsys, tmp_path, *options: str) -> dict:
    url = str(tmp_path / "pop")
    code, out, err = run(capsys, "init", url, *options)
    assert code == 0, err
    return json.loads(Path(url, "config.json").read_text())


def test_the_nasnet_search_defaults_are_the_2019_papers(capsys, tmp_path):
    assert (NasnetSettings().cells_per_stack, NasnetSettings().filters) == (3, 24)
    c = _init(capsys, tmp_path, "--search-space", "nasnet")
    assert (c["nasnet"]["cells_per_stack"], c["nasnet"]["filters"], c["selection"]) == (3, 24, "aging")


def test_the_nasnet_search_preset(capsys, tmp_path):
    c = _init(capsys, tmp_path, "--preset", "nasnet-search")
    # Zoph et al. 2018: N=2, 20 epochs per child; digits has 1,078 training images: 22 batches of 50
    assert (c["search_space"], c["nasnet"]["cells_per_stack"], c["nasnet"]["filters"]) == ("nasnet", 2, 24)
    assert c["train"]["steps"] == 20 * 22 and c["train"]["batch_size"] == 50


def test_the_amoebanet_search_preset_and_options_over_it(capsys, tmp_path):
    c = _init(capsys, tmp_path, "--preset", "amoebanet-search", "--batch-size", "100", "--nasnet-filters", "16")
    assert (c["search_space"], c["selection"], c["population_size"], c["tournament_size"]) == ("nasnet", "aging", 100, 25)
    assert (c["nasnet"]["cells_per_stack"], c["nasnet"]["filters"]) == (3, 16)  # the option wins
    assert c["train"]["steps"] == 25 * 11                                        # 25 epochs of 11 batches of 100


def test_presets_refuse_what_contradicts_them(capsys, tmp_path):
    url = str(tmp_path / "pop")
    refused(capsys, "init", url, "--preset", "nasnet-search", "--search-space", "large_scale",
            words=("--preset nasnet-search is a search of the nasnet space",))
    refused(capsys, "init", url, "--preset", "amoebanet-search", "-P", "10",
            words=("--preset amoebanet-search", "tournament_size"))
    refused(capsys, "init", url, "--preset", "darts", words=("--preset", "invalid choice"))
    assert not Path(url).exists()

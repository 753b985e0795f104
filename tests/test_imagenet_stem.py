"""The reference ImageNet stem of the NASNet space (issue 24, first part).

The papers' mobile ImageNet models are NASNet-A N=4, F=44 (Zoph et al. 2018: 5.3M parameters,
564M multiply-adds) and AmoebaNet-A N=4, F=50 (Real et al. 2019: 5.1M, 555M), at 224x224x3
with 1,000 classes and without the auxiliary head. Built on the references' ImageNet stem
(tensorflow/models nasnet.py ``_imagenet_stem``: conv0 3x3 stride 2 unpadded to 32 channels,
then the reduction cell at F/4 and F/2 filters) they have 5,289,978 parameters and 563.6M
multiply-adds, and 5,086,930 and 554.7M; `evo arch` must report them within 2% of the papers.
The CIFAR stem runs every cell at full size, so at 224 px it costs ~60x that.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dna.build_nasnet import build_nasnet, parameter_counts
from dna.nasnet import random_nasnet
from dna.nasnet_network import (AUTO_IMAGENET_ABOVE, check_stem, choose_stem, feature_size, nasnet_parameter_count,
                                network_plan, network_wiring)
from dna.published import published
from evo.config import ConfigError, RunConfig
from evo.spaces import make_space
from evo.spaces.nasnet import NasnetSettings
from test_published import arch_json, refused, run

REPO = Path(__file__).resolve().parent.parent


# ----- the papers' mobile ImageNet models, as `evo arch` reports them -----

@pytest.mark.parametrize("name, cells, filters, paper_params, paper_madds, reference_params, stem_cells", [
    ("nasnet-a", 4, 44, 5.3e6, 564e6, 5_289_978, [11, 22]),
    ("amoebanet-a", 4, 50, 5.1e6, 555e6, 5_086_930, [12, 25]),
])
def test_evo_arch_reports_the_mobile_imagenet_models_within_two_percent(
        capsys, name, cells, filters, paper_params, paper_madds, reference_params, stem_cells):
    s = arch_json(capsys, name, "--cells", str(cells), "--filters", str(filters), "--input-shape", "3x224x224",
                  "--classes", "1000")
    assert (s["stem"], s["stem_setting"], s["stem_cells"]) == ("imagenet", "auto", stem_cells)
    assert abs(s["parameters"] - paper_params) / paper_params < 0.02, s["parameters"]
    assert abs(s["multiply_adds"] - paper_madds) / paper_madds < 0.02, s["multiply_adds"]
    # the reference stem's own numbers (the table), exactly for parameters
    assert s["parameters"] == reference_params
    assert s["parameters"] == nasnet_parameter_count(published(name), 3, 1000, cells, filters, stem="imagenet")
    assert s["parameters"] + s["aux_head_parameters"] == nasnet_parameter_count(
        published(name), 3, 1000, cells, filters, stem="imagenet", aux_head=True, image_size=(224, 224))
    # the auxiliary head sees 14x14 (pooled to 4x4): ~2.4M, not the CIFAR stem's 128M at 112x112
    assert s["aux_head_parameters"] < 3e6
    assert s["cells"] == {"normal": 3 * cells, "reduction": 2}
    code, out, err = run(capsys, "arch", name, "--cells", str(cells), "--filters", str(filters),
                         "--input-shape", "3x224x224", "--classes", "1000")
    assert code == 0 and err == ""
    assert "stem: imagenet (auto: input above 64 px)" in out and f"{reference_params:,}" in out


def test_the_cifar_sizes_keep_the_cifar_stem_and_their_numbers(capsys):
    for name, cells, filters, params in (("nasnet-a", 6, 32, 3.3e6), ("amoebanet-a", 6, 36, 3.2e6)):
        s = arch_json(capsys, name, "--cells", str(cells), "--filters", str(filters))
        assert (s["stem"], s["stem_setting"], s["stem_cells"]) == ("cifar", "auto", [])
        assert abs(s["parameters"] - params) / params < 0.02
        assert s["parameters"] == nasnet_parameter_count(published(name), 3, 10, cells, filters)
    assert arch_json(capsys, "amoebanet-a")["parameters"] == 3_218_266
    forced = arch_json(capsys, "amoebanet-a", "--stem", "imagenet")
    assert (forced["stem"], forced["stem_setting"], forced["stem_cells"]) == ("imagenet", "imagenet", [9, 18])


def test_at_128_px_the_imagenet_stem_costs_at_least_ten_times_fewer_multiply_adds(capsys):
    size = ("--cells", "2", "--filters", "16", "--input-shape", "3x128x128")
    auto = arch_json(capsys, "amoebanet-a", *size)
    cifar = arch_json(capsys, "amoebanet-a", *size, "--stem", "cifar")
    assert (auto["stem"], cifar["stem"]) == ("imagenet", "cifar")
    assert cifar["multiply_adds"] >= 10 * auto["multiply_adds"], (cifar["multiply_adds"], auto["multiply_adds"])
    # the same cells: only the stem's conv and its two cells differ in parameters
    assert auto["cells"] == cifar["cells"] and auto["dna_hash"] == cifar["dna_hash"]


def test_evo_arch_refuses_what_the_stem_cannot_build(capsys, tmp_path):
    refused(capsys, "arch", "nasnet-a", "--stem", "imagenet", "--filters", "4",
            words=("the imagenet stem needs filters >= 8",))
    refused(capsys, "arch", "nasnet-a", "--stem", "imagenet", "--input-shape", "3x2x32",
            words=("at least 3x3 pixels",))
    refused(capsys, "arch", "nasnet-a", "--stem", "resnet", words=("--stem", "invalid choice"))
    large = tmp_path / "large.json"
    from dna.genome import initial

    large.write_text(initial().to_json())
    refused(capsys, "arch", str(large), "--stem", "imagenet", words=("--stem chooses the stem of NASNet",))


# ----- the network -----

def test_a_224_px_forward_pass_runs_on_the_imagenet_stem_at_the_references_sizes():
    torch.manual_seed(0)
    model = build_nasnet(published("nasnet-a"), (3, 224, 224), 1000, cells_per_stack=4, filters=44, aux_head=True,
                         stem="auto")
    assert model.stem_type == "imagenet" and len(model.cells) == 2 + 14
    sizes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[1:])))
             for m in [model.stem, *model.cells]]
    x = torch.randn(2, 3, 224, 224)
    model.train()
    logits, aux = model(x)
    for h in hooks:
        h.remove()
    assert logits.shape == (2, 1000) and aux.shape == (2, 1000)
    assert torch.isfinite(logits).all() and torch.isfinite(aux).all()
    # conv0: 111x111x32; stem cells 56x56 (4 x 11 channels), 28x28 (4 x 22); the stacks at 28, 14, 7
    assert sizes[0] == (32, 111, 111) and sizes[1] == (44, 56, 56) and sizes[2] == (88, 28, 28)
    assert [s[1] for s in sizes[3:]] == [28] * 4 + [14] * 5 + [7] * 5
    assert sizes[-1] == (6 * 176, 7, 7)
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 1000)


@pytest.mark.parametrize("seed, shape", [(0, (3, 97, 130)), (1, (1, 65, 66)), (2, (3, 3, 5)), (3, (3, 8, 8))])
def test_the_torch_free_count_matches_the_built_model_for_any_cells_and_size(seed, shape):
    dna = random_nasnet(__import__("numpy").random.default_rng(seed))
    for name in (None, "amoebanet-c"):  # amoebanet-c's reduction cell concatenates a cell input
        d = published(name) if name else dna
        model = build_nasnet(d, shape, 7, cells_per_stack=1, filters=8, aux_head=True, stem="imagenet")
        body, aux = parameter_counts(model)
        assert body == nasnet_parameter_count(d, shape[0], 7, 1, 8, stem="imagenet")
        assert body + aux == nasnet_parameter_count(d, shape[0], 7, 1, 8, stem="imagenet", aux_head=True,
                                                    image_size=shape[1:])
        model.train()
        logits, aux_logits = model(torch.randn(2, *shape))
        assert logits.shape == aux_logits.shape == (2, 7)


def test_the_stem_is_chosen_by_size_and_checked():
    assert AUTO_IMAGENET_ABOVE == 64
    assert choose_stem("auto", (3, 64, 64), 24) == "cifar"
    assert choose_stem("auto", (3, 65, 65), 24) == "imagenet"
    assert choose_stem("auto", (3, 65, 64), 24) == "cifar"          # both sides must be larger
    assert choose_stem("auto", (3, 224, 224), 4) == "cifar"         # too few filters for F // 4
    assert choose_stem("cifar", (3, 224, 224), 44) == "cifar"
    assert choose_stem("imagenet", (1, 8, 8), 8) == "imagenet"
    with pytest.raises(ValueError, match="stem must be one of cifar, imagenet, auto"):
        choose_stem("big", (3, 224, 224), 44)
    with pytest.raises(ValueError, match="filters >= 8"):
        check_stem("imagenet", 7, 224, 224)
    with pytest.raises(ValueError, match="filters >= 8"):
        build_nasnet(published("nasnet-a"), (3, 32, 32), 10, cells_per_stack=1, filters=6, stem="imagenet")
    check_stem("cifar", 2, 1, 1)
    # the references' filter scaling, truncated: F/4 and F/2
    assert [s.filters for s in network_plan(4, 50, "imagenet")[:2]] == [12, 25]
    assert [(s.reduction, s.stem) for s in network_plan(1, 8, "imagenet")[:3]] == [(True, True), (True, True),
                                                                                  (False, False)]
    assert network_plan(2, 8, "cifar") == network_plan(2, 8)
    assert [feature_size("imagenet", 224, k) for k in range(5)] == [111, 56, 28, 14, 7]
    assert [feature_size("cifar", 33, k) for k in range(3)] == [33, 17, 9]
    wiring = network_wiring(published("nasnet-a"), 4, 44, "imagenet")
    # the first stem cell reads conv0 (32 channels) as both inputs; the first normal cell reads
    # the second stem cell and, through a factorized reduction, the first
    assert (wiring[0].prev, wiring[0].state_channels) == ("stem", (11, 32))
    assert (wiring[1].prev, wiring[2].prev, wiring[3].prev) == ("factorized", "factorized", "conv1x1")


# ----- the space's setting -----

def test_the_stem_setting_is_checked_kept_in_config_json_only_when_set_and_used_by_the_space(tmp_path):
    assert NasnetSettings().stem == "auto"
    default = json.loads(RunConfig(search_space="nasnet").to_json())
    assert "stem" not in default["nasnet"]      # old config.json files write back byte for byte
    config = RunConfig(search_space="nasnet", plugins={"nasnet": NasnetSettings(stem="imagenet", filters=8)})
    written = json.loads(config.to_json())
    assert written["nasnet"]["stem"] == "imagenet"
    assert RunConfig.from_json(config.to_json()) == config
    old = json.loads((REPO / "tests" / "fixtures" / "configs" / "space-nasnet.json").read_text())
    assert "stem" not in old["nasnet"] and RunConfig.from_dict(old).settings_of("nasnet").stem == "auto"
    with pytest.raises(ConfigError, match=r"unknown nasnet.stem 'big' \(choose from cifar, imagenet, auto\)"):
        NasnetSettings(stem="big")
    with pytest.raises(ConfigError, match="the imagenet stem needs nasnet.filters >= 8"):
        NasnetSettings(stem="imagenet", filters=4)
    with pytest.raises(ConfigError, match="nasnet.stem sets the nasnet search space's stem"):
        RunConfig(search_space="large_scale", plugins={"nasnet": NasnetSettings(stem="cifar")})
    dna = published("amoebanet-a")
    space = make_space(RunConfig(search_space="nasnet", plugins={"nasnet": NasnetSettings(cells_per_stack=1,
                                                                                          filters=8)}))
    assert space.build(dna, (3, 96, 96), 10).stem_type == "imagenet"
    assert space.build(dna, (3, 32, 32), 10).stem_type == "cifar"
    forced = make_space(RunConfig(search_space="nasnet", plugins={"nasnet": NasnetSettings(
        cells_per_stack=1, filters=8, stem="cifar")}))
    assert forced.build(dna, (3, 96, 96), 10).stem_type == "cifar"


def test_evo_init_sets_the_stem_and_evo_arch_uses_a_runs_stem_for_its_individuals(capsys, tmp_path):
    url = str(tmp_path / "pop")
    refused(capsys, "init", url, "--search-space", "nasnet", "--set", "nasnet.stem=big",
            words=("--set nasnet.stem", "unknown nasnet.stem 'big'"))
    refused(capsys, "init", url, "--search-space", "nasnet", "--set", "nasnet.stem=imagenet", "--nasnet-filters", "4",
            words=("nasnet.stem", "filters >= 8"))
    assert not Path(url).exists()
    code, out, err = run(capsys, "init", url, "--dataset", "synthetic", "--search-space", "nasnet", "-P", "2",
                         "--set", "nasnet.stem=imagenet", "--nasnet-cells", "1", "--nasnet-filters", "8")
    assert code == 0, err
    assert json.loads(Path(url, "config.json").read_text())["nasnet"]["stem"] == "imagenet"
    code, out, err = run(capsys, "worker", url, "--max-individuals", "2")
    assert code == 0, err
    from launch.views.snapshot import take_snapshot

    record = next(iter(take_snapshot(url, spinner=False).records.values()))
    s = arch_json(capsys, url, record.id)                     # 32 px (synthetic), yet the run's stem
    assert (s["stem"], s["stem_setting"], s["stem_cells"], s["input_shape"]) == ("imagenet", "imagenet", [2, 4],
                                                                                 [3, 32, 32])
    assert arch_json(capsys, url, record.id, "--stem", "cifar")["stem"] == "cifar"


# ----- exports and retraining rebuild the same stem -----

def test_exports_and_retrain_requests_build_the_stem_they_name():
    import dna.portable as portable
    from evo.train.retrain_request import build_model, export_architecture

    d = published("nasnet-a").to_dict()
    arch = {"kind": "nasnet", "input_shape": [3, 96, 96], "num_classes": 5, "cells_per_stack": 1, "filters": 8}
    assert portable.build_network({"architecture": arch}, d).stem_type == "cifar"       # an older export
    assert portable.build_network({"architecture": {**arch, "stem": "imagenet"}}, d).stem_type == "imagenet"
    with pytest.raises(portable.ExportError, match="architecture stem must be cifar or imagenet, got 'auto'"):
        portable.build_network({"architecture": {**arch, "stem": "auto"}}, d)
    request = {"dna": d, "size": {"cells": 1, "filters": 8}}
    model, _ = build_model(request, (3, 96, 96), 5, aux_head=False)
    assert model.stem_type == "imagenet"                                                  # auto, above 64 px
    assert export_architecture(request, (3, 96, 96), 5)["stem"] == "imagenet"
    assert export_architecture(request, (3, 32, 32), 5)["stem"] == "cifar"
    cifar = {"dna": d, "size": {"cells": 1, "filters": 8, "stem": "cifar"}}
    assert build_model(cifar, (3, 96, 96), 5, aux_head=False)[0].stem_type == "cifar"
    with pytest.raises(ValueError, match="stem must be one of"):
        build_model({"dna": d, "size": {"cells": 1, "filters": 8, "stem": "big"}}, (3, 96, 96), 5, aux_head=False)

"""Plug-ins own their settings: a search space or strategy declares a settings dataclass,
``evo init`` checks it, config.json keeps it under the plug-in's block, ``evo init --help``
lists it, and the plug-in receives it. config.json files written before this stay readable
and are written back byte for byte (tests/fixtures/configs, written by the evo before)."""

from __future__ import annotations

import ast
import json
from dataclasses import fields
from pathlib import Path

import pytest

import toy_space  # noqa: F401  (registers the toy space and its settings)
from evo.config import ConfigError, RunConfig, plugin_blocks
from evo.search.assemble import open_worker
from evo.search.worker import WorkerOptions
from evo.spaces import make_space
from evo.spaces.nasnet import NasnetSettings
from evo.strategies.controller_settings import ControllerSettings
from evo.strategies.evolution import AgingSettings
from storage import open_store
from test_cli_settings import refused, run
from toy_space import ToySettings

REPO = Path(__file__).resolve().parent.parent
FIXTURES = sorted((REPO / "tests" / "fixtures" / "configs").glob("*.json"))


def test_there_is_a_fixture_for_every_built_in_space_and_strategy():
    names = {p.stem for p in FIXTURES}
    for space in ("large_scale", "nasnet", "nasbench201"):
        assert f"space-{space}" in names
    for strategy in ("pairwise", "aging", "random", "rl", "reinforce"):
        assert f"strategy-{strategy}" in names


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_every_config_written_before_reads_and_is_written_back_byte_for_byte(path):
    text = path.read_text()
    config = RunConfig.from_json(text)
    assert config.to_json() == text            # the toy space is registered: its block is not written
    assert RunConfig.from_json(config.to_json()) == config
    old = json.loads(text)
    assert config.settings_of("aging").tournament_size == old["tournament_size"]
    assert config.settings_of("nasnet") == NasnetSettings(**old["nasnet"])
    assert config.settings_of("controller") == ControllerSettings(**old["controller"])
    assert config.settings_of("toy") == ToySettings()


def test_the_fixtures_mean_what_they_say():
    by_name = {p.stem: RunConfig.from_json(p.read_text()) for p in FIXTURES}
    nasnet = by_name["space-nasnet"]
    assert make_space(nasnet).settings == NasnetSettings(cells_per_stack=2, filters=16)
    assert make_space(by_name["space-nasnet-seed-arch"]).settings.seed_arch == "nasnet-a"
    assert by_name["strategy-aging"].settings_of("aging").tournament_size == 5
    ctl = by_name["strategy-controller-overrides"].settings_of("controller")
    assert (ctl.learning_rate, ctl.baseline_decay, ctl.hidden_size, ctl.keep_versions) == (0.02, 0.8, 32, 4)
    assert by_name["dataset-nb201"].settings_of("tabular").time_scale == 0.01


def test_a_space_reads_its_block_and_only_a_run_that_uses_a_block_writes_one_not_always_written():
    config = RunConfig(dataset="synthetic", search_space="toy", plugins={"toy": ToySettings(initial_width=16)})
    assert json.loads(config.to_json())["toy"] == {"initial_width": 16}
    assert json.loads(RunConfig(dataset="synthetic", search_space="toy").to_json())["toy"] == {"initial_width": 8}
    assert "toy" not in json.loads(RunConfig(dataset="synthetic").to_json())
    # set but unused: still written, so nothing given is lost
    unused = RunConfig(dataset="synthetic", plugins={"toy": ToySettings(initial_width=4)})
    assert RunConfig.from_json(unused.to_json()) == unused
    assert RunConfig.from_dict({"dataset": "synthetic", "search_space": "toy", "toy": {"initial_width": 3}}) \
        .settings_of("toy").initial_width == 3


@pytest.mark.parametrize("d, field, words", [
    ({"toy": {"initial_width": 0}}, "toy.initial_width", "1..64, got 0"),
    ({"toy": {"initial_width": "8"}}, "toy.initial_width", "integer"),
    ({"toy": {"width": 8}}, None, "unknown key(s) width"),
    ({"toy": 8}, None, "toy must be an object"),
    ({"no_such_plugin": {}}, None, "unknown key 'no_such_plugin'"),
    ({"plugins": {}}, None, "unknown key 'plugins'"),
    ({"tournament_size": 11}, "tournament_size", "1..10, got 11"),
    ({"search_space": "nasnet", "nasnet": {"seed_arch": "nope"}}, "nasnet.seed_arch", "nope"),
    ({"nasnet": {"seed_arch": "nasnet-a"}}, "nasnet.seed_arch", "seeds the nasnet search space"),
    ({"controller": {"hidden_size": 5}}, "controller", "apply to the learned strategies"),
])
def test_plugin_settings_are_checked_when_read_with_one_line_naming_the_key(d, field, words):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"dataset": "synthetic", **d})
    assert info.value.field == field and words in str(info.value) and "\n" not in str(info.value)


def test_a_settings_object_of_the_wrong_class_or_an_unknown_block_is_refused():
    with pytest.raises(ConfigError, match="toy must be a ToySettings"):
        RunConfig(plugins={"toy": AgingSettings()})
    with pytest.raises(ConfigError, match="unknown plug-in settings 'nope'"):
        RunConfig(plugins={"nope": ToySettings()})


def test_every_registered_block_has_owners_and_a_settings_class():
    blocks = plugin_blocks()
    assert blocks["controller"].owners == (("selection", "reinforce"), ("selection", "rl"))
    assert blocks["aging"].inline and not blocks["nasnet"].inline
    assert blocks["toy"].settings_class is ToySettings
    assert blocks["synthetic"].owners == (("fitness_mode", "synthetic"),)
    assert blocks["tabular"].owners == (("fitness_mode", "tabular"),)


def test_the_run_config_names_no_plugin():
    assert {f.name for f in fields(RunConfig)} == {
        "dataset", "population_size", "selection", "search_space", "inherit_weights", "keep_best", "seed",
        "train", "bounds", "data", "plugins", "schema"}


def test_evo_init_checks_stores_and_lists_the_toy_spaces_setting(tmp_path, capsys):
    pop = tmp_path / "pop"
    err = refused(capsys, "init", str(pop), "--dataset", "synthetic", "--search-space", "toy",
                  "--set", "toy.initial_width=999", words=("--set toy.initial_width", "toy.initial_width", "1..64"))
    assert "999" in err and not pop.exists()
    refused(capsys, "init", str(pop), "--dataset", "synthetic", "--set", "toy.depth=2",
            words=("toy has no setting 'depth'", "initial_width"))
    refused(capsys, "init", str(pop), "--dataset", "synthetic", "--set", "nope.x=2", words=("unknown plug-in",))
    refused(capsys, "init", str(pop), "--dataset", "synthetic", "--set", "toy", words=("BLOCK.KEY=VALUE",))
    code, out, err = run(capsys, "init", str(pop), "--dataset", "synthetic", "--search-space", "toy",
                         "--set", "toy.initial_width=16")
    assert code == 0, err
    stored = json.loads((pop / "config.json").read_text())
    assert stored["toy"] == {"initial_width": 16} and stored["search_space"] == "toy"
    # the same options again: the same config, nothing to do; another value: refused
    assert run(capsys, "init", str(pop), "--dataset", "synthetic", "--search-space", "toy",
               "--set", "toy.initial_width=16")[0] == 0
    refused(capsys, "init", str(pop), "--dataset", "synthetic", "--search-space", "toy",
            "--set", "toy.initial_width=4", words=("toy.initial_width: stored 16, given 4",))

    code, out, _ = run(capsys, "init", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "toy (space toy; block 'toy'): initial_width=8 [width of the first individual's layer, 1..64]" in flat
    assert "nasnet (space nasnet; block 'nasnet'): cells_per_stack=3 [N, 1..64, --nasnet-cells]; filters=24" in flat
    assert "aging (selection aging; at config.json's top level): tournament_size=2 [S, 1..P, -S]" in flat
    assert "synthetic (dataset mode synthetic; block 'synthetic'): train_seconds=0.0" in flat
    assert "controller (selection reinforce, selection rl; block 'controller')" in flat


def test_a_config_files_bad_plugin_setting_is_one_line_naming_file_and_key(tmp_path, capsys):
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"dataset": "synthetic", "search_space": "toy", "toy": {"initial_width": 65}}))
    refused(capsys, "init", str(tmp_path / "pop"), "--config", str(bad), words=(str(bad), "toy.initial_width", "65"))


def test_the_old_flags_still_set_the_plugins_settings(tmp_path, capsys):
    pop = tmp_path / "pop"
    code, _, err = run(capsys, "init", str(pop), "--dataset", "synthetic", "--seed-arch", "amoebanet-a",
                       "--nasnet-cells", "2", "--nasnet-filters", "8", "-P", "12", "-S", "4")
    assert code == 0, err
    stored = RunConfig.from_json((pop / "config.json").read_text())
    assert stored.settings_of("nasnet") == NasnetSettings(cells_per_stack=2, filters=8, seed_arch="amoebanet-a")
    assert stored.settings_of("aging") == AgingSettings(tournament_size=4)
    # --set reaches the same settings as the flags
    code, _, err = run(capsys, "init", str(tmp_path / "p2"), "--dataset", "synthetic", "--search-space", "nasnet",
                       "--set", "nasnet.filters=8", "--set", "aging.tournament_size=3")
    assert code == 0, err
    stored = RunConfig.from_json((tmp_path / "p2" / "config.json").read_text())
    assert (stored.settings_of("nasnet").filters, stored.settings_of("aging").tournament_size) == (8, 3)
    refused(capsys, "init", str(tmp_path / "p3"), "--dataset", "synthetic", "--set", "aging.tournament_size=0",
            words=("--set aging.tournament_size", "tournament_size must be an integer in 1..", "got 0"))


def test_a_workers_space_receives_its_settings(tmp_path):
    url = str(tmp_path / "pop")
    config = RunConfig(dataset="synthetic", search_space="toy", population_size=3,
                       plugins={"toy": ToySettings(initial_width=16)})
    assert open_store(url).runinfo.init_config(config.to_json())
    records: list[dict] = []
    worker = open_worker(url, WorkerOptions(max_individuals=3), index=0, on_publish=records.append)
    assert worker.space.settings == ToySettings(initial_width=16)
    worker.run()
    store = open_store(url).with_run(bounds=config.bounds, dna_validator=make_space(config).parse)
    assert [store.population.read_individual(store.population.find(r["id"])).dna["widths"] for r in records] == [[16]] * 3


def test_spaces_and_strategies_do_not_import_the_run_config():
    found = []
    for package in ("spaces", "strategies"):
        for path in sorted((REPO / "evo" / package).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names] if isinstance(node, ast.Import) else []
                found += [f"{path.name}: {n}" for n in names if n == "evo.config"]
    assert found == []

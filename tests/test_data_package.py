"""evo.data as a package: a dataset spec parsed once (evo.data.spec.DatasetSpec), and modules
that import each other in one direction only (base at the bottom, the dispatch on top)."""

import ast
from pathlib import Path

import pytest

from evo.config import ConfigError, RunConfig, check_dataset_spec
from evo.data.base import DatasetError
from evo.data.spec import DATASETS, DatasetSpec

DATA = Path(__file__).resolve().parent.parent / "evo" / "data"


@pytest.mark.parametrize("text, name, path", [
    ("digits", "digits", ""), ("synthetic", "synthetic", ""), ("nb201-cifar100", "nb201-cifar100", ""),
    ("cifar10=/data/cifar", "cifar10", "/data/cifar"), ("cifar100=gs://b/c=d", "cifar100", "gs://b/c=d"),
    ("imagefolder=/x y/", "imagefolder", "/x y/"), ("npz=a.npz", "npz", "a.npz"), ("hf=gs://b/ds", "hf", "gs://b/ds"),
])
def test_a_spec_parses_into_name_and_path_and_gives_its_text_back(text, name, path):
    spec = DatasetSpec.parse(text)
    assert (spec.name, spec.path) == (name, path)
    assert str(spec) == text and DatasetSpec.parse(str(spec)) == spec
    assert DatasetSpec.of(spec) is spec and DatasetSpec.of(text) == spec


def test_what_a_spec_says_about_its_dataset():
    kinds = {n: DatasetSpec.parse(n if n in ("digits", "synthetic") or n.startswith("nb201-") else f"{n}=/p")
             for n in DATASETS}
    assert [n for n, s in kinds.items() if s.is_user] == ["imagefolder", "npz", "hf"]
    assert [n for n, s in kinds.items() if s.is_cifar] == ["cifar10", "cifar100"]
    assert [n for n, s in kinds.items() if s.is_tabular] == ["nb201-cifar10", "nb201-cifar100", "nb201-imagenet16"]
    assert [n for n, s in kinds.items() if not s.has_images] == ["synthetic", "nb201-cifar10", "nb201-cifar100",
                                                                "nb201-imagenet16"]
    assert kinds["synthetic"].is_synthetic and not kinds["digits"].is_synthetic


@pytest.mark.parametrize("text, words", [
    ("imagenet", "unknown dataset 'imagenet' (choose from digits, cifar10=PATH"),
    ("", "unknown dataset ''"),
    ("cifar10", "dataset cifar10 needs a path: cifar10=/path/to/data"),
    ("cifar100= ", "dataset cifar100 needs a path"),
    ("imagefolder=", "dataset imagefolder needs a path: imagefolder=PATH (a folder of class folders"),
    ("digits=", "dataset digits takes no path"),
    ("nb201-cifar10=/x", "dataset nb201-cifar10 takes no path"),
    (3, "dataset must be a string"),
])
def test_a_bad_spec_is_one_line_naming_the_problem_in_data_and_in_the_config(text, words):
    with pytest.raises(DatasetError) as exc:
        DatasetSpec.parse(text)
    assert words in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError) as exc:   # evo.config delegates to the same parser
        check_dataset_spec(text)
    assert words in str(exc.value) and exc.value.field == "dataset"


def test_a_spec_made_directly_is_checked_too():
    assert DatasetSpec("cifar10", "/d") == DatasetSpec.parse("cifar10=/d")
    for name, path in (("cifar10", ""), ("digits", "/x"), ("mnist", "")):
        with pytest.raises(DatasetError):
            DatasetSpec(name, path)


def test_the_config_keeps_the_text_and_offers_the_parsed_spec():
    config = RunConfig(dataset="imagefolder=/data/pets", train=RunConfig().train)
    assert config.dataset == "imagefolder=/data/pets" and '"dataset": "imagefolder=/data/pets"' in config.to_json()
    assert config.dataset_spec == DatasetSpec("imagefolder", "/data/pets") and config.dataset_name == "imagefolder"
    assert RunConfig.from_dict(config.to_dict()) == config


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level?) for every ``evo...`` import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("evo"):
            found.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names if a.name.startswith("evo")]
    return found


def test_evo_data_imports_in_one_direction_only():
    """No module of evo/data imports evo.train or evo.search, none imports evo.data inside a
    function (a local import to dodge a circle), and the module graph has no circle."""
    graph = {}
    for path in sorted(DATA.glob("*.py")):
        imports = _imports(path)
        assert not [m for m, _ in imports if m.startswith(("evo.train", "evo.search", "evo.strategies"))], path.name
        assert not [m for m, top in imports if m.startswith("evo.data") and not top], path.name
        graph[path.stem] = {m.split(".")[2] for m, _ in imports if m.startswith("evo.data.")}
    assert "base" in graph and not graph["base"]

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert node not in trail, " -> ".join((*trail, node))
        for nxt in graph.get(node, ()):
            visit(nxt, (*trail, node))

    for node in graph:
        visit(node, ())

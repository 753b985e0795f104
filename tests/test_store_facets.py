"""The store in facets: the object ``open_store`` returns and each of its facets stay small
(at most 25 public members each), every facet implements its protocol in
``storage.facets`` exactly, and the modules of ``storage`` import each other without a
circle."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import storage
import storage.facets as facets
from storage.datacache import DataCache
from storage.history import History
from storage.policy import PolicyVersions
from storage.population import Population
from storage.retrain import RetrainQueue
from storage.runinfo import RunInfo

MAX_PUBLIC = 25
FACETS = {   # attribute of the store -> (its class, its protocol)
    "population": (Population, facets.PopulationFacet),
    "history": (History, facets.HistoryFacet),
    "runinfo": (RunInfo, facets.RunInfoFacet),
    "datacache": (DataCache, facets.DataCacheFacet),
    "retrains": (RetrainQueue, facets.RetrainFacet),
    "policy": (PolicyVersions, facets.PolicyFacet),
}


def public_members(cls: type) -> set[str]:
    """Names not starting with ``_`` that are callables or properties defined on ``cls`` or
    its bases (object's and Protocol's own excluded)."""
    names = set()
    for klass in inspect.getmro(cls):
        if klass is object or klass.__module__ == "typing":
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and (callable(value) or isinstance(value, (property, staticmethod, classmethod))):
                names.add(name)
    return names


def _signature(member: object) -> str:
    return str(inspect.signature(member.fget if isinstance(member, property) else member))


@pytest.mark.parametrize("name", sorted(FACETS))
def test_each_facet_is_small_and_is_its_protocol(name):
    cls, protocol = FACETS[name]
    members = public_members(cls)
    assert 0 < len(members) <= MAX_PUBLIC, sorted(members)
    assert public_members(protocol) == members, "the protocol and its class name other methods"
    for member in members:
        got, want = (_signature(getattr(c, member)) for c in (cls, protocol))
        assert got == want, f"{name}.{member}: {got} != {want}"
    assert "Contract:" in (cls.__doc__ or ""), f"{cls.__name__} states no contract"


def test_the_store_is_small_and_its_facets_are_attributes():
    store = storage.open_store("memory://facets-count")
    members = public_members(type(store)) | {n for n in vars(store) if not n.startswith("_")}
    assert len(members) <= MAX_PUBLIC, sorted(members)
    assert set(FACETS) <= members
    for name, (cls, _) in FACETS.items():
        assert isinstance(getattr(store, name), cls)
    assert {"url", "check", "with_run", "now"} <= members
    # the facets of a store built with_run share its new settings
    run = store.with_run(keep_best=3)
    assert run.keep_best == 3 and store.keep_best == 0 and run.population is not store.population


def test_storage_modules_import_each_other_without_a_circle():
    root = Path(storage.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        if path.name == "__init__.py":
            continue
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                deps.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update(a.name for a in node.names)
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert not any(a.name.startswith("_") for a in node.names), \
                    f"{path.name} imports a private name from .{node.module}"
        graph[path.stem] = deps & {p.stem for p in root.glob("*.py")}

    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, "import circle: " + " -> ".join(trail + [node])
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            visit(dep, trail + [node])
        state[node] = 2

    for module in sorted(graph):
        visit(module, [])

"""The torch-free core: hundreds of lightweight workers must fit on one machine."""

import subprocess
from pathlib import Path
import sys

TORCH_FREE = ["dna", "mutations", "storage", "evo.config", "evo.strategies.selection", "evo.spaces", "evo.search.worker",
              "evo.train.synthetic", "launch.cli"]


def test_core_packages_do_not_import_torch():
    code = (
        "import sys\n"
        f"for name in {TORCH_FREE!r}:\n"
        "    __import__(name)\n"
        "import launch.cli; launch.cli.build_parser()\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "print('TORCH' if bad else 'CLEAN')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "CLEAN"


def test_building_a_model_does_import_torch():
    # control: the check above can fail
    code = "import sys, dna.build; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def _store_internals_used(source: str) -> list[str]:
    """Imports of ``storage``'s modules (not its package API) and ``.backend`` of stores."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("storage."):
            found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.startswith("storage.")]
        elif isinstance(node, ast.Attribute) and node.attr == "backend" and "store" in ast.unparse(node.value).lower():
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_readers_outside_storage_use_only_its_public_api():
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    used = {str(path.relative_to(repo)): bad for package in ("evo", "launch", "bench", "dna", "mutations")
            for path in sorted((repo / package).rglob("*.py"))
            if (bad := _store_internals_used(path.read_text()))}
    assert used == {}
    # the check can fail: it sees what the readers were written with before
    assert _store_internals_used("from storage.records import ALIVE\nxs = open_store(u).backend.list(ALIVE)\n") == \
        ["line 1: from storage.records import ...", "line 2: open_store(u).backend"]


# ----- the layout's rules: no import circles, no other module's private names -----

PRODUCT = ("dna", "mutations", "storage", "evo", "launch", "bench")


def _modules(repo: Path) -> dict[str, Path]:
    """Every product module by dotted name (a package by its own name)."""
    found = {}
    for package in PRODUCT:
        for path in sorted((repo / package).rglob("*.py")):
            parts = list(path.relative_to(repo).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(name: str, path, modules: dict) -> list[tuple[str, str, int]]:
    """``(imported module, imported name or '', line)`` for every import in the module, those
    inside functions and under TYPE_CHECKING included, resolved to product modules."""
    import ast

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub, "", node.lineno) if sub in modules else (base, a.name, node.lineno))
    return [(m, n, line) for m, n, line in found if m.split(".")[0] in PRODUCT and m in modules]


def _unit(module: str) -> str:
    """The room a module belongs to in the layout: a top-level package, or one level down
    inside evo/ and launch/ (a sub-package, or a module of their own)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in ("evo", "launch") and len(parts) > 1 else parts[0]


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` (a list of nodes, first == last), or [] if it has none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def _layout_problems(repo) -> dict[str, list]:
    modules = _modules(repo)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    units: dict[str, set[str]] = {}
    private = []
    for name, path in modules.items():
        for target, imported, line in _imports(name, path, modules):
            if target != name:
                graph[name].add(target)
            if _unit(target) != _unit(name):
                units.setdefault(_unit(name), set()).add(_unit(target))
            if imported.startswith("_") and not imported.startswith("__"):
                private.append(f"{path.relative_to(repo)}:{line}: {imported} from {target}")
    # a package importing its own __init__ (the package) is the package's face, not a circle
    module_graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    return {"module cycle": _cycle(module_graph), "room cycle": _cycle(units), "private names": private}


def test_no_import_circles_and_no_private_names_across_modules():
    from pathlib import Path

    assert _layout_problems(Path(__file__).resolve().parent.parent) == \
        {"module cycle": [], "room cycle": [], "private names": []}


def test_the_layout_check_can_fail(tmp_path):
    # control: a circle between two modules, a circle between two rooms of evo/, a private name
    for rel, text in {"evo/__init__.py": "", "evo/a.py": "from evo.b import helper\n",
                      "evo/b.py": "from evo import a\n\ndef helper():\n    from evo.c import _secret\n",
                      "evo/c.py": "def _secret():\n    pass\n",
                      "evo/x/__init__.py": "", "evo/x/m.py": "from evo.y.n import f\n",
                      "evo/y/__init__.py": "", "evo/y/n.py": "def f():\n    from evo.x import m\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = _layout_problems(tmp_path)
    assert found["module cycle"] in (["evo.a", "evo.b", "evo.a"], ["evo.b", "evo.a", "evo.b"])
    assert found["room cycle"] and found["private names"] == ["evo/b.py:4: _secret from evo.c"]

"""The torch-free core: hundreds of lightweight workers must fit on one machine."""

import subprocess
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

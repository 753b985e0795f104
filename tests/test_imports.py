"""The torch-free core: hundreds of lightweight workers must fit on one machine."""

import subprocess
import sys

TORCH_FREE = ["dna", "mutations", "storage", "evo.config", "evo.selection", "evo.spaces", "evo.worker",
              "evo.synthetic", "launch.cli"]


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

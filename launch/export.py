"""Write an individual as a self-contained model directory that needs only torch to run.

The model code is not generated: ``dna/portable.py`` and every ``dna/`` module it imports
(the large-scale network, the file readers, the NASNet builder) are copied verbatim into the
package ``evo_model/``, so an export runs exactly the code that trained it. See
``dna.portable`` for the directory's layout.
"""

from __future__ import annotations

import ast
import json
from dataclasses import asdict
import sys
import time
from pathlib import Path
from typing import Any

from .errors import UserError

LOAD_PY = '''"""Load this exported evo model with PyTorch alone, or evaluate it on an .npz of images.

    python load.py --data test.npz          # the run's test split, written beside this file by the export
                                            # (any .npz: arrays x (N, C, H, W; pixel values 0..255), y (labels))
    python load.py --images DIR             # image files (needs Pillow): DIR/<class>/* gives the accuracy,
                                            # image files directly in DIR their predicted classes
    python -c "import load; m = load.load()"

model.json's "preprocessing" says how images were turned into pixels for training (colour,
size, crop or squash; evo_model/portable_images.py does it); "normalization" is applied by
the model itself, which takes pixel values 0..255.

The model code is the package evo_model/ (beside this file); see evo_model/portable.py.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import evo_model  # noqa: E402


def load(directory=HERE, device="cpu"):
    """The exported model (a torch.nn.Module taking pixel values 0..255), in eval mode."""
    return evo_model.load(directory, device)


if __name__ == "__main__":
    sys.exit(evo_model.main(default_dir=HERE))
'''

MODEL_PACKAGE = "evo_model"

PACKAGE_INIT = '''"""evo's portable model code: verbatim copies of evo's dna/{files}; needs only torch.

    import evo_model
    model = evo_model.load("DIR")        # see portable.py
"""
from .portable import *  # noqa: F401,F403
'''


TEST_DATA_FILE = "test.npz"
# Imported by the portable code only to decode image files (load.py --images): an export
# that evaluates arrays runs with torch alone.
OPTIONAL_IMPORTS = frozenset({"PIL"})


def parse_dataset(text: Any):
    """The dataset spec ``text`` (``--dataset``, or model.json's ``dataset``) parsed into an
    :class:`evo.data.spec.DatasetSpec`, or a one-line UserError."""
    from evo.data.base import DatasetError
    from evo.data.spec import DatasetSpec

    try:
        return DatasetSpec.parse(text)
    except DatasetError as exc:
        raise UserError(str(exc)) from None


def read_run_dataset(spec, config=None, datacache=None):
    """The run's dataset (an ``evo.data.base.HostDataset``, every split) read for an export, or a
    one-line UserError; ``spec`` is a parsed :class:`evo.data.spec.DatasetSpec`. The run's own
    user dataset comes from its decoded cache ``datacache`` (the store's facet; what the search
    trained on); another spec is read from its source with the run's data settings."""
    from evo.data.base import DatasetError
    from evo.data.datasets import read_dataset
    from evo.data.userdata import prepare_data

    if spec.is_synthetic:
        raise UserError("this run uses the synthetic dataset: its individuals have no trained model to export")
    user = spec.is_user
    try:
        if user and datacache is not None and config is not None and spec == config.dataset_spec:
            return prepare_data(spec, config.data, datacache, splits=("train", "val", "test"))
        return read_dataset(spec, settings=config.data if user and config is not None else None)
    except DatasetError as exc:
        raise UserError(str(exc)) from None


def dataset_facts(spec, host=None) -> dict[str, Any]:
    """Input shape, class count and training-split normalisation of a dataset spec (read
    unless ``host``, the dataset already read, is given), and for user datasets the class
    names and the preprocessing of their images."""
    from evo.data.device import channel_stats

    host = host if host is not None else read_run_dataset(spec)
    mean, std = channel_stats(host.train_x)
    return {"spec": str(spec), "name": host.name, "input_shape": list(host.input_shape),
            "num_classes": host.num_classes, "mean": list(mean), "std": list(std),
            "classes": list(host.class_names) or None, "preprocessing": host.preprocessing,
            "data_id": host.data_id}


def write_test_data(path: Path, host) -> int:
    """Write the dataset's test split as an .npz that ``load.py --data`` reads (``x``: uint8
    images N, C, H, W as the dataset stores them; ``y``: int64 labels); returns N."""
    import numpy as np

    with open(path, "wb") as f:
        np.savez(f, x=np.ascontiguousarray(host.test_x), y=np.ascontiguousarray(host.test_y))
    return int(len(host.test_y))


def module_closure(module_file: str) -> list[str]:
    """``module_file`` and every sibling module it imports relatively, transitively (file names).

    Raises UserError if any of them imports something other than torch, the standard
    library or a sibling (an export must run with torch alone).
    """
    folder = Path(module_file).parent
    todo, seen = [Path(module_file).name], []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        tree = ast.parse((folder / name).read_text(encoding="utf-8"))
        for node in _runtime_imports(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                todo.append(node.module.split(".")[0] + ".py")
                continue
            if isinstance(node, ast.ImportFrom) and node.level:
                raise UserError(f"dna/{name}: relative import beyond its package; cannot export it")
            roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) \
                else [(node.module or "").split(".")[0]]
            for root in roots:
                if root not in ("torch", "__future__") and root not in sys.stdlib_module_names \
                        and root not in OPTIONAL_IMPORTS:
                    raise UserError(f"dna/{name} imports {root}, so it cannot run in an export (torch only)")
    return seen


def _runtime_imports(tree: ast.AST):
    """Import statements except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def prepare_directory(directory: str, force: bool) -> Path:
    """An empty (or, with ``force``, emptied of export files) directory to write into."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise UserError(f"{directory} exists and is not a directory")
    if path.exists() and any(path.iterdir()) and not force:
        raise UserError(f"{directory} is not empty (use --force to overwrite an earlier export)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{directory}: {exc.strerror or exc}") from None
    return path


def export(individual, config, url: str, directory: str, *, cells: int | None = None,
           filters: int | None = None, dataset=None, seed: int = 0,
           force: bool = False) -> dict[str, Any]:
    """Write ``individual`` (a verified ``storage.Individual``) to ``directory``; returns model.json.

    Besides the model, the dataset's test split is written as ``test.npz`` (what
    ``python load.py --data test.npz`` in the directory evaluates).

    Large-scale individuals keep their trained weights. NASNet individuals keep them at the
    run's N and F; at another ``cells``/``filters`` the model is rebuilt at that size with
    fresh (untrained, seeded) weights, and model.json says ``"trained": false``. ``dataset``
    (a parsed :class:`evo.data.spec.DatasetSpec`; :func:`parse_dataset`) overrides the run's.
    """
    import dna as dna_lib
    import dna.portable as portable

    if config.is_tabular:
        raise UserError(f"{url}: this run looked fitness up in NAS-Bench-201's table ({config.dataset}); its "
                        f"individuals have no trained weights to export (`evo arch {url} {individual.id}` describes "
                        "the cell)")
    kind = individual.dna.get("kind", "large_scale")
    if kind != "nasnet" and (cells or filters):
        raise UserError("--cells/--filters apply only to NASNet individuals")
    spec = dataset or config.dataset_spec
    from storage import open_store

    host = read_run_dataset(spec, config, open_store(url).datacache)
    facts = dataset_facts(spec, host)
    shape, classes = tuple(facts["input_shape"]), facts["num_classes"]
    weights = individual.weights
    trained = True
    note = "trained weights, as evolution stored them"
    if kind == "nasnet":
        searched = config.settings_of("nasnet")
        n = cells or searched.cells_per_stack
        f = filters or searched.filters
        from dna.nasnet_network import choose_stem

        architecture = {"kind": "nasnet", "input_shape": list(shape), "num_classes": classes,
                        "cells_per_stack": n, "filters": f, "stem": choose_stem(searched.stem, shape, f)}
        if (n, f) != (searched.cells_per_stack, searched.filters):
            weights = _fresh_nasnet_weights(individual.dna, architecture, seed)
            trained = False
            note = (f"FRESH, UNTRAINED weights: rebuilt at N={n}, F={f} (searched at "
                    f"N={searched.cells_per_stack}, F={searched.filters}); train it before use")
    elif kind == "nasbench201":
        from dna.build_nasbench201 import CELLS_PER_STAGE, CHANNELS
        from dna.nasbench201 import nb201_from_dict

        try:
            nb201_from_dict(individual.dna, config.bounds)
        except dna_lib.DNAError as exc:
            raise UserError(f"individual {individual.id}: {exc}") from None
        architecture = {"kind": "nasbench201", "input_shape": list(shape), "num_classes": classes,
                        "channels": CHANNELS, "cells_per_stage": CELLS_PER_STAGE}
    else:
        from dna.portable_plan import architecture as plan_of

        try:
            genome = dna_lib.validate(dna_lib.from_dict(individual.dna), config.bounds)
        except dna_lib.DNAError as exc:
            raise UserError(f"individual {individual.id}: {exc}") from None
        architecture = plan_of(genome, shape, classes)
    info = {
        "format": portable.EXPORT_FORMAT, "id": individual.id, "run": url, "kind": kind,
        "dataset": facts["spec"], "architecture": architecture,
        "normalization": {"mean": facts["mean"], "std": facts["std"], "applies_to": "pixel values 0..255"},
        "classes": facts["classes"], "preprocessing": facts["preprocessing"], "data_id": facts["data_id"],
        "data_settings": asdict(config.data) if facts["preprocessing"] is not None or facts["data_id"] else None,
        "validation_accuracy": individual.fitness if trained else None,
        "searched_validation_accuracy": individual.fitness,
        "trained": trained, "weights_note": note, "eval_batch_size": config.train.eval_batch_size,
        "test_data": {"file": TEST_DATA_FILE, "split": "test", "images": int(len(host.test_y)),
                      "dataset": facts["spec"]},
        "parent": individual.parent, "mutation": individual.mutation, "birth": individual.birth,
        "dna_hash": individual.dna_hash, "learning_rate": individual.dna.get("learning_rate"),
        "exported": time.time(),
    }
    out = prepare_directory(directory, force)
    write_export(out, model_files(individual.dna, info, weights), host, directory)
    try:  # prove the export loads before saying it worked
        model = portable.load(str(out))
    except portable.ExportError as exc:
        raise UserError(f"the export in {directory} does not load: {exc}") from None
    info["parameters"] = sum(p.numel() for p in model.net.parameters())
    return info


def model_files(dna: dict[str, Any], info: dict[str, Any], weights: bytes) -> dict[str, bytes]:
    """Every file of an export but the test images, by relative name: ``model.json``
    (``info``), ``dna.json``, ``weights.safetensors``, ``load.py`` and ``evo_model/*.py``."""
    import dna.portable as portable

    files = {portable.WEIGHTS_FILE: weights,
             portable.DNA_FILE: (json.dumps(dna, indent=1, sort_keys=True) + "\n").encode(),
             portable.MODEL_FILE: (json.dumps(info, indent=1, sort_keys=True) + "\n").encode(),
             "load.py": LOAD_PY.encode()}
    for name, data in model_package_files().items():
        files[f"{MODEL_PACKAGE}/{name}"] = data
    return files


def write_export(out: Path, files: dict[str, bytes], host, directory: str) -> None:
    """Write ``files`` (from :func:`model_files`) and, when ``host`` (the dataset) is given,
    its test split as ``test.npz`` into the prepared directory ``out``."""
    try:
        for name, data in files.items():
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if host is not None:
            write_test_data(out / TEST_DATA_FILE, host)
    except OSError as exc:
        raise UserError(f"{directory}: {exc.strerror or exc}") from None


def export_files(request: dict[str, Any], architecture: dict[str, Any], weights: bytes,
                 details: dict[str, Any], data) -> dict[str, bytes]:
    """The export files of a finished retrain (``evo.train.retrain``'s exporter): the request's DNA
    at its size, ``weights`` without what only training uses (the auxiliary head), and the
    normalisation of ``data`` (an ``evo.data.datasets.DeviceDataset``). The model is built and the
    weights loaded strictly before anything is returned."""
    from safetensors.torch import load as load_weights
    from safetensors.torch import save as save_weights

    import dna.portable as portable

    info = {
        "format": portable.EXPORT_FORMAT, "id": details["id"], "run": None, "kind": architecture["kind"],
        "dataset": details["dataset"], "architecture": architecture,
        "normalization": {"mean": list(data.mean), "std": list(data.std), "applies_to": "pixel values 0..255"},
        "preprocessing": getattr(data, "preprocessing", None),
        "validation_accuracy": None, "test_accuracy": details["test_accuracy"],
        "searched_validation_accuracy": details["source"].get("fitness"), "trained": True,
        "weights_note": "final training (evo retrain): " + json.dumps(details["settings"], sort_keys=True),
        "eval_batch_size": details["settings"].get("eval_batch_size", 1000),
        "test_data": {"file": TEST_DATA_FILE, "split": "test", "images": int(data.test_y.shape[0]),
                      "dataset": details["dataset"]},
        "retrain": {"source": details["source"], "size": details.get("size")},
        "dna_hash": request["dna_hash"], "learning_rate": request["dna"].get("learning_rate"),
        "exported": time.time(),
    }
    try:
        net = portable.build_network(info, request["dna"])
    except (portable.ExportError, ValueError) as exc:
        raise UserError(f"cannot build the exported model: {exc}") from None
    state = load_weights(weights)
    keep = {k: v for k, v in state.items() if k in net.state_dict()}
    net.load_state_dict(keep, strict=True)  # raises if the export would not load
    info["parameters"] = sum(p.numel() for p in net.parameters())
    return model_files(request["dna"], info, save_weights({k: v.contiguous() for k, v in keep.items()}))


def _fresh_nasnet_weights(dna_dict: dict, architecture: dict, seed: int) -> bytes:
    import torch
    from safetensors.torch import save

    import dna.portable as portable

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = portable.build_network({"architecture": architecture}, dna_dict)
        except (portable.ExportError, ValueError) as exc:
            raise UserError(f"cannot build the NASNet model at this size: {exc}") from None
    return save({k: v.detach().contiguous() for k, v in net.state_dict().items()})


def model_package_files() -> dict[str, bytes]:
    """``dna/portable.py`` and the ``dna/`` modules it needs, verbatim, plus an
    ``__init__.py`` that re-exports ``dna.portable``: the package ``evo_model/`` by file name."""
    import dna.portable as portable

    files = module_closure(portable.__file__)
    src = Path(portable.__file__).parent
    out = {name: (src / name).read_bytes() for name in files}
    out["__init__.py"] = PACKAGE_INIT.format(files=", ".join(sorted(files))).encode()
    return out

"""Train and evaluate a child with torch: build, inherit, train, validate, serialise.

The dataset is loaded once per worker and stays resident on the device; the worker is a
long-lived process, so torch's import and CUDA initialisation are paid once, not per child.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from evo.data.settings import DataSettings
from evo.train.settings import TrainSettings
from evo.data.base import SEARCH_SPLITS
from evo.data.datasets import read_dataset
from evo.data.device import to_device
from evo.data.spec import DatasetSpec
from evo.data.userdata import prepare_data
from evo.errors import SettingsError
from evo.train.outcome import Outcome
from evo.train.training import accuracy, train


class DeviceError(SettingsError, RuntimeError):
    """A device that was asked for and is not there (one line)."""

if TYPE_CHECKING:
    from storage import DataCacheFacet


def resolve_device(device: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU. DeviceError for a
    device that is not there."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"device {device}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"device {device} requested but there are only {torch.cuda.device_count()} CUDA devices")
    return dev


def weights_to_bytes(model: torch.nn.Module) -> bytes:
    """The model's state dict as safetensors bytes (contiguous CPU copies)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return save_safetensors(state)


def weights_from_bytes(blob: bytes) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes (never pickle)."""
    return load_safetensors(blob)


class TorchEvaluator:
    """Turns a child DNA into an :class:`Outcome` by really training it.

    ``space`` builds the model (and inherits weights); ``dataset`` is the run's dataset spec,
    loaded once (by :meth:`prepare`, or the first evaluation) and kept on the device: its
    training and validation splits only (the search never reads the test split). A user
    dataset (imagefolder, npz, hf) is read through the run's decoded cache ``datacache``
    (decoded by the first worker that needs it; ``data_settings`` are the run's), and every
    child's metrics name the cache (``data``: its SHA-256 identity).
    """

    def __init__(self, space: Any, dataset: DatasetSpec | str, train_settings: TrainSettings, device: str = "auto", *,
                 data_settings: DataSettings | None = None, datacache: DataCacheFacet | None = None):
        self.space = space
        self.dataset = DatasetSpec.of(dataset)
        self.data_settings = data_settings or DataSettings()
        self.datacache = datacache   # the store's datacache facet (user datasets)
        self.train_settings = train_settings
        self.device = resolve_device(device)
        self.device_name = str(self.device)
        self.data = None
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
            # `evo launch` gives each CPU worker its share of the cores; oversubscribed
            # OpenMP threads made training ~30x slower on a busy 2-core machine.
            torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))

    def prepare(self) -> None:
        """Load the dataset's training and validation splits onto the device (once; later
        calls do nothing). DatasetError (one line) for data that cannot be used."""
        if self.data is not None:
            return
        if self.dataset.is_user and self.datacache is not None:
            host = prepare_data(self.dataset, self.data_settings, self.datacache, splits=SEARCH_SPLITS)
        else:
            host = read_dataset(self.dataset, settings=self.data_settings if self.dataset.is_user else None,
                                splits=SEARCH_SPLITS)
        self.data = to_device(host, self.device, splits=SEARCH_SPLITS)

    def evaluate(self, child, *, parent_dna=None, parent_weights: bytes | None = None, seed: int = 0,
                 progress: Callable[[], Any] | None = None) -> Outcome:
        """Build ``child``, inherit from the parent where shapes match, train, validate."""
        self.prepare()
        t = time.perf_counter()
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching global state
            torch.manual_seed(seed)
            model = self.space.build(child, self.data.input_shape, self.data.num_classes)
        model = model.to(self.device)
        build_s = time.perf_counter() - t

        t = time.perf_counter()
        inherited = 0.0
        report = None
        if parent_weights is not None and parent_dna is not None:
            # reset_weights renumbers every id, so nothing matches and nothing is inherited
            report = self.space.inherit(weights_from_bytes(parent_weights), parent_dna, child, model)
            inherited = report.fraction
        inherit_s = time.perf_counter() - t

        steps_cb = (lambda step, total: progress()) if progress else None
        result = train(model, self.data, self.train_settings, learning_rate=child.learning_rate, seed=seed,
                       device=self.device, progress=steps_cb)
        t = time.perf_counter()
        fitness = accuracy(model, self.data.val_x, self.data.val_y, self.data, self.train_settings.eval_batch_size)
        eval_s = time.perf_counter() - t
        weights = weights_to_bytes(model)
        metrics = {
            "train_s": result.seconds, "eval_s": eval_s, "build_s": build_s, "inherit_s": inherit_s,
            "inherited_fraction": inherited, "steps": result.steps,
            "final_loss": result.to_dict()["final_loss"],  # None when training diverged (JSON-safe)
            "diverged": result.diverged, "cuda_graph": result.used_cuda_graph,
            "graph_fallback": result.graph_fallback_reason, "precision": result.precision,
            "params": sum(p.numel() for p in model.parameters()),
            "device": self.device_name,
        }
        if self.data.data_id is not None:
            metrics["data"] = self.data.data_id
        if report is not None:
            metrics["inherited_tensors"] = report.tensors_inherited
            metrics["fresh_tensors"] = report.tensors_fresh
        return Outcome(fitness=float(fitness), weights=weights, metrics=metrics)

"""Train one final model with the papers' protocol, resumable from a checkpoint at any step.

The search trainer's fast path does the work (``evo.train.training.TrainingStep`` over
``evo.train.batches.EpochSampler`` and ``evo.train.sgd.MomentumSGD``: the whole data path on the device,
bf16 + channels_last on CUDA, the step captured in a CUDA graph); this module adds what the
final training needs around it (``evo.train.final_settings.FinalSettings``):

- epochs of the training split, or of train + validation (the papers' choice);
- single-period cosine decay of the learning rate, set before every step (a device tensor,
  so a captured graph sees it);
- ScheduledDropPath: a model with a float attribute ``drop_path_prob`` gets
  ``drop_path * step / total_steps`` before every step (the NASNet builder keeps it in a
  buffer its cells read, so a captured graph follows it; the graph is captured after the
  first steps, when the probability is already above 0 and the drop-path ops exist);
- the auxiliary head's loss (a model that returns ``(logits, aux_logits)`` in training mode),
  label smoothing, gradient clipping, cutout, crop and flip;
- :meth:`FinalTraining.state` / :meth:`FinalTraining.restore`: weights, momentum buffers,
  the schedule position, every random generator's state and the epoch's data order, so a
  run stopped at step s and resumed continues exactly as if never stopped (on the CPU, with
  the same thread count, the final weights are bit-identical).

Models without an auxiliary head or drop path (the 2017 space's) get the rest of the
protocol: :attr:`FinalTraining.applied` records what applied.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from dna.numbers import is_finite_number

from evo.train import cuda_graph
from evo.train.batches import EpochSampler
from evo.data.base import Augment
from evo.data.device import DeviceDataset
from evo.train.final_settings import FinalSettings
from evo.train.sgd import MomentumSGD
from evo.train.training import WARMUP_STEPS, TrainingStep, accuracy, concrete_device, resolve_precision

STATE_FORMAT = 1
BN_RECALIBRATION_IMAGES = 4096   # training images the final batch-norm statistics average over


@dataclass(frozen=True)
class Progress:
    """Where a final training is: passed to the progress callback (plain data)."""

    epoch: int              # epochs completed
    epochs: int
    step: int               # steps completed
    total_steps: int
    loss: float | None      # mean training loss of the current (or just finished) epoch
    train_accuracy: float | None
    val_accuracy: float | None   # held-out validation (data=train only), at epoch ends
    eta_seconds: float | None
    epoch_done: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite numbers become None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in self.__dict__.items()}


@dataclass
class Outcome:
    """What :meth:`FinalTraining.run` did: ``finished`` (all steps), ``stopped`` (asked to
    stop at a step boundary), or ``diverged`` (non-finite loss)."""

    status: str
    step: int
    seconds: float
    metrics: list[dict[str, Any]] = field(default_factory=list)


class FinalTraining:
    """One model's final training on ``data`` with ``settings``; see the module docstring.

    ``learning_rate``: used when ``settings.learning_rate`` is None (the DNA's own).
    ``seed`` seeds the data order, augmentation and drop-path draws (the model's initial
    weights are the caller's). ``aux_head``: the model returns auxiliary logits in training
    mode. Raises ValueError (one line) for a batch larger than the training set or data on
    another device.
    """

    def __init__(self, model: torch.nn.Module, data: DeviceDataset, settings: FinalSettings, *,
                 learning_rate: float, seed: int, device: torch.device | str, aux_head: bool = False) -> None:
        device = concrete_device(device)
        if data.device.type != device.type:
            raise ValueError(f"final training: data {data.name} is on {data.device}, not on {device}")
        self.settings = settings
        self.device = device
        self.data = data
        self.train_data = _training_split(data, settings)
        self.lr0 = float(settings.learning_rate if settings.learning_rate is not None else learning_rate)
        if not (math.isfinite(self.lr0) and self.lr0 > 0):
            raise ValueError(f"final training: learning rate must be a finite number > 0, got {self.lr0!r}")
        self.precision = resolve_precision(settings.precision, device)
        on_cuda = device.type == "cuda"
        if on_cuda:
            torch.backends.cudnn.benchmark = False
        self.channels_last = on_cuda and self.precision == "bf16"
        self.model = model.to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.train()
        augment = Augment(
            crop_padding=settings.crop_padding if settings.crop_padding is not None else data.augment.crop_padding,
            flip=settings.flip if settings.flip is not None else data.augment.flip)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        torch.manual_seed(seed)   # drop-path masks draw from the default generators
        self.sampler = EpochSampler(self.train_data, settings.batch_size, augment, self.generator,
                                    cutout=settings.cutout)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = self.steps_per_epoch * settings.epochs
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = MomentumSGD(params, lr=self.lr0, momentum=settings.momentum,
                                     weight_decay=settings.weight_decay)
        self.has_drop_path = hasattr(self.model, "drop_path_prob")
        self.has_aux = bool(aux_head)
        self.step_fn = TrainingStep(self.model, self.sampler, self.optimizer, self.total_steps, self.precision,
                                    self.channels_last, label_smoothing=settings.label_smoothing,
                                    aux_weight=settings.aux_weight if self.has_aux else 0.0,
                                    grad_clip=settings.grad_clip)
        self.step = 0
        self.metrics: list[dict[str, Any]] = []
        self.seconds = 0.0            # training time over all sessions (from checkpoints)
        self.used_cuda_graph = False
        self.graph_fallback: str | None = None
        self._try_graph = on_cuda and settings.cuda_graphs
        self._graph = None
        self._warm = 0

    # ----- what applies -----
    @property
    def applied(self) -> dict[str, Any]:
        """Which protocol features this model and dataset get (recorded with the result)."""
        s = self.settings
        return {
            "cosine": s.schedule == "cosine", "drop_path": self.has_drop_path and s.drop_path > 0,
            "aux_head": self.has_aux and s.aux_weight > 0, "cutout": s.cutout > 0,
            "crop_padding": self.sampler.augment.crop_padding, "flip": self.sampler.augment.flip,
            "label_smoothing": s.label_smoothing > 0, "grad_clip": s.grad_clip > 0,
            "weight_decay": s.weight_decay > 0, "training_images": int(self.train_data.train_y.shape[0]),
            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "learning_rate": self.lr0, "precision": self.precision,
        }

    # ----- schedules -----
    def learning_rate_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): cosine from lr0 to 0, or constant."""
        if self.settings.schedule == "constant":
            return self.lr0
        return 0.5 * self.lr0 * (1.0 + math.cos(math.pi * step / self.total_steps))

    def drop_path_at(self, step: int) -> float:
        """The drop-path probability of step ``step``: rises linearly from 0 to ``drop_path``."""
        return self.settings.drop_path * step / self.total_steps

    # ----- training -----
    def run(self, *, progress: Callable[[Progress], None] | None = None, progress_every: int = 50,
            should_checkpoint: Callable[[], bool] | None = None,
            checkpoint: Callable[["FinalTraining"], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Outcome:
        """Train from the current step to the end.

        Between steps: ``should_stop()`` true ends the run at once (status ``stopped``;
        the caller checkpoints); ``should_checkpoint()`` true calls ``checkpoint(self)``.
        ``progress`` is called every ``progress_every`` steps and at each epoch's end
        (the host reads the device then, never otherwise).
        """
        session_start = time.perf_counter()
        start_step = self.step
        spe = self.steps_per_epoch
        status = "finished"
        while self.step < self.total_steps:
            if should_stop is not None and should_stop():
                status = "stopped"
                break
            if self.step % spe == 0:
                self.sampler.new_epoch()
                self.step_fn.correct.zero_()
            self.optimizer.set_lr(self.learning_rate_at(self.step))
            if self.has_drop_path:
                self.model.drop_path_prob = self.drop_path_at(self.step)
            self._one_step()
            self.step += 1
            done_epoch = self.step % spe == 0
            if done_epoch:
                if bool(self.step_fn.nonfinite.item()):
                    status = "diverged"
                    break
                self._end_epoch(session_start, start_step, progress)
            elif progress is not None and self.step % progress_every == 0:
                progress(self._progress(session_start, start_step, epoch_done=False))
            if should_checkpoint is not None and checkpoint is not None and self.step < self.total_steps \
                    and should_checkpoint():
                self.seconds += time.perf_counter() - session_start
                session_start, start_step = time.perf_counter(), self.step
                checkpoint(self)
        if status == "finished":
            self.recalibrate_batch_norm()
        self.seconds += time.perf_counter() - session_start
        if self.channels_last:
            self.model.to(memory_format=torch.contiguous_format)
        return Outcome(status, self.step, self.seconds, list(self.metrics))

    def recalibrate_batch_norm(self) -> int:
        """Recompute every batch-norm layer's running statistics from the final weights; the
        number of training images used (0: the model has no batch norm).

        The running averages a layer keeps while training lag behind weights that are still
        moving; after a short training (tens of steps) they can be many times the true
        variances deep in the network, and the trained model then predicts one class in eval
        mode although it is right in training mode. So at the end they are recomputed as
        plain averages (``momentum=None``) over at most :data:`BN_RECALIBRATION_IMAGES`
        training images spread evenly over the split, unaugmented, in training-size batches,
        with drop-path off and no gradients: the same images give the same statistics on
        every resume.
        """
        layers = [m for m in self.model.modules()
                  if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d))]
        every = -(-len(self.train_data.train_x) // BN_RECALIBRATION_IMAGES)   # evenly spread: splits may be sorted by class
        x = self.train_data.train_x[::every][:BN_RECALIBRATION_IMAGES]
        batch = self.settings.batch_size
        if not layers or len(x) < 2:
            return 0
        momenta = [m.momentum for m in layers]
        drop = getattr(self.model, "drop_path_prob", None)
        bf16 = self.precision == "bf16"
        try:
            for m in layers:
                m.reset_running_stats()
                m.momentum = None
            if drop is not None:
                self.model.drop_path_prob = 0.0
            self.model.train()
            with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bf16):
                for start in range(0, len(x), batch):
                    chunk = x[start:start + batch]
                    if len(chunk) >= 2:     # a batch of one has no variance
                        self.model(self.data.normalize(chunk))
        finally:
            for m, momentum in zip(layers, momenta):
                m.momentum = momentum
            if drop is not None:
                self.model.drop_path_prob = drop
        return len(x)

    def _one_step(self) -> None:
        if self._graph is not None:
            self._graph.replay()
            return
        if self._try_graph and self._warm >= WARMUP_STEPS:
            graph, reason = cuda_graph.capture(self.step_fn)
            if graph is None:
                self._try_graph = False
                self.graph_fallback = reason
            else:
                self._graph = graph
                self.used_cuda_graph = True
                graph.replay()
                return
        if self._try_graph:
            cuda_graph.warm_up(self.step_fn)
            self._warm += 1
        else:
            self.step_fn()

    def _end_epoch(self, session_start: float, start_step: int,
                   progress: Callable[[Progress], None] | None) -> None:
        spe = self.steps_per_epoch
        epoch = self.step // spe
        losses = self.step_fn.losses[self.step - spe:self.step].float()
        row: dict[str, Any] = {
            "epoch": epoch, "step": self.step,
            "loss": _finite_or_none(float(losses.mean())),
            "train_accuracy": int(self.step_fn.correct.item()) / (spe * self.settings.batch_size),
            "learning_rate": self.learning_rate_at(self.step - 1),
            "drop_path": self.drop_path_at(self.step - 1) if self.has_drop_path else 0.0,
            "seconds": self.seconds + time.perf_counter() - session_start,
        }
        if not self.settings.uses_validation_for_training:
            row["val_accuracy"] = self.validation_accuracy()
        self.metrics.append(row)
        if progress is not None:
            progress(self._progress(session_start, start_step, epoch_done=True))

    def _progress(self, session_start: float, start_step: int, *, epoch_done: bool) -> Progress:
        spe = self.steps_per_epoch
        epoch_start = self.step - spe if epoch_done else self.step - self.step % spe
        done = self.step - epoch_start
        loss = float(self.step_fn.losses[epoch_start:self.step].float().mean()) if done else None
        acc = int(self.step_fn.correct.item()) / (done * self.settings.batch_size) if done else None
        elapsed = time.perf_counter() - session_start
        ran = self.step - start_step
        eta = elapsed / ran * (self.total_steps - self.step) if ran > 0 else None
        val = self.metrics[-1].get("val_accuracy") if epoch_done and self.metrics else None
        return Progress(epoch=self.step // spe, epochs=self.settings.epochs, step=self.step,
                        total_steps=self.total_steps, loss=_finite_or_none(loss) if loss is not None else None,
                        train_accuracy=acc, val_accuracy=val, eta_seconds=eta, epoch_done=epoch_done)

    # ----- evaluation -----
    def validation_accuracy(self) -> float:
        """Accuracy on the validation split (meaningful only when it was held out)."""
        return accuracy(self.model, self.data.val_x, self.data.val_y, self.data, self.settings.eval_batch_size,
                        precision=self.precision)

    def test_accuracy(self) -> float:
        """Accuracy on the test split: call it once, at the end."""
        return accuracy(self.model, self.data.test_x, self.data.test_y, self.data, self.settings.eval_batch_size,
                        precision=self.precision)

    # ----- checkpoints -----
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, meta)``: everything a resumed run needs, as CPU tensors (contiguous,
        safetensors-ready) and a JSON-ready dict. Syncs the device."""
        tensors: dict[str, torch.Tensor] = {}
        for k, v in self.model.state_dict().items():
            tensors[f"model/{k}"] = _cpu(v)
        for i, buf in enumerate(self.optimizer.buffers):
            tensors[f"momentum/{i}"] = _cpu(buf)
        for k, v in self.sampler.state_dict().items():
            tensors[f"sampler/{k}"] = _cpu(v)
        tensors["rng/data"] = self.generator.get_state().clone()
        tensors["rng/cpu"] = torch.get_rng_state().clone()
        if self.device.type == "cuda":
            tensors["rng/cuda"] = torch.cuda.get_rng_state(self.device).clone()
        tensors["losses"] = _cpu(self.step_fn.losses[:max(self.step, 1)])
        tensors["correct"] = _cpu(self.step_fn.correct)
        meta = {"format": STATE_FORMAT, "step": self.step, "total_steps": self.total_steps,
                "steps_per_epoch": self.steps_per_epoch, "seconds": self.seconds, "metrics": self.metrics,
                "settings_hash": self.settings.content_hash(), "momentum_buffers": len(self.optimizer.buffers)}
        return tensors, meta

    def checkpoint_size_bound(self) -> int:
        """An upper bound on the bytes of ``state_to_bytes(*self.state())`` at any step of this
        training: the model's state, the momentum buffers, the sampler's state, every step's
        loss and the random generators' states, plus 512 bytes of header per tensor, 4 KiB of
        metadata per epoch and 1 MiB. A checkpoint commit declaring more is not this
        training's and is not read (the store stops at the declared size)."""
        def size(t: torch.Tensor) -> int:
            return t.numel() * t.element_size()

        tensors = list(self.model.state_dict().values()) + list(self.optimizer.buffers) \
            + list(self.sampler.state_dict().values()) + [self.step_fn.losses, self.step_fn.correct]
        total = sum(size(t) for t in tensors) + size(self.generator.get_state()) + size(torch.get_rng_state())
        return total + 512 * (len(tensors) + 3) + 4096 * self.settings.epochs + 2**20

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Continue from a :meth:`state` of the same model, data and settings.

        ValueError (one line) when the checkpoint does not fit (other settings, another
        architecture or dataset): the caller then starts afresh instead.
        """
        if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
            raise ValueError("checkpoint: unknown format")
        if meta.get("settings_hash") != self.settings.content_hash() or meta.get("total_steps") != self.total_steps \
                or meta.get("steps_per_epoch") != self.steps_per_epoch:
            raise ValueError("checkpoint: taken with other settings or data")
        step = meta.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= self.total_steps:
            raise ValueError("checkpoint: bad step")
        model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        try:
            self.model.load_state_dict(model_state, strict=True)
        except RuntimeError:
            raise ValueError("checkpoint: weights do not fit the architecture") from None
        buffers = self.optimizer.buffers
        if meta.get("momentum_buffers") != len(buffers):
            raise ValueError("checkpoint: optimizer state does not fit")
        with torch.no_grad():
            for i, buf in enumerate(buffers):
                saved = tensors.get(f"momentum/{i}")
                if saved is None or saved.shape != buf.shape:
                    raise ValueError("checkpoint: optimizer state does not fit")
                buf.copy_(saved.to(buf.device))
        self.sampler.load_state_dict({k[len("sampler/"):]: v for k, v in tensors.items()
                                      if k.startswith("sampler/")})
        try:
            self.generator.set_state(tensors["rng/data"])
            torch.set_rng_state(tensors["rng/cpu"])
            if self.device.type == "cuda" and "rng/cuda" in tensors:
                torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)
        except (KeyError, RuntimeError):
            raise ValueError("checkpoint: random generator state does not fit") from None
        losses = tensors.get("losses")
        if losses is None or losses.dim() != 1 or losses.shape[0] < step:
            raise ValueError("checkpoint: loss history does not fit")
        self.step_fn.losses[:step].copy_(losses[:step].to(self.device))
        self.step_fn.step_index.fill_(step)
        self.step_fn.correct.copy_(tensors["correct"].to(self.device))
        self.step = step
        metrics = meta.get("metrics")
        self.metrics = list(metrics) if isinstance(metrics, list) else []
        seconds = meta.get("seconds")
        self.seconds = float(seconds) if is_finite_number(seconds) else 0.0


def state_to_bytes(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """A checkpoint as safetensors bytes (meta as JSON in the header's metadata; never pickle)."""
    from safetensors.torch import save

    return save(tensors, metadata={"evo_checkpoint": json.dumps(meta, sort_keys=True)})


def state_from_bytes(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Inverse of :func:`state_to_bytes`; ValueError (one line) for anything else."""
    from safetensors.torch import load

    from storage import safetensors_problem

    problem = safetensors_problem(blob)
    if problem is not None:
        raise ValueError(f"checkpoint is not readable: {problem}")
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(bytes(blob[8:8 + n]).decode("utf-8"))
    try:
        meta = json.loads((header.get("__metadata__") or {}).get("evo_checkpoint", "null"))
        tensors = load(blob)
    except Exception as exc:  # a damaged blob: any parse error means "not a checkpoint"
        raise ValueError(f"checkpoint is not readable: {type(exc).__name__}") from None
    if not isinstance(meta, dict):
        raise ValueError("checkpoint has no evo metadata")
    return tensors, meta


def _training_split(data: DeviceDataset, settings: FinalSettings) -> DeviceDataset:
    """``data`` whose training split is train + validation when the settings say so."""
    if not settings.uses_validation_for_training:
        return data
    return replace(data, train_x=torch.cat([data.train_x, data.val_x]),
                   train_y=torch.cat([data.train_y, data.val_y]))


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None

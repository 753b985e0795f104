"""Final trainings of a search's best individuals (or named architectures), as restartable,
claimable jobs in the population directory.

A *request* (:func:`evo.train.retrain_request.make_request`) says what to train (a DNA, at which size, from scratch or
from the individual's trained weights), on which dataset and with which
``FinalSettings``; its id is ``{label}-{hash}`` where the hash covers all of it, so the same
request made twice, from anywhere, is one retrain. :class:`RetrainRunner` trains requests:
it claims one in the store (``storage.retrain``: create-if-absent with a lease that its
heartbeat renews), resumes from the newest checkpoint, writes a checkpoint every
``checkpoint_seconds`` and when stopped by a signal, and at the end measures the test
accuracy (the only look at the test split), writes the exported model and the result.
Any number of runners on any machines can work on one population's requests: none trains a
request another live runner holds, and a request whose runner died is taken over after its
lease, from its last checkpoint.

Collaborators are passed in: the store, the model builder (:func:`evo.train.retrain_request.build_model` by default),
the exporter that turns final weights into the files of a torch-only export (the CLI passes
``launch.export.export_files``), the stop signals and a progress callback.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evo.train.final_settings import FinalSettings
from evo.train.retrain_request import (
    REFUSED_DATASET, RefusedRequest, build_model, check_footprint, dataset_allowed, export_architecture,
)
from evo.stopping import StopRequested, StopSignals
from evo.errors import one_line

if TYPE_CHECKING:
    from storage import PopulationStore, RetrainFacet

log = logging.getLogger("evo.train.retrain")

DEFAULT_LEASE = 120.0            # seconds a claim stays valid without a heartbeat
DEFAULT_CHECKPOINT_SECONDS = 300.0


# ----- running -----

@dataclass
class RunReport:
    """What a runner did with one request: ``done`` (this runner finished it; ``result``),
    ``already_done``, ``busy`` (another live runner holds it), ``stopped`` (a signal; a
    checkpoint was written), ``lost`` (another runner took the claim over), ``failed``
    (here; ``error`` says why, one line), ``failed_before`` (an earlier runner's training
    failed; not retried without ``retry_failed``)."""

    rid: str
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None
    resumed_from: int | None = None


@dataclass
class RunnerOptions:
    """How a runner works: the device, the claim's lease, how often it checkpoints, who it
    is (written into its claim and heartbeats) and how often it reports progress.

    ``datasets``: the dataset specs a request may name (the run's own and those given on the
    command line; built-in ``digits`` always); a request naming another is refused before it
    is claimed, and nothing at its path is opened. None: any (callers that made the requests
    themselves)."""

    device: str = "auto"
    lease: float = DEFAULT_LEASE
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    progress_every: int = 50
    retry_failed: bool = False
    owner: dict[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] | None = None


ProgressCallback = Callable[[str, dict[str, Any]], None]


class RetrainRunner:
    """Trains retrain requests of one store; see the module docstring.

    ``exporter(request, architecture, weights, info) -> {file name: bytes}`` writes the
    export's files; ``build`` is :func:`build_model` unless a test passes another;
    ``progress(rid, info)`` gets the progress dict (epoch, loss, accuracy, ETA) and every
    state change; ``stop``: the process's stop signals (checked between steps).
    """

    def __init__(self, store: PopulationStore, *, exporter: Callable[..., dict[str, bytes]],
                 options: RunnerOptions | None = None, build: Callable[..., tuple[Any, bool]] = build_model,
                 progress: ProgressCallback | None = None, stop: StopSignals | None = None,
                 bounds: Any = None) -> None:
        self.store = store
        self.exporter = exporter
        self.options = options or RunnerOptions()
        self.build = build
        self.progress = progress
        self.stop = stop if stop is not None else StopSignals()
        self.bounds = bounds
        self._datasets: dict[str, Any] = {}
        self.owner = {"host": socket.gethostname().split(".")[0][:64], "pid": os.getpid(), **self.options.owner}

    # ----- many -----
    def run_pending(self, rids: list[str] | None = None, done: list[RunReport] | None = None) -> list[RunReport]:
        """Train every request (of ``rids``, else of the store) that is not done and not held
        by a live runner, one after another, until none is left or a stop signal comes.
        Reports are appended to ``done`` (a list the caller keeps if a signal interrupts)."""
        reports = done if done is not None else []
        for rid in rids if rids is not None else self.store.retrains.list_retrains():
            self.stop.check()
            report = self.run(rid)
            reports.append(report)
            if report.status == "stopped":
                break
        return reports

    # ----- one -----
    def run(self, rid: str) -> RunReport:
        """Claim and train request ``rid`` to the end (or until stopped); never raises for a
        bad request or a failed training: the report says what happened."""
        request = self.store.retrains.read_retrain_request(rid)
        if request is None or not isinstance(request, dict):
            problem = getattr(request, "problem", "no such request")
            self._say(rid, {"state": "failed", "error": problem})
            return RunReport(rid, "failed", error=f"{rid}: {problem}")
        try:
            settings = FinalSettings.from_dict(request["settings"])
        except ValueError as exc:
            self._say(rid, {"state": "failed", "error": str(exc)})
            return RunReport(rid, "failed", error=f"{rid}: {exc}")
        if self.options.datasets is not None and not dataset_allowed(request["dataset"], self.options.datasets):
            self._say(rid, {"state": "failed", "error": REFUSED_DATASET})
            return RunReport(rid, "failed", error=f"{rid}: {REFUSED_DATASET}")
        claim = self.store.retrains.claim_retrain(rid, self.owner, self.options.lease,
                                         retry_failed=self.options.retry_failed)
        if claim is None:
            state = self.store.retrains.retrain_state(rid)
            if state.state == "done":
                return RunReport(rid, "already_done", result=state.result)
            if state.state == "failed":
                error = (state.beat or {}).get("info", {}).get("error", "?")
                return RunReport(rid, "failed_before", error=f"{rid}: failed before ({error}); --retry-failed tries again")
            return RunReport(rid, "busy")
        self._say(rid, {"state": "claimed", "claim": claim.n})
        beat = _Beat(self.store.retrains, claim, self.owner, self.options.lease)
        beat.start()
        try:
            with self.stop.critical():
                report = self._train(rid, request, settings, claim, beat)
            if report.status == "stopped":
                self._release(claim, beat)
            return report
        except StopRequested as s:  # before training started: nothing to save
            self._release(claim, beat)
            self._say(rid, {"state": "stopped", "signal": s.signal_name})
            return RunReport(rid, "stopped")
        except Exception as exc:  # a failed retrain costs this request, never the runner
            if isinstance(exc, RefusedRequest):
                log.warning("retrain %s refused: %s", rid, exc)
            else:
                log.exception("retrain %s failed", rid)
            error = one_line(exc, with_type=True)
            beat.halt()
            try:  # so that other runners do not retry it forever (evo retrain --retry-failed does)
                self.store.retrains.retrain_beat(claim, {**self.owner, "state": "failed", "error": error})
            except Exception:
                pass
            self._say(rid, {"state": "failed", "error": error})
            return RunReport(rid, "failed", error=f"{rid}: {error}")
        finally:
            beat.halt()

    def _train(self, rid: str, request: dict[str, Any], settings: FinalSettings, claim: Any, beat: "_Beat") -> RunReport:
        import torch

        from evo.train.evaluator import resolve_device
        from evo.train.final import FinalTraining, state_from_bytes, state_to_bytes

        device = resolve_device(self.options.device)
        if device.type == "cpu" and os.environ.get("OMP_NUM_THREADS", "").isdigit():
            torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
        data = self._dataset(request["dataset"], device)
        train_images = int(data.train_x.shape[0]) + (int(data.val_x.shape[0]) if settings.uses_validation_for_training
                                                     else 0)
        check_footprint(request, batch_size=settings.batch_size, epochs=settings.epochs, train_images=train_images,
                        input_shape=data.input_shape, num_classes=data.num_classes,
                        aux_head=settings.aux_weight > 0, bounds=self.bounds)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            model, has_aux = self.build(request, data.input_shape, data.num_classes,
                                        aux_head=settings.aux_weight > 0, bounds=self.bounds)
        if request["init"] == "weights":
            self._load_parent_weights(model, request)
        training = FinalTraining(model, data, settings, learning_rate=float(request["dna"].get("learning_rate", 0.1)),
                                 seed=settings.seed, device=device, aux_head=has_aux)
        resumed = None
        found = self.store.retrains.load_retrain_checkpoint(rid, max_size=training.checkpoint_size_bound())
        if found is not None:
            commit, blob = found
            try:
                training.restore(*state_from_bytes(blob))
                resumed = training.step
            except ValueError as exc:
                log.warning("retrain %s: checkpoint at step %s not used (%s); starting afresh", rid,
                            commit.get("step"), exc)
        self._say(rid, {"state": "training", "resumed_from": resumed, "total_steps": training.total_steps,
                        "epochs": settings.epochs, "applied": training.applied})
        last_ckpt = [time.monotonic()]
        saved_step = [training.step]

        def save(t: FinalTraining) -> None:
            if not beat.mine or t.step == saved_step[0]:
                return
            saved_step[0] = t.step
            tensors, meta = t.state()
            meta["resumed_from"] = resumed
            self.store.retrains.save_retrain_checkpoint(claim, t.step, state_to_bytes(tensors, meta),
                                               {"epoch": t.step // t.steps_per_epoch})
            last_ckpt[0] = time.monotonic()
            self._say(rid, {"state": "checkpoint", "step": t.step})

        def on_progress(p: Any) -> None:
            info = p.to_dict()
            beat.info = {"state": "training", **info}
            if p.epoch_done and beat.mine:
                self.store.retrains.write_retrain_metrics(claim, training.metrics)
            self._say(rid, {"state": "progress", **info})

        outcome = training.run(
            progress=on_progress, progress_every=self.options.progress_every,
            should_checkpoint=lambda: time.monotonic() - last_ckpt[0] >= self.options.checkpoint_seconds,
            checkpoint=save,
            should_stop=lambda: bool(self.stop.received) or not beat.mine)
        if not beat.mine:
            self._say(rid, {"state": "lost"})
            return RunReport(rid, "lost", resumed_from=resumed)
        if outcome.status == "stopped":
            save(training)
            self._say(rid, {"state": "stopped", "step": training.step, "signal": self.stop.requested})
            return RunReport(rid, "stopped", resumed_from=resumed)
        test = training.test_accuracy()
        weights = _weights_bytes(training.model)
        arch = export_architecture(request, data.input_shape, data.num_classes)
        result = {
            "test_accuracy": test, "diverged": outcome.status == "diverged", "steps": training.step,
            "total_steps": training.total_steps, "epochs": training.step // training.steps_per_epoch,
            "train_seconds": outcome.seconds, "resumed_from": resumed, "applied": training.applied,
            "final_metrics": training.metrics[-1] if training.metrics else None,
            "used_cuda_graph": training.used_cuda_graph, "graph_fallback": training.graph_fallback,
            "device": str(device), "dataset": request["dataset"], "settings": settings.to_dict(),
            "parameters": sum(p.numel() for p in training.model.parameters()), "worker": self.owner,
        }
        info = {"id": rid, "source": request["source"], "dataset": request["dataset"],
                "test_accuracy": test, "settings": settings.to_dict(), "size": request.get("size")}
        files = self.exporter(request, arch, weights, info, data)
        self.store.retrains.write_retrain_metrics(claim, training.metrics)
        if not self.store.retrains.finish_retrain(claim, files, result):
            return RunReport(rid, "already_done", result=self.store.retrains.read_retrain_result(rid))
        self._say(rid, {"state": "done", "test_accuracy": test})
        return RunReport(rid, "done", result=result, resumed_from=resumed)

    def _release(self, claim: Any, beat: "_Beat") -> None:
        """A stopped holder's last heartbeat says ``released``: the next runner may take the
        request over at once (from its checkpoint) instead of waiting out the lease."""
        beat.halt()
        if not beat.mine:
            return
        try:
            self.store.retrains.retrain_beat(claim, {**self.owner, **beat.info, "state": "released"})
        except Exception as exc:  # then the lease runs out instead
            log.warning("retrain %s: claim not released: %s", claim.rid, one_line(exc, with_type=True))

    def _load_parent_weights(self, model: Any, request: dict[str, Any]) -> None:
        """Load the trained weights the request continues from (verified by the store)."""
        from evo.train.evaluator import weights_from_bytes

        ident = request["source"].get("id")
        ind = self.store.population.read_individual(ident) if self.store.population.find(ident) else None
        if ind is None:
            ind = self.store.history.read_kept(ident)
        if ind is None:
            raise ValueError(f"the weights of {ident} are gone (it died without kept weights)")
        if ind.dna_hash != request["dna_hash"]:
            raise ValueError(f"{ident}'s DNA is not the request's")
        model.load_state_dict(weights_from_bytes(ind.weights), strict=True)

    def _dataset(self, spec: str, device: Any) -> Any:
        from evo.data.datasets import load_dataset

        key = f"{spec}@{device}"
        if key not in self._datasets:
            settings = self._run_data_settings(spec)
            self._datasets[key] = load_dataset(spec, device, settings=settings,
                                               cache=None if settings is None else self.store.datacache)
        return self._datasets[key]

    def _run_data_settings(self, spec: str) -> Any:
        """The run's data settings when ``spec`` is the run's own user dataset (then it is read
        through the run's decoded cache, at the size, colour and splits the search had); None
        otherwise (another dataset, or no readable config: its defaults). Only config.json's
        ``dataset`` and ``data`` are read here, each checked as ``evo.config`` checks them."""
        from dna.strict_json import parse_json
        from evo.config_checks import settings_from_dict
        from evo.data.settings import DataSettings
        from evo.data.spec import DatasetSpec

        try:
            parsed = DatasetSpec.parse(spec)
            if not parsed.is_user or not self.store.runinfo.has_config():
                return None
            config = parse_json(self.store.runinfo.read_config(), "config", max_bytes=2**20)
            if not isinstance(config, dict) or str(DatasetSpec.parse(config.get("dataset"))) != str(parsed):
                return None
            return settings_from_dict(DataSettings, config.get("data", {}), "data")
        except Exception as exc:   # the store is untrusted: a config that cannot be read costs this only
            log.warning("retrain: the run's config cannot be read (%s); %s is read with default settings",
                        one_line(exc), spec)
            return None

    def _say(self, rid: str, info: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress(rid, info)


class _Beat(threading.Thread):
    """The claim holder's heartbeat: every lease / 4 seconds it writes ``info`` (progress)
    and checks that no later claim exists; ``mine`` turns False once one does."""

    def __init__(self, retrains: RetrainFacet, claim: Any, owner: dict[str, Any], lease: float) -> None:
        super().__init__(name="evo-retrain-beat", daemon=True)
        self.retrains, self.claim, self.owner = retrains, claim, owner
        self.interval = max(1.0, lease / 4)
        self.info: dict[str, Any] = {"state": "starting"}
        self.mine = True
        self._halt = threading.Event()

    def run(self) -> None:
        while True:
            try:
                if not self.retrains.retrain_still_mine(self.claim):
                    self.mine = False
                    return
                self.retrains.retrain_beat(self.claim, {**self.owner, **self.info, "interval": self.interval})
            except Exception as exc:  # the store may be briefly unreachable: the next beat retries
                log.warning("retrain heartbeat not written: %s", one_line(exc, with_type=True))
            if self._halt.wait(self.interval):
                return

    def halt(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(5.0)


def _weights_bytes(model: Any) -> bytes:
    from evo.train.evaluator import weights_to_bytes

    return weights_to_bytes(model)


def eta_text(seconds: float | None) -> str:
    """``ETA 3m05s`` style text for a number of seconds (``-`` when unknown, negative or over
    a year: a heartbeat read from the store may say anything)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) \
            or not 0 <= seconds <= 366 * 86400:
        return "-"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"

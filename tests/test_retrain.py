"""`evo retrain`: the final-training protocol, its checkpoints, claims and the commands that show it.

Everything runs on the CPU at CI size: NASNet models of one cell per stack and 4 filters on
the digits (8x8), the ``tiny`` preset (two epochs with every protocol feature on). Processes
are real (``evo`` console script, ``OMP_NUM_THREADS=1`` so that CPU results are bit-exact)
and are killed with SIGKILL where the test says so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import storage
from dna.build_nasnet import build_nasnet
from dna.published import published
from evo.data.datasets import load_dataset
from evo.train.final_settings import PAPER, TINY, FinalSettings
from evo.train.final import FinalTraining, state_from_bytes, state_to_bytes

EVO = str(Path(sys.executable).with_name("evo")) if Path(sys.executable).with_name("evo").exists() \
    else shutil.which("evo") or "evo"
SMALL = ["--cells", "1", "--filters", "4"]
DEADLINE = 240.0


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    e.pop("PYTHONPATH", None)
    return e


def evo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([EVO, *args], capture_output=True, text=True, timeout=timeout, env=env())


def ok(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    r = evo(*args, timeout=timeout)
    assert r.returncode == 0, f"evo {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def evo_here(capsys, *args: str) -> str:
    """``evo ARGS`` in this process (no interpreter start-up): its stdout; asserts exit code 0."""
    from launch.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, f"evo {' '.join(args)} failed ({code}): {err}"
    return out


def wait_until(predicate, what: str, deadline: float = DEADLINE, every: float = 0.05):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def only_rid(url: str) -> str:
    rids = storage.open_store(url).retrains.list_retrains()
    assert len(rids) == 1, rids
    return rids[0]


def export_weights(url: str, rid: str) -> bytes:
    result, files = storage.open_store(url).retrains.read_retrain_export(rid)
    return files["weights.safetensors"]


# ----- the protocol, in process -----

def _tiny_training(seed: int = 0, **changes) -> FinalTraining:
    data = load_dataset("digits", "cpu")
    settings = TINY.with_changes(seed=seed, **changes)
    torch.manual_seed(seed)
    model = build_nasnet(published("amoebanet-a"), data.input_shape, data.num_classes, cells_per_stack=1,
                         filters=4, aux_head=True)
    return FinalTraining(model, data, settings, learning_rate=0.1, seed=seed, device="cpu", aux_head=True)


def test_schedules_cosine_and_drop_path_rise_linearly():
    t = _tiny_training()
    n = t.total_steps
    assert t.learning_rate_at(0) == pytest.approx(TINY.learning_rate)
    assert t.learning_rate_at(n // 2) == pytest.approx(TINY.learning_rate / 2)
    assert t.learning_rate_at(n) == pytest.approx(0.0, abs=1e-12)
    assert [t.drop_path_at(s) for s in (0, n // 2, n)] == pytest.approx([0.0, TINY.drop_path / 2, TINY.drop_path])
    applied = t.applied
    for feature in ("cosine", "drop_path", "aux_head", "cutout", "label_smoothing", "grad_clip", "weight_decay"):
        assert applied[feature] is True, feature
    assert applied["training_images"] == 1437   # train + validation of digits
    assert constant_lr() == TINY.learning_rate


def constant_lr() -> float:
    return _tiny_training(schedule="constant").learning_rate_at(7)


@pytest.mark.slow  # trains a NASNet twice over (~50 s on a loaded 2-core machine)
def test_checkpoint_mid_epoch_restores_exactly():
    """state() at a mid-epoch step, restored into a fresh object, ends with the same weights."""
    torch.set_num_threads(1)
    whole = _tiny_training(batch_size=64)
    whole.run()
    stop_at = whole.steps_per_epoch + 5
    part = _tiny_training(batch_size=64)
    part.run(should_stop=lambda: part.step >= stop_at)
    assert part.step == stop_at
    blob = state_to_bytes(*part.state())
    resumed = _tiny_training(batch_size=64)
    resumed.restore(*state_from_bytes(blob))
    assert resumed.step == stop_at
    out = resumed.run()
    assert out.status == "finished" and out.step == whole.total_steps
    for (k, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="other settings"):
        _tiny_training(batch_size=64, epochs=3).restore(*state_from_bytes(blob))
    with pytest.raises(ValueError, match="not readable"):
        state_from_bytes(blob[:100])


def test_settings_are_validated_and_hashed():
    assert FinalSettings.from_dict(PAPER.to_dict()) == PAPER
    assert PAPER.content_hash() != PAPER.with_changes(seed=1).content_hash()
    with pytest.raises(ValueError, match="unknown key"):
        FinalSettings.from_dict({**PAPER.to_dict(), "warmup": 5})
    with pytest.raises(ValueError, match="drop_path"):
        PAPER.with_changes(drop_path=1.0)


# ----- end to end: a tiny run's best -----

@pytest.fixture(scope="module")
def nasnet_run(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("retrain") / "pop")
    ok("init", url, "--dataset", "digits", "--search-space", "nasnet", "-P", "3", "--steps", "5",
       "--nasnet-cells", "1", "--nasnet-filters", "4")
    ok("worker", url, "--max-individuals", "4", "--index", "0", "--quiet")
    return url


@pytest.mark.slow  # the nasnet_run fixture runs a real worker
def test_retrain_of_a_runs_best_with_every_feature_end_to_end(nasnet_run, tmp_path, capsys):
    r = ok("retrain", nasnet_run, "--top", "1", "--preset", "tiny", *SMALL, "--device", "cpu")
    assert "queued" in r.stdout and "protocol: cosine, drop_path, aux_head, cutout, label_smoothing, grad_clip" \
        in r.stdout, r.stdout
    assert "epoch 2/2" in r.stdout and "ETA" in r.stdout
    rid = only_rid(nasnet_run)
    store = storage.open_store(nasnet_run)
    state = store.retrains.retrain_state(rid)
    assert state.state == "done" and state.claims == 1
    result = state.result
    assert 0 <= result["test_accuracy"] <= 1 and result["steps"] == result["total_steps"] == 88
    assert all(result["applied"][k] for k in ("cosine", "drop_path", "aux_head", "cutout", "label_smoothing",
                                              "grad_clip"))
    assert result["settings"] == TINY.to_dict()
    assert [m["epoch"] for m in state.metrics] == [1, 2]
    best = max((json.loads(p.read_text()) for p in (Path(nasnet_run) / "alive").iterdir()),
               key=lambda c: (c["fitness"], -c["birth"]))
    assert state.request["source"]["id"] == best["id"]
    # Asked again: the same request, already done, nothing trained.
    again = evo_here(capsys, "retrain", nasnet_run, "--top", "1", "--preset", "tiny", *SMALL, "--device", "cpu")
    assert "already queued" in again and "from the start" not in again
    # Shown by status and best, checked by check, exported by best --retrained.
    status = json.loads(evo_here(capsys, "status", nasnet_run, "--json"))
    assert [(row["rid"], row["state"], row["test_accuracy"]) for row in status["retrains"]] == \
        [(rid, "done", result["test_accuracy"])]
    assert f"{rid}  done" in evo_here(capsys, "status", nasnet_run)
    assert f"TEST accuracy {result['test_accuracy']:.4f}" in evo_here(capsys, "best", nasnet_run)
    check = evo_here(capsys, "check", nasnet_run, "--deep")
    assert "stray 0" in check and "final trainings 1" in check, check
    out = tmp_path / "final"
    shown = json.loads(evo_here(capsys, "best", nasnet_run, "--retrained", "--export", str(out), "--json"))
    assert shown["rid"] == rid
    evaluated = json.loads(evo_here(capsys, "evaluate", str(out), "--dataset", "digits", "--json"))
    assert evaluated["accuracy"] == pytest.approx(result["test_accuracy"])


@pytest.mark.slow  # the nasnet_run fixture runs a real worker
def test_retrain_refusals_are_one_line(nasnet_run, tmp_path):
    cases = [
        (["retrain", nasnet_run, "--arch", "amoebanet-z"], "unknown architecture"),
        (["retrain", nasnet_run, "--top", "1", "--arch", "nasnet-a"], "choose one of"),
        (["retrain", str(tmp_path / "nothing"), "--arch", "nasnet-a"], "--dataset"),
        (["retrain", nasnet_run, "--top", "1", "--drop-path", "1.5"], "--drop-path"),
        (["retrain", nasnet_run, "--id", "nobody"], "no individual"),
        (["retrain", nasnet_run, "--top", "1", "--from-weights"], "--from-weights"),
    ]
    for args, words in cases:
        r = evo(*args)
        assert r.returncode != 0, args
        err = r.stderr.strip()
        assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err, (args, err)


# ----- preemption and claims -----

def _queue(url: str, *extra: str) -> str:
    ok("retrain", url, "--arch", "amoebanet-a", *SMALL, "--dataset", "digits", "--preset", "tiny",
       "--batch-size", "64", "--no-train", *extra)
    return only_rid(url)


def _pending(url: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([EVO, "retrain", url, "--pending", "--device", "cpu", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())


@pytest.mark.slow  # real retrain processes, killed or racing
def test_sigkill_mid_epoch_resumes_from_the_checkpoint_with_the_same_steps_and_weights(tmp_path):
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    rid = _queue(reference)
    assert _queue(killed) == rid   # the same request: the id covers what is trained, not where
    ok("retrain", reference, "--pending", "--device", "cpu")
    spe = 1437 // 64

    proc = _pending(killed, "--checkpoint-seconds", "0.001", "--lease", "5")
    store = storage.open_store(killed)

    def mid_epoch_checkpoint():
        step = store.retrains.retrain_state(rid).checkpoint_step
        return step if step is not None and step > spe and step % spe else None

    try:
        wait_until(mid_epoch_checkpoint, "a checkpoint in the second epoch")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    at_kill = store.retrains.retrain_state(rid)
    assert at_kill.state in ("training", "stalled") and at_kill.result is None
    # Once the dead holder's lease has run out, the next process takes it over from the checkpoint.
    wait_until(lambda: store.retrains.retrain_state(rid).state in ("stalled", "done"), "the lease to run out", every=0.5)
    resumed = ok("retrain", killed, "--pending", "--device", "cpu")
    assert "resumed from the checkpoint at step" in resumed.stdout, resumed.stdout
    ref, got = (storage.open_store(u).retrains.read_retrain_result(rid) for u in (reference, killed))
    assert got["resumed_from"] is not None and got["resumed_from"] % spe != 0
    assert got["steps"] == ref["steps"] == got["total_steps"]
    assert export_weights(killed, rid) == export_weights(reference, rid)
    assert got["test_accuracy"] == ref["test_accuracy"]
    assert storage.open_store(killed).retrains.retrain_state(rid).claims == 2
    assert not [n for n in os.listdir(Path(killed) / "retrain" / rid) if n.startswith("ckpt-")]


@pytest.mark.slow  # real retrain processes, killed or racing
def test_two_processes_on_one_request_train_it_once(tmp_path):
    url = str(tmp_path / "pop")
    rid = _queue(url)
    procs = [_pending(url) for _ in range(2)]
    outs = [p.communicate(timeout=DEADLINE)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trained = [o for o in outs if "1 trained here" in o]
    assert len(trained) == 1, outs
    state = storage.open_store(url).retrains.retrain_state(rid)
    assert state.state == "done" and state.claims == 1


@pytest.mark.slow  # real retrain processes, killed or racing
def test_sigterm_checkpoints_and_exits_and_the_next_process_resumes_at_once(tmp_path):
    url = str(tmp_path / "pop")
    rid = _queue(url, "--epochs", "200")   # long enough that the signal comes mid-training
    store = storage.open_store(url)

    def start_and_stop(log: Path) -> tuple[int, str]:
        with open(log, "w") as f:
            proc = subprocess.Popen([EVO, "retrain", url, "--pending", "--device", "cpu"], stdout=f,
                                    stderr=subprocess.STDOUT, text=True, env=env())
        try:
            wait_until(lambda: f"{rid}: training" in log.read_text(), "training to start")
            wait_until(lambda: ((store.retrains.retrain_state(rid).beat or {}).get("info") or {}).get("step", 0) > 0
                       or "epoch 1/" in log.read_text(), "a first step", every=0.1)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        return proc.returncode, log.read_text()

    code, out = start_and_stop(tmp_path / "first.log")
    assert code == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM" in out and "checkpoint saved" in out, out
    stopped = store.retrains.retrain_state(rid)
    assert stopped.state == "stopped" and stopped.checkpoint_step and stopped.result is None
    # Released: the next process takes it over at once (no lease to wait out) from that checkpoint.
    code, out = start_and_stop(tmp_path / "second.log")
    assert f"resumed from the checkpoint at step {stopped.checkpoint_step}" in out, out
    assert code == 128 + signal.SIGTERM and store.retrains.retrain_state(rid).claims == 2


# ----- cluster launchers in retrain mode -----

@pytest.mark.slow  # real retrain tasks (submitit's local executor)
def test_slurm_retrain_tasks_train_the_pending_request_once(tmp_path):
    url = str(tmp_path / "pop")
    rid = _queue(url, "--epochs", "1")
    r = evo("launch", "slurm", url, "-n", "2", "--executor", "local", "--retrain", "--device", "cpu",
            "--progress-interval", "1", timeout=DEADLINE)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "submitted 2 retrain task(s)" in r.stdout
    state = storage.open_store(url).retrains.retrain_state(rid)
    assert state.state == "done" and state.claims == 1
    none = evo("launch", "slurm", str(tmp_path / "empty"), "-n", "1", "--executor", "local", "--retrain")
    assert none.returncode != 0 and "no retrain requests" in none.stderr and len(none.stderr.strip().splitlines()) == 1


def test_k8s_retrain_pods_run_the_pending_requests():
    from launch.clusters.k8s import job_manifest

    manifest = job_manifest("gs://b/p", 3, "evo:gpu", gpus_per_worker=1, retrain=True)
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["evo", "retrain", "gs://b/p", "--pending", "--device", "cuda"]
    assert manifest["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "retrain"


def test_batch_norm_statistics_are_recomputed_from_the_final_weights():
    """After the last step every batch-norm layer's running statistics are plain averages
    over the same evenly spread, unaugmented training images (the running averages kept
    while training lag behind moving weights: after a short training the model predicted one
    class in eval mode); the same images give the same statistics on a resume."""
    t = _tiny_training()
    outcome = t.run()
    assert outcome.status == "finished"
    layers = [m for m in t.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert layers and all(m.momentum == 0.1 for m in layers)   # the training's momentum is back
    assert t.model.drop_path_prob == pytest.approx(t.drop_path_at(t.total_steps - 1))
    after_run = [(m.running_mean.clone(), m.running_var.clone()) for m in layers]
    for m in layers:                                 # spoil them, as a lagging average would
        m.running_var.mul_(50.0)
        m.running_mean.add_(3.0)
    used = t.recalibrate_batch_norm()
    assert 0 < used <= len(t.train_data.train_x)
    for (mean, var), m in zip(after_run, layers):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    # a layer's statistics are the average of its batch statistics over those images
    first = layers[0]
    seen = []
    hook = first.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].var((0, 2, 3), unbiased=True)))
    t.recalibrate_batch_norm()
    hook.remove()
    assert torch.allclose(first.running_var, torch.stack(seen).mean(0), rtol=1e-4, atol=1e-6)

"""`evo launch slurm` (through submitit's local executor: real processes) and `evo launch k8s`
(an Indexed Job manifest that the kubernetes client's models accept)."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from helpers_cli import EVO, env, evo

def records(path: Path, folder: str) -> list[dict]:
    d = path / folder
    return [json.loads(p.read_text()) for p in sorted(d.iterdir())] if d.exists() else []


# ----- SLURM through submitit -----

@pytest.mark.slow  # real worker processes
def test_slurm_local_executor_runs_two_workers_that_publish_children(tmp_path):
    pop = tmp_path / "pop"
    r = evo("launch", "slurm", str(pop), "-n", "2", "--executor", "local", "--dataset", "synthetic",
            "-P", "6", "--max-individuals", "10", "--progress-interval", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "submitted 2 worker(s)" in r.stdout and "individuals born 20" in r.stdout
    everyone = records(pop, "alive") + records(pop, "history")
    assert len(everyone) == 20
    children = [c for c in everyone if c["parent"] is not None]
    assert children and all(c["mutation"] != "initial" for c in children)
    ids = {c["id"] for c in everyone}
    assert any(c["parent"] in ids for c in children)
    per_worker = Counter(c["worker"] for c in everyone)
    assert len(per_worker) == 2 and set(per_worker.values()) == {10}
    beats = {b["worker"]: b["info"] for b in records(pop, "workers")}
    assert set(beats) == set(per_worker)
    pids = {b["pid"] for b in beats.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    logs = list((pop / "logs" / "submitit").glob("*_log.out"))
    assert len(logs) == 2  # one per submitit job: they really ran as jobs


@pytest.mark.slow  # real worker processes
def test_slurm_rejoins_an_existing_run_and_refuses_a_different_config(tmp_path):
    pop = tmp_path / "pop"
    assert evo("init", str(pop), "--dataset", "synthetic", "-P", "4").returncode == 0
    r = evo("launch", "slurm", str(pop), "-n", "1", "--executor", "local", "--max-individuals", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(records(pop, "alive") + records(pop, "history")) == 3
    r = evo("launch", "slurm", str(pop), "-n", "1", "--executor", "local", "--dataset", "synthetic", "-P", "9")
    assert r.returncode == 2 and "different config" in r.stderr and r.stderr.count("\n") == 1


def test_slurm_workers_get_the_circuit_breaker(tmp_path, monkeypatch):
    """--max-failed-children reaches each array task's WorkerOptions (the job submitit ran,
    unpickled and called again here with the worker stubbed), and a tripped breaker is in the
    task's result."""
    import inspect
    import pickle
    import signal

    from evo.search import assemble
    from evo.search.worker import WorkerStats

    pop = tmp_path / "pop"
    r = evo("launch", "slurm", str(pop), "-n", "1", "--executor", "local", "--dataset", "synthetic", "-P", "2",
            "--max-individuals", "2", "--max-failed-children", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--max-failed-children 3" in r.stdout  # the resume command keeps it
    (submitted,) = (pop / "logs" / "submitit").glob("*_submitted.pkl")
    with open(submitted, "rb") as f:
        job = pickle.load(f)   # submitit's DelayedSubmission: the WorkerJob and its arguments
    bound = inspect.signature(job.function).bind(*job.args, **job.kwargs)
    assert bound.arguments["max_failed_children"] == 3
    seen = []

    def fake_run_worker(url, options, **kwargs):
        seen.append(options)
        return WorkerStats(worker_id="w", failed="3 children in a row failed (--max-failed-children 3)")

    monkeypatch.setattr(assemble, "run_worker", fake_run_worker)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)}
    try:
        result = job.function(*job.args, **job.kwargs)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert seen[0].max_failed_children == 3
    assert result["failed"] == "3 children in a row failed (--max-failed-children 3)"


def test_slurm_without_a_cluster_is_one_line(tmp_path):
    r = evo("launch", "slurm", str(tmp_path / "pop"), "-n", "2", "--dataset", "synthetic",
            PATH=str(tmp_path))  # no srun/sbatch on this PATH
    assert r.returncode == 2 and "srun" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "pop").exists()  # nothing written before the engine was found


def test_launch_help_names_the_engine_commands():
    r = evo("launch", "slurm", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: evo launch slurm")
    assert "--executor" in r.stdout
    r = evo("launch", "k8s", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: evo launch k8s")


# ----- Kubernetes -----

def to_v1job(manifest: dict):
    """The manifest as the kubernetes client's V1Job, after checking it against the real
    Kubernetes OpenAPI schema (strict: an unknown or misspelt field fails) of the oldest
    version it needs (1.29: backoffLimitPerIndex) and the newest, and that the client's
    models keep every field (a serialization round trip changes nothing)."""
    import kubernetes_validate
    from kubernetes import client

    for version in ("1.29.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(manifest, version, strict=True)
    api = client.ApiClient()
    job = api._ApiClient__deserialize(manifest, "V1Job")
    assert api.sanitize_for_serialization(job) == manifest
    return job


def test_strict_schema_validation_catches_a_misspelt_field():
    import kubernetes_validate

    r = evo("launch", "k8s", "gs://b/p", "-n", "2", "--image", "x", "--dry-run")
    manifest = json.loads(r.stdout)
    to_v1job(manifest)
    manifest["spec"]["backofLimitPerIndex"] = manifest["spec"].pop("backoffLimitPerIndex")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


def test_k8s_manifest_is_a_valid_indexed_job(tmp_path):
    url = "gs://evo-bucket/runs/cifar1"
    out = tmp_path / "job.json"
    r = evo("launch", "k8s", url, "-n", "16", "--image", "us-docker.pkg.dev/p/evo/worker:1", "--gpus-per-worker",
            "1", "--accelerator", "nvidia-l4", "--service-account", "evo-ksa", "--namespace", "research",
            "--max-seconds", "86400", "--dry-run", "-o", str(out))
    assert r.returncode == 0, r.stderr
    manifest = json.loads(out.read_text())
    job = to_v1job(manifest)
    assert job.api_version == "batch/v1" and job.kind == "Job"
    assert job.metadata.name == "evo-workers" and job.metadata.namespace == "research"
    spec = job.spec
    assert spec.completions == spec.parallelism == 16 and spec.completion_mode == "Indexed"
    pod = spec.template.spec
    assert pod.restart_policy == "Never" and pod.service_account_name == "evo-ksa"
    assert spec.backoff_limit_per_index == 4 and spec.backoff_limit is None
    assert pod.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert any(t.key == "nvidia.com/gpu" for t in pod.tolerations)
    (c,) = pod.containers
    assert c.image == "us-docker.pkg.dev/p/evo/worker:1"
    assert c.command[:5] == ["evo", "worker", url, "--device", "cuda"]
    assert c.command[5:] == ["--max-seconds", "86400"]
    assert c.resources.limits["nvidia.com/gpu"] == c.resources.requests["nvidia.com/gpu"] == "1"
    assert {e.name: e.value for e in c.env}["EVO_POPULATION"] == url
    # the worker takes its index from JOB_COMPLETION_INDEX (set by Kubernetes in Indexed Jobs)
    assert "--index" not in c.command


def test_k8s_workers_get_the_circuit_breaker():
    r = evo("launch", "k8s", "gs://b/p", "-n", "2", "--image", "x", "--gpus-per-worker", "0",
            "--max-failed-children", "3", "--dry-run")
    assert r.returncode == 0, r.stderr
    command = json.loads(r.stdout)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["evo", "worker", "gs://b/p"]
    assert command[command.index("--max-failed-children") + 1] == "3"
    r = evo("launch", "k8s", "gs://b/p", "-n", "2", "--image", "x", "--dry-run", "--retrain",
            "--max-failed-children", "3")
    assert r.returncode == 2 and "not --retrain pods" in r.stderr and r.stderr.count("\n") == 1


def test_k8s_cpu_workers_to_stdout():
    r = evo("launch", "k8s", "gs://b/p", "-n", "3", "--image", "evo:cpu", "--gpus-per-worker", "0", "--dry-run")
    assert r.returncode == 0, r.stderr
    job = to_v1job(json.loads(r.stdout))
    pod = job.spec.template.spec
    (c,) = pod.containers
    assert c.command[3:5] == ["--device", "cpu"] and pod.restart_policy == "Never"
    assert "nvidia.com/gpu" not in (c.resources.limits or {}) and not pod.tolerations
    assert job.spec.completions == job.spec.parallelism == 3


@pytest.mark.slow  # real worker processes
def test_k8s_worker_really_reads_its_index_from_job_completion_index(tmp_path):
    """The manifest's command, run as Kubernetes runs pod 1 (JOB_COMPLETION_INDEX=1), twice:
    the same index gives the same seed stream (the same fitness noise); no index, fresh entropy."""
    r = evo("launch", "k8s", "POPULATION", "-n", "2", "--image", "x", "--gpus-per-worker", "0",
            "--max-individuals", "3", "--dry-run")
    command = json.loads(r.stdout)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["evo", "worker", "POPULATION"]

    def run_pod(name: str, **extra: str) -> list[float]:
        pop = tmp_path / name
        assert evo("init", str(pop), "--dataset", "synthetic", "-P", "3", "--seed", "5").returncode == 0
        argv = [EVO, "worker", str(pop)] + command[3:]
        done = subprocess.run(argv, env=env(**extra), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return sorted(c["fitness"] for c in records(pop, "alive") + records(pop, "history"))

    first = run_pod("a", JOB_COMPLETION_INDEX="1")
    assert len(first) == 3
    assert run_pod("b", JOB_COMPLETION_INDEX="1") == first
    assert run_pod("c", JOB_COMPLETION_INDEX="2") != first
    assert run_pod("d") != first


def test_k8s_preemptions_do_not_exhaust_the_job_and_spot_options():
    r = evo("launch", "k8s", "gs://b/p", "-n", "4", "--image", "x", "--accelerator", "nvidia-l4", "--spot",
            "--node-selector", "cloud.google.com/gke-nodepool=evo-pool", "--node-selector", "tier=batch",
            "--ephemeral-storage", "20Gi", "--backoff-limit-per-index", "2", "--dry-run")
    assert r.returncode == 0, r.stderr
    job = to_v1job(json.loads(r.stdout))
    spec, pod = job.spec, job.spec.template.spec
    assert spec.backoff_limit_per_index == 2 and pod.restart_policy == "Never"
    rules = spec.pod_failure_policy.rules
    # a disrupted pod (Spot preemption, eviction, drain) is replaced without counting as a failure
    assert rules[0].action == "Ignore" and [(c.type, c.status) for c in rules[0].on_pod_conditions] == \
        [("DisruptionTarget", "True")]
    # a worker that stopped cleanly on SIGTERM (exit 143) is not at fault either; a bad config (2) is final
    assert (rules[1].action, rules[1].on_exit_codes.values) == ("Ignore", [143])
    assert (rules[2].action, rules[2].on_exit_codes.values) == ("FailIndex", [2])
    assert pod.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4", "cloud.google.com/gke-spot": "true",
                                 "cloud.google.com/gke-nodepool": "evo-pool", "tier": "batch"}
    assert [(t.key, t.value, t.effect) for t in pod.tolerations] == [
        ("nvidia.com/gpu", None, "NoSchedule"), ("cloud.google.com/gke-spot", "true", "NoSchedule")]
    assert pod.containers[0].resources.requests["ephemeral-storage"] == "20Gi"


@pytest.mark.slow  # real worker processes
def test_worker_exit_codes_match_the_pod_failure_policy(tmp_path):
    """The exit codes the policy names are the ones evo worker really gives: 143 after a
    clean SIGTERM stop, 2 for a population that does not exist."""
    from launch.clusters import k8s

    r = evo("worker", str(tmp_path / "none"))
    assert r.returncode == k8s.EXIT_USER_ERROR and r.stderr.count("\n") == 1
    pop = tmp_path / "pop"
    assert evo("init", str(pop), "--dataset", "synthetic", "-P", "2", "--synthetic-train-seconds", "30").returncode == 0
    proc = subprocess.Popen([EVO, "worker", str(pop)], env=env(), stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: heartbeat_state(pop) == "training", 60)
        proc.terminate()
        assert proc.wait(timeout=30) == k8s.EXIT_STOPPED_BY_SIGTERM
    finally:
        proc.kill()
        proc.wait()


def wait_for(condition, seconds: float, what: str = "condition"):
    import time

    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def heartbeat_state(pop: Path) -> str | None:
    """State in the (single) worker's heartbeat; None before it exists."""
    beats = [p for p in (pop / "workers").glob("*.json") if not p.name.startswith(".")] \
        if (pop / "workers").exists() else []
    return json.loads(beats[0].read_text())["info"]["state"] if beats else None


@pytest.mark.parametrize("args, words", [
    (["--name", "Bad_Name"], "bad job name"),
    (["--env", "no-equals"], "NAME=VALUE"),
    (["--node-selector", "no-equals"], "KEY=VALUE"),
    (["--node-selector", "bad key=x"], "not a valid Kubernetes label"),
    (["--ephemeral-storage", "lots"], "quantity"),
    (["--backoff-limit-per-index", "-1"], "backoff-limit-per-index"),
])
def test_k8s_bad_options_are_one_line(args, words):
    r = evo("launch", "k8s", "gs://b/p", "-n", "2", "--image", "x", "--dry-run", *args)
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1


def test_k8s_apply_needs_a_population(tmp_path):
    r = evo("launch", "k8s", str(tmp_path / "none"), "-n", "2", "--image", "x")
    assert r.returncode == 2 and "no config.json" in r.stderr

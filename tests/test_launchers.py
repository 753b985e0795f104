"""`evo launch slurm` (through submitit's local executor: real processes) and `evo launch k8s`
(an Indexed Job manifest that the kubernetes client's models accept)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

EVO = str(Path(sys.executable).with_name("evo")) if Path(sys.executable).with_name("evo").exists() \
    else shutil.which("evo") or "evo"  # the installed console script


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    for name in ("PYTHONPATH", "EVO_WORKER_INDEX", "JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID"):
        e.pop(name, None)  # a worker index from the caller's environment would defeat the index test
    e.update(extra)
    return e


def evo(*args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([EVO, *args], capture_output=True, text=True, timeout=timeout, env=env(**extra))


def records(path: Path, folder: str) -> list[dict]:
    d = path / folder
    return [json.loads(p.read_text()) for p in sorted(d.iterdir())] if d.exists() else []


# ----- SLURM through submitit -----

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


def test_slurm_rejoins_an_existing_run_and_refuses_a_different_config(tmp_path):
    pop = tmp_path / "pop"
    assert evo("init", str(pop), "--dataset", "synthetic", "-P", "4").returncode == 0
    r = evo("launch", "slurm", str(pop), "-n", "1", "--executor", "local", "--max-individuals", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(records(pop, "alive") + records(pop, "history")) == 3
    r = evo("launch", "slurm", str(pop), "-n", "1", "--executor", "local", "--dataset", "synthetic", "-P", "9")
    assert r.returncode == 2 and "different config" in r.stderr and r.stderr.count("\n") == 1


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
    from kubernetes import client

    return client.ApiClient()._ApiClient__deserialize(manifest, "V1Job")


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
    assert pod.restart_policy == "OnFailure" and pod.service_account_name == "evo-ksa"
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


def test_k8s_cpu_workers_to_stdout():
    r = evo("launch", "k8s", "gs://b/p", "-n", "3", "--image", "evo:cpu", "--gpus-per-worker", "0",
            "--restart-policy", "Never", "--dry-run")
    assert r.returncode == 0, r.stderr
    job = to_v1job(json.loads(r.stdout))
    pod = job.spec.template.spec
    (c,) = pod.containers
    assert c.command[3:5] == ["--device", "cpu"] and pod.restart_policy == "Never"
    assert "nvidia.com/gpu" not in (c.resources.limits or {}) and not pod.tolerations
    assert job.spec.completions == job.spec.parallelism == 3


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


@pytest.mark.parametrize("args, words", [
    (["--name", "Bad_Name"], "bad job name"),
    (["--restart-policy", "Always"], "OnFailure or Never"),
    (["--env", "no-equals"], "NAME=VALUE"),
])
def test_k8s_bad_options_are_one_line(args, words):
    r = evo("launch", "k8s", "gs://b/p", "-n", "2", "--image", "x", "--dry-run", *args)
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1


def test_k8s_apply_needs_a_population(tmp_path):
    r = evo("launch", "k8s", str(tmp_path / "none"), "-n", "2", "--image", "x")
    assert r.returncode == 2 and "no config.json" in r.stderr

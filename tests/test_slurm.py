"""`evo launch slurm` on a real single-node SLURM cluster (slurmctld + slurmd + munge, started
by the ``slurm_cluster`` fixture): jobs go through sbatch, srun and submitit exactly as on a
real cluster, and SLURM itself delivers scancel's SIGTERM and the pre-timeout USR2.

- scancel of one task of a 2-worker array: that worker stops cleanly within seconds (final
  ``stopped`` heartbeat), nothing is lost (evo check, evo audit), the other keeps publishing;
- a 1-minute time limit and no --max-seconds: the USR2 stops the worker cleanly, no failed
  child, not requeued; with --requeue submitit requeues the task;
- a request larger than any node: `--wait` stops with the pending reason, `evo status` names it.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from helpers_cli import EVO, beats, env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # a real SLURM cluster


def evo_on(cluster, *args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run evo with the test cluster's SLURM_CONF (sbatch, squeue and the jobs all see it)."""
    e = env(SLURM_CONF=str(cluster.conf), PATH=cluster.env()["PATH"])
    return subprocess.run([EVO, *args], capture_output=True, text=True, timeout=timeout, env=e, cwd=cwd)


def launch(cluster, tmp_path: Path, pop: Path, *args: str, train_seconds: float = 1.0) -> subprocess.CompletedProcess:
    return evo_on(cluster, "launch", "slurm", str(pop), "--dataset", "synthetic", "-P", "4",
                  "--synthetic-train-seconds", str(train_seconds), "--cpus-per-worker", "1", "--mem-gb", "0.5",
                  "--progress-interval", "2", *args, cwd=tmp_path)


def array_id(stdout: str) -> str:
    m = re.search(r"job (\d+)(_\d+)?", stdout)
    assert m, stdout
    return m.group(1)


def slurm_beats(pop: Path) -> dict[str, dict]:
    """array task id -> heartbeat info of the worker that ran it (a one-task launch is a
    plain job, not an array: task "0")."""
    return {b["scheduler"].get("array_task_id", "0"): b for b in beats(pop).values()
            if b.get("scheduler", {}).get("kind") == "slurm"}


def born(pop: Path) -> int:
    return sum(len([p for p in (pop / d).glob("*.json")]) for d in ("alive", "history") if (pop / d).exists())


def job_field(cluster, job_id: str, name: str) -> str:
    out = cluster.run("scontrol", "show", "job", job_id).stdout
    m = re.search(rf"\b{name}=(\S+)", out)
    assert m, out
    return m.group(1)


def test_scancel_of_one_task_stops_its_worker_cleanly_and_the_other_goes_on(slurm, tmp_path):
    pop = tmp_path / "pop"
    r = launch(slurm, tmp_path, pop, "-n", "2", "--no-wait")
    assert r.returncode == 0, r.stderr
    job = array_id(r.stdout)
    assert json.loads((pop / "launches" / f"slurm-{job}.json").read_text())["info"]["job_id"] == job
    wait_for(lambda: len(b := slurm_beats(pop)) == 2 and all(x["individuals"] >= 1 for x in b.values()), 120,
             "both array tasks publishing")

    assert slurm.run("scancel", f"{job}_1").returncode == 0
    stopped = wait_for(lambda: (b := slurm_beats(pop).get("1")) and b["state"] == "stopped" and b, 15,
                       "task 1's stopped heartbeat")
    assert stopped["stopped_by"] == "SIGTERM" and stopped["failures"] == 0
    assert stopped["scheduler"]["array_job_id"] == job
    other = slurm_beats(pop)["0"]
    assert other["state"] != "stopped"
    wait_for(lambda: slurm_beats(pop)["0"]["individuals"] >= other["individuals"] + 2, 60,
             "task 0 publishing after task 1 was cancelled")

    # submitit's lines and the worker's appear once each in the task's log
    log = Path(stopped["log"]).read_text()
    assert log.count("Starting with JobEnvironment") == 1 and log.count("stopping on SIGTERM") == 1, log

    assert slurm.run("scancel", job).returncode == 0
    wait_for(lambda: all(b["state"] == "stopped" for b in slurm_beats(pop).values()), 15, "task 0 stopped")
    wait_for(lambda: not slurm.queue(), 30, "the array to leave the queue")
    check = evo_on(slurm, "check", str(pop), "--json", cwd=tmp_path)
    assert check.returncode == 0 and json.loads(check.stdout)["ok"], check.stdout
    audit = evo_on(slurm, "audit", str(pop), "--json", cwd=tmp_path)
    report = json.loads(audit.stdout)
    assert audit.returncode == 0 and report["ok"] and report["born"] == born(pop), report["problems"]
    assert sum(b["failures"] for b in slurm_beats(pop).values()) == 0


def test_a_time_limit_stops_the_worker_cleanly_without_requeue(slurm, tmp_path):
    pop = tmp_path / "pop"
    r = launch(slurm, tmp_path, pop, "-n", "1", "--time-min", "1", "--wait", train_seconds=2.0)
    assert r.returncode == 0, r.stdout + r.stderr
    job = array_id(r.stdout)
    assert "workers stop starting children after" not in r.stdout   # no default under 10 minutes
    assert f"resume it with: evo launch slurm {pop} -n 1 " in r.stdout and "--time-min 1" in r.stdout
    (beat,) = slurm_beats(pop).values()
    # SLURM sent USR2 (submitit's pre-timeout signal) well before the limit: a clean stop
    assert beat["state"] == "stopped" and beat["stopped_by"] == "SIGUSR2" and beat["failures"] == 0
    assert beat["scheduler"]["job_id"] == job    # one task: submitit submits a plain job
    assert job_field(slurm, job, "Restarts") == "0"
    assert job_field(slurm, job, "JobState") == "COMPLETED"
    assert "Requeued" not in Path(beat["log"]).read_text()


@pytest.mark.slow  # waits for SLURM's time-limit signal (up to ~30 s); the path without requeue is in the quick suite
def test_requeue_after_the_time_limit_goes_through_submitit(slurm, tmp_path):
    pop = tmp_path / "pop"
    r = launch(slurm, tmp_path, pop, "-n", "1", "--time-min", "1", "--requeue", "--no-wait")
    assert r.returncode == 0, r.stderr
    task = array_id(r.stdout)
    wait_for(lambda: job_field(slurm, task, "Restarts") == "1", 120, "the task to be requeued")
    (beat,) = slurm_beats(pop).values()
    assert beat["state"] == "stopped" and beat["stopped_by"] == "SIGUSR2" and beat["failures"] == 0
    assert "Requeued job" in Path(beat["log"]).read_text()


def test_a_request_larger_than_any_node_is_reported_pending_with_its_reason(slurm, tmp_path):
    pop = tmp_path / "pop"
    r = launch(slurm, tmp_path, pop, "-n", "2", "--cpus-per-worker", "64", "--wait")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "PartitionConfig" in r.stderr and "never clears" in r.stderr, r.stderr
    job = array_id(r.stdout)
    assert f"scancel {job}" in r.stderr
    status = evo_on(slurm, "status", str(pop), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if x.startswith(f"slurm job {job}:"))
    assert "2 pending" in line and "PartitionConfig, which never clears" in line
    report = json.loads(evo_on(slurm, "status", str(pop), "--json", cwd=tmp_path).stdout)
    (entry,) = report["slurm_jobs"]
    assert entry["job_id"] == job and entry["states"] == {"PENDING": 2} and "PartitionConfig" in entry["never_starts"]
    # without squeue on PATH, status says nothing about SLURM
    plain = subprocess.run([EVO, "status", str(pop), "--json"], capture_output=True, text=True, timeout=60,
                           env=env(PATH=str(Path(EVO).parent)), cwd=tmp_path)
    assert plain.returncode == 0 and json.loads(plain.stdout)["slurm_jobs"] is None, plain.stderr

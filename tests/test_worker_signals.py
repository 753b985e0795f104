"""Stopping workers cleanly and telling live workers from lost ones.

Real `evo worker` / `evo launch` processes and real signals: SIGTERM, SIGHUP, SIGINT,
SIGUSR2 stop a worker within a second with a final ``stopped`` heartbeat, the child in
training abandoned and never counted as a failure; a publish in progress finishes first;
heartbeats go on while the main thread is busy; a SIGKILLed worker shows as lost after a
few missed heartbeats; SIGTERM/SIGHUP/SIGKILL of `evo launch` stops its workers. (SLURM's
own signals are tested against a real cluster in test_slurm.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from evo.config import RunConfig
from evo.train.synthetic import SyntheticSettings
from evo.stopping import StopSignals
from evo.search.assemble import open_worker
from evo.spaces import make_space
from evo.search.heartbeat import scheduler_identity
from evo.search.worker import WorkerOptions
from storage import open_store
from helpers_cli import EVO, beats, env, evo, wait_for

pytestmark = pytest.mark.timeout(300)


def born(pop: Path) -> int:
    return sum(len(list((pop / d).glob("*.json"))) for d in ("alive", "history") if (pop / d).exists())


def init_synthetic(pop: Path, train_seconds: float, P: int = 2) -> None:
    r = evo("init", str(pop), "--dataset", "synthetic", "-P", str(P), "--synthetic-train-seconds", str(train_seconds))
    assert r.returncode == 0, r.stderr


def start_worker(pop: Path, *args: str, log: Path | None = None, **extra: str) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen([EVO, "worker", str(pop), "--heartbeat-seconds", "0.5", *args],
                                env=env(**extra), stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log:
            out.close()


@pytest.mark.slow  # real worker processes and signals
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR2])
def test_a_signal_stops_a_training_worker_cleanly(tmp_path, sig):
    pop = tmp_path / "pop"
    init_synthetic(pop, train_seconds=60)
    log = tmp_path / "worker.log"
    proc = start_worker(pop, log=log)
    try:
        wait_for(lambda: any(b["state"] == "training" for b in beats(pop).values()), 60, "training")
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 128 + sig   # well before the 60 s child would end
    finally:
        proc.kill()
        proc.wait()
    (beat,) = beats(pop).values()
    assert beat["state"] == "stopped" and beat["stopped_by"] == sig.name
    assert beat["failures"] == 0 and beat["individuals"] == 0
    assert born(pop) == 0                      # the child in training was abandoned, not published
    assert not list((pop / "payload").glob("*")) if (pop / "payload").exists() else True
    assert f"stopped by {sig.name}" in log.read_text()
    check = evo("check", str(pop), "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["ok"], check.stdout


def _synthetic_store(url: str, P: int = 2) -> None:
    config = RunConfig(dataset="synthetic", population_size=P, seed=1,
                       plugins={"synthetic": SyntheticSettings(train_seconds=0.0, weight_bytes=64)})
    assert open_store(url).runinfo.init_config(config.to_json())


def test_a_signal_between_publish_and_kill_waits_for_the_kill(tmp_path):
    """The signal arrives after a child is published and before its victim is killed: the
    kill still happens (the population is back at P), then the worker stops."""
    url = str(tmp_path / "pop")
    _synthetic_store(url)
    with StopSignals([signal.SIGUSR1]) as stop:
        worker = open_worker(url, WorkerOptions(max_individuals=50, heartbeat_interval=0.5), stop=stop)
        real_kill = worker.population.kill

        def kill_after_a_signal(*args, **kwargs):
            if not stop.received:
                os.kill(os.getpid(), signal.SIGUSR1)   # handled right here, between publish and kill
                assert stop.received == ["SIGUSR1"]
            return real_kill(*args, **kwargs)

        worker.population.kill = kill_after_a_signal
        stats = worker.run()
    assert stats.stopped_by == "SIGUSR1"
    assert stats.published == 3 and stats.killed == 1    # 2 seeds, then one child and its victim's kill
    store = open_store(url)
    assert len(store.population.list_alive()) == 2 and store.history.count_history() == 1
    assert store.runinfo.list_workers()[0]["info"]["state"] == "stopped"


class BlockingEvaluator:
    """Trains 'forever' without ever calling progress(), like a worker loading a big dataset
    or inside one long step; released by the test."""

    device_name = "blocking"

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Event()

    def prepare(self):
        pass

    def evaluate(self, child, **kwargs):
        from evo.train.synthetic import SyntheticEvaluator

        self.entered.set()
        self.release.wait(60)
        config = RunConfig(dataset="synthetic", plugins={"synthetic": SyntheticSettings(train_seconds=0.0, weight_bytes=64)})
        return SyntheticEvaluator(make_space(config), config.settings_of("synthetic")).evaluate(child, **kwargs)


def test_heartbeats_go_on_while_the_main_thread_is_busy(tmp_path):
    url = str(tmp_path / "pop")
    _synthetic_store(url)
    evaluator = BlockingEvaluator()
    worker = open_worker(url, WorkerOptions(max_individuals=1, heartbeat_interval=0.2), evaluator=evaluator)
    store = open_store(url)
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        assert evaluator.entered.wait(30)
        seen = set()

        def beats_while_training():
            for b in store.runinfo.list_workers():
                if b["info"]["state"] == "training":
                    seen.add(b["time"])
            return len(seen) >= 4

        wait_for(beats_while_training, 30, "heartbeats during a long training step")
    finally:
        evaluator.release.set()
        runner.join(30)
    (beat,) = store.runinfo.list_workers()
    assert beat["info"]["state"] == "stopped" and beat["info"]["interval"] == 0.2
    assert beat["info"]["individuals"] == 1 and not runner.is_alive()


def status_of(pop: Path, worker_id: str) -> dict:
    r = evo("status", str(pop), "--json")
    assert r.returncode == 0, r.stderr
    return next(w for w in json.loads(r.stdout)["workers"] if w["worker"] == worker_id)


@pytest.mark.slow  # real worker processes and signals
def test_a_killed_worker_is_lost_after_a_few_missed_heartbeats(tmp_path):
    pop = tmp_path / "pop"
    init_synthetic(pop, train_seconds=60)
    log = tmp_path / "w.log"
    proc = start_worker(pop, log=log, SLURM_JOB_ID="77", SLURM_ARRAY_JOB_ID="70", SLURM_ARRAY_TASK_ID="3")
    try:
        wid = wait_for(lambda: next(iter(beats(pop)), None), 60, "a heartbeat")
        row = status_of(pop, wid)
        assert row["status"] == "active" and row["heartbeat_interval"] == 0.5 and row["lost_after"] == 2.5
        assert row["job"] == "slurm 70_3" and row["log"] == str(log)
        text = evo("status", str(pop)).stdout
        assert "slurm 70_3" in text and str(log) in text
        proc.kill()
        proc.wait()
        row = wait_for(lambda: (r := status_of(pop, wid))["status"] == "lost" and r, 60, "the worker shown as lost")
        assert row["silent_s"] > row["lost_after"] and row["state"] != "stopped"
        assert "LOST" in evo("status", str(pop)).stdout
    finally:
        proc.kill()
        proc.wait()


def test_scheduler_identity_from_the_environment():
    assert scheduler_identity({}) == {}
    assert scheduler_identity({"SLURM_JOB_ID": "12"}) == {"kind": "slurm", "job_id": "12"}
    assert scheduler_identity({"SLURM_JOB_ID": "15", "SLURM_ARRAY_JOB_ID": "14", "SLURM_ARRAY_TASK_ID": "0"}) == \
        {"kind": "slurm", "job_id": "15", "array_job_id": "14", "array_task_id": "0"}
    assert scheduler_identity({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "evo-workers-2-x7k",
                               "JOB_COMPLETION_INDEX": "2"}) == \
        {"kind": "kubernetes", "pod": "evo-workers-2-x7k", "index": "2"}


@pytest.mark.slow  # real worker processes and signals
@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "SIGKILL"])
def test_stopping_the_local_launcher_stops_its_workers(tmp_path, how):
    """SIGTERM/SIGHUP: the launcher stops its workers and exits 128+signal. SIGKILL: it
    cannot clean up, and each worker gets SIGTERM from the kernel (parent-death signal)."""
    pop = tmp_path / "pop"
    init_synthetic(pop, train_seconds=60)
    launcher = subprocess.Popen([EVO, "launch", str(pop), "-n", "2", "--progress-interval", "1"], env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: sum(b["state"] == "training" for b in beats(pop).values()) == 2, 60, "2 workers training")
        launcher.send_signal(getattr(signal, how))
        code = launcher.wait(timeout=60)
        out = launcher.stdout.read()
    finally:
        launcher.kill()
        launcher.wait()
    if how != "SIGKILL":
        assert code == 128 + getattr(signal, how) and f"stopping workers ({how})" in out, out
    final = wait_for(lambda: (b := beats(pop)) and all(x["state"] == "stopped" for x in b.values()) and b, 30,
                     "both workers stopped")
    assert len(final) == 2
    for b in final.values():
        assert b["stopped_by"] == "SIGTERM" and b["failures"] == 0
        wait_for(lambda: _gone(b["pid"]), 10, f"worker {b['pid']} to exit")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie of an exited child counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_launch_records_round_trip_on_every_backend(store_url):
    store = open_store(store_url)
    assert store.runinfo.list_launches() == []
    store.runinfo.record_launch("slurm-123", {"kind": "slurm", "job_id": "123", "tasks": 2})
    store.runinfo.record_launch("slurm-124", {"kind": "slurm", "job_id": "124", "tasks": 1})
    store.runinfo.record_launch("slurm-123", {"kind": "slurm", "job_id": "123", "tasks": 4})   # overwrites
    recs = store.runinfo.list_launches()
    assert [(r["name"], r["info"]["tasks"]) for r in recs] == [("slurm-123", 4), ("slurm-124", 1)]
    store.backend.write("launches/broken.json", b"{not json")
    assert len(store.runinfo.list_launches()) == 2                 # an unreadable record is skipped
    with pytest.raises(ValueError):
        store.runinfo.record_launch("../escape", {})


def test_pending_reasons_that_never_clear():
    from launch.clusters.squeue import describe, never_starts, summarize_jobs, QueuedTask

    for reason in ("PartitionConfig", "PartitionTimeLimit", "BadConstraints", "InvalidQOS",
                   "QOSMaxWallDurationPerJobLimit", "AssocMaxCpuPerJobLimit", "QOSMinGRES"):
        assert never_starts(reason), reason
    for reason in ("Resources", "Priority", "None", "BeginTime", "Dependency", "QOSGrpCpuLimit",
                   "AssocGrpNodeLimit", "ReqNodeNotAvail, UnavailableNodes:n1", "JobHeldUser"):
        assert never_starts(reason) is None, reason
    (job,) = summarize_jobs([QueuedTask("9_0", "RUNNING", "None"), QueuedTask("9_1", "PENDING", "Resources")])
    assert job["states"] == {"RUNNING": 1, "PENDING": 1} and job["never_starts"] == {}
    assert describe(job) == "slurm job 9: 1 pending, 1 running; pending reason Resources"

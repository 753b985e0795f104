"""A real single-node SLURM cluster (Debian's slurmctld, slurmd, munge) for tests.

Everything lives in one directory: slurm.conf, a fresh munge key and socket, the daemons'
state, spool and logs, on free ports, so that it never touches (or collides with) a
system cluster or another test session on the same machine. Clients reach it through
``SLURM_CONF`` in :meth:`SlurmCluster.env`. The daemons are started and stopped by PID.

``.ci/run`` installs the packages with apt-get; :func:`missing` says why a cluster cannot
start here (the tests skip with that reason).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "slurmstepd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
SBIN = ("/usr/sbin", "/sbin")


def which(name: str) -> str | None:
    """A SLURM/munge program on PATH or in /usr/sbin (daemons live there)."""
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN:
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def missing() -> str | None:
    """Why a SLURM cluster cannot start on this machine (None when it can)."""
    absent = [n for n in DAEMONS if which(n) is None]
    if absent:
        return (f"SLURM is not installed ({', '.join(absent)} not found); .ci/run installs slurmctld, slurmd, "
                "slurm-client and munge with apt-get when it runs as root")
    if os.geteuid() != 0:
        return "the test SLURM cluster runs its daemons as root (SlurmUser=root); not root here"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF = """\
ClusterName={cluster}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/ctld
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/builtin
ReturnToService=2
# scancel: SIGTERM, then SIGKILL after KillWait seconds (30 on a default cluster)
KillWait={kill_wait}
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class SlurmError(RuntimeError):
    """The test cluster did not come up; the message says which daemon and its log's tail."""


class SlurmCluster:
    """slurmctld + slurmd + munged of one private cluster rooted at ``root``."""

    def __init__(self, root: Path, *, cpus: int = 2, memory_mb: int = 4000, kill_wait: int = 3):
        self.root = Path(root)
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.kill_wait = kill_wait
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self) -> dict[str, str]:
        """Environment for SLURM clients (and submitit) that talk to this cluster."""
        e = dict(os.environ)
        e["SLURM_CONF"] = str(self.conf)
        e["PATH"] = os.pathsep.join([e.get("PATH", ""), *SBIN])
        return e

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=self.env())

    def start(self, deadline_s: float = 60) -> None:
        """Write the configuration, start munged, slurmctld and slurmd; wait until the node is idle."""
        for d in ("munge", "ctld", "spool"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self.conf.write_text(CONF.format(
            cluster=f"evo{uuid.uuid4().hex[:8]}", ctld_port=_free_port(), d_port=_free_port(), root=self.root,
            kill_wait=self.kill_wait, cpus=self.cpus, memory_mb=self.memory_mb))
        m = self.root / "munge"
        self._spawn("munged", [which("munged"), "-F", "--force", f"--key-file={key}", f"--socket={m}/munge.socket",
                               f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log",
                               f"--seed-file={m}/munged.seed"])
        self._wait_for(lambda: (m / "munge.socket").exists(), "munged", m / "munged.log", 15)
        self._spawn("slurmctld", [which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait_for(lambda: self.run("scontrol", "ping", timeout=10).stdout.count("UP") > 0,
                       "slurmctld", self.root / "slurmctld.log", deadline_s)
        self._spawn("slurmd", [which("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)])
        self._wait_for(self._node_idle, "slurmd", self.root / "slurmd.log", deadline_s)

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%t", timeout=10).stdout.split()
        return bool(out) and all(s.rstrip("*") == "idle" for s in out)

    def _spawn(self, name: str, argv: list) -> None:
        log = open(self.root / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
        log.close()

    def _wait_for(self, ready, name: str, log: Path, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while True:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise SlurmError(f"{name} exited with {proc.returncode}: {self._tail(name, log)}")
            try:
                if ready():
                    return
            except (OSError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise SlurmError(f"{name} not ready after {deadline_s:.0f} s: {self._tail(name, log)}")
            time.sleep(0.2)

    def _tail(self, name: str, log: Path) -> str:
        text = ""
        for p in (self.root / f"{name}.out", log):
            if p.exists():
                text += p.read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-5:])

    def queue(self) -> list[str]:
        """Job ids in the queue (pending, running, completing), one per array task."""
        done = self.run("squeue", "-h", "-r", "-o", "%i", timeout=15)
        return done.stdout.split() if done.returncode == 0 else []

    def cancel_all(self, deadline_s: float = 60) -> None:
        """Cancel every job of this cluster and wait until the queue is empty."""
        if "slurmctld" not in self.procs:
            return
        self.run("scancel", "--user", "root", timeout=15)
        deadline = time.monotonic() + deadline_s
        while self.queue() and time.monotonic() < deadline:
            time.sleep(0.2)

    def stop(self) -> None:
        """Cancel the jobs, then SIGTERM each daemon this cluster started (by PID, newest
        first), SIGKILL after 10 s."""
        if self.procs.get("slurmctld") is not None and self.procs["slurmctld"].poll() is None:
            try:
                self.cancel_all(30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()

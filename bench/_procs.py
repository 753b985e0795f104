"""Worker processes for the benchmarks: start, SIGKILL, restart, stop, measure memory.

Shared by ``bench.chaos`` and ``bench.storage_throughput``. Workers are ordinary
``python -m launch worker URL`` processes (the real CLI), each in its own session so a
signal to the harness does not reach them, with its output appended to a log file per slot.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Slot:
    """One worker slot: the process now in it, and how many processes it has had."""

    index: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    generation: int = 0


@dataclass
class MemoryStats:
    """Memory of worker processes, from /proc (kB). ``peak_rss`` is each process's VmHWM."""

    peak_rss_kb: dict[int, int] = field(default_factory=dict)   # pid -> highest VmHWM seen
    max_total_pss_kb: int = 0          # largest sum of PSS over all live workers at one sample
    max_total_rss_kb: int = 0
    samples: int = 0

    def sample(self, pids: list[int], pss: bool = True) -> None:
        """Read VmHWM/VmRSS (and, with ``pss``, the costlier PSS) of each live pid."""
        total_pss = total_rss = 0
        for pid in pids:
            status = _read_kv(f"/proc/{pid}/status")
            if "VmHWM" in status:
                self.peak_rss_kb[pid] = max(self.peak_rss_kb.get(pid, 0), status["VmHWM"])
                total_rss += status.get("VmRSS", 0)
            if pss:
                total_pss += _read_kv(f"/proc/{pid}/smaps_rollup").get("Pss", 0)
        self.max_total_pss_kb = max(self.max_total_pss_kb, total_pss)
        self.max_total_rss_kb = max(self.max_total_rss_kb, total_rss)
        self.samples += 1

    def summary(self) -> dict[str, Any]:
        """Peak RSS per worker (median, max) and the largest total, in MiB."""
        peaks = sorted(self.peak_rss_kb.values())
        mib = lambda kb: round(kb / 1024, 1)  # noqa: E731
        return {
            "workers_sampled": len(peaks), "samples": self.samples,
            "peak_rss_per_worker_mib_median": mib(peaks[len(peaks) // 2]) if peaks else None,
            "peak_rss_per_worker_mib_max": mib(peaks[-1]) if peaks else None,
            "max_total_rss_mib": mib(self.max_total_rss_kb),
            "max_total_pss_mib": mib(self.max_total_pss_kb),
            "largest_child_peak_rss_mib": mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
        }


def _read_kv(path: str) -> dict[str, int]:
    """``Key: 123 kB`` lines of a /proc file as {Key: 123}; {} if the process is gone."""
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0])
    except OSError:
        pass
    return out


class WorkerPool:
    """N worker slots running ``python -m launch worker URL`` with a given environment
    (or, with ``command``, ``python *command(slot)``: another system's worker)."""

    def __init__(self, url: str, n: int, log_dir: Path, env: dict[str, str], worker_args: tuple[str, ...] = (),
                 nice: int = 0, command: Callable[[int], list[str]] | None = None):
        self.url = url
        self.command = command   # another program's worker: its argv after the interpreter, by slot
        self.nice = nice   # > 0 keeps the harness (and other users of the machine) responsive
        self.slots = [Slot(i) for i in range(n)]
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.worker_args = worker_args
        self.unexpected_exits: list[dict[str, Any]] = []

    def start(self, index: int) -> None:
        """Start a new worker process in slot ``index`` (its seed stream: index * 1000 + generation)."""
        slot = self.slots[index]
        if self.command is not None:
            cmd = [sys.executable, *self.command(index)]
        else:
            cmd = [sys.executable, "-m", "launch", "worker", self.url, "--quiet",
                   "--index", str(index * 1000 + slot.generation), *self.worker_args]
        if self.nice:
            cmd = ["nice", "-n", str(self.nice), *cmd]   # nice execs python: same pid
        with open(self.log_dir / f"worker-{index}.log", "ab") as log:
            slot.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=REPO, start_new_session=True)
        slot.started = time.time()
        slot.generation += 1

    def running(self) -> list[Slot]:
        """Slots whose process is alive; records and clears processes that exited on their own."""
        out = []
        for slot in self.slots:
            if slot.proc is None:
                continue
            code = slot.proc.poll()
            if code is None:
                out.append(slot)
            else:
                self.unexpected_exits.append({"slot": slot.index, "pid": slot.proc.pid, "code": code,
                                              "time": time.time(), "log_tail": self._log_tail(slot.index)})
                slot.proc = None
        return out

    def _log_tail(self, index: int, lines: int = 5, max_bytes: int = 4096) -> list[str]:
        """The last lines of slot ``index``'s log: why a worker exited on its own."""
        try:
            with open(self.log_dir / f"worker-{index}.log", "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
                text = f.read().decode("utf-8", "replace")
        except OSError as exc:
            return [f"(log not readable: {exc})"]
        return [line[:300] for line in text.splitlines() if line.strip()][-lines:]

    def sigkill(self, index: int) -> dict[str, Any]:
        """SIGKILL the process in slot ``index`` and reap it; returns what was killed."""
        slot = self.slots[index]
        assert slot.proc is not None
        pid = slot.proc.pid
        now = time.time()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        slot.proc.wait()
        slot.proc = None
        return {"time": now, "slot": index, "pid": pid, "age_s": round(now - slot.started, 3)}

    def pids(self) -> list[int]:
        """Pids of the live worker processes."""
        return [s.proc.pid for s in self.slots if s.proc is not None]

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM every worker, SIGKILL those still running after ``grace`` s; returns how many needed SIGKILL."""
        live = [s for s in self.slots if s.proc is not None and s.proc.poll() is None]
        for s in live:
            try:
                os.kill(s.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        forced = 0
        for s in live:
            try:
                s.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.kill(s.proc.pid, signal.SIGKILL)
                s.proc.wait()
                forced += 1
        for s in self.slots:
            if s.proc is not None:
                s.proc.wait()
                s.proc = None
        return forced


def births_from_listing(url: str) -> list[float]:
    """Birth times of every individual in the store at ``url``, sorted, from two listings
    (no reads): what both benchmarks count births per second from."""
    from storage import open_store

    return open_store(url).history.births()


def preseed(url: str, threads: int = 8) -> float:
    """Publish P initial individuals through the store API and mark selection as started.

    What the workers' seeding would produce (initial DNA, synthetic fitness and weights),
    done quickly so a point measures the steady state only. Returns the seconds it took.
    """
    from concurrent.futures import ThreadPoolExecutor

    from evo.config import RunConfig
    from evo.spaces import for_config
    from evo.train.synthetic import SyntheticEvaluator

    from storage import open_store

    t = time.time()
    store = open_store(url)
    config = RunConfig.from_json(store.runinfo.read_config())
    space = for_config(config)
    # the same fitness and weights as the workers' seeding, without the simulated training time
    evaluator = SyntheticEvaluator(space, replace(config.settings_of("synthetic"), train_seconds=0.0))

    def one(k: int) -> None:
        rng = np.random.default_rng([config.seed, 10**6 + k])
        child = space.initial(rng).replace(mutation="initial")
        out = evaluator.evaluate(child, seed=k)
        store.population.publish(child.to_dict(), out.weights, parent=None, mutation="initial", fitness=out.fitness,
                      worker="preseed", metrics=out.metrics)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(config.population_size)))
    store.runinfo.mark("selection_started")
    return time.time() - t


def stop_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt, so a harness stops its workers and emulator on the way out."""
    def _raise(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _raise)


def available_memory_mib() -> float:
    """MemAvailable of the machine, in MiB."""
    return _read_kv("/proc/meminfo").get("MemAvailable", 0) / 1024


def machine_info(store_path: str | None = None) -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and (for a local store) the file system type."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    mem = _read_kv("/proc/meminfo").get("MemTotal", 0)
    info = {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem / 2**20, 1),
            "os": platform.platform(), "python": platform.python_version()}
    if store_path:
        info["store_fs"] = _fs_type(store_path)
    return info


def _fs_type(path: str) -> str:
    """The file system type of the mount holding ``path`` (from /proc/mounts)."""
    path = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and (path == parts[1] or path.startswith(parts[1].rstrip("/") + "/")) \
                        and len(parts[1]) >= len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def evo(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m launch ARGS`` (the real ``evo`` CLI) and capture its output."""
    return subprocess.run([sys.executable, "-m", "launch", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Delete a local store directory (ignore errors: it is scratch)."""
    shutil.rmtree(path, ignore_errors=True)

"""Whole ``evo`` workers as threads of this process (``evo.search.assemble.run_worker``, each
with its own store handle, strategy and random stream): for benchmarks that need many runs
without the cost of starting processes."""

from __future__ import annotations

import threading


def run_worker_threads(url: str, shares: list[int]) -> list[str]:
    """Worker i publishes ``shares[i]`` individuals to the run at ``url`` (workers with 0 are
    not started), all at once; returns one line per worker that raised (none: all finished)."""
    from evo.search.assemble import run_worker
    from evo.search.worker import WorkerOptions

    errors: list[str] = []

    def work(i: int, k: int) -> None:
        try:
            run_worker(url, WorkerOptions(max_individuals=k, heartbeat_interval=60, worker_id=f"w{i}"), index=i)
        except Exception as exc:   # reported to the caller
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(i, k)) for i, k in enumerate(shares) if k > 0]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors

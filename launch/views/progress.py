"""Live progress of a run, read from the store alone (so it works for any launcher)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage import HistoryFacet, PopulationFacet


class Progress:
    """Prints one status line every ``interval`` seconds (a live line on a terminal)."""

    def __init__(self, population: PopulationFacet, history: HistoryFacet, interval: float = 5.0, stream=None):
        self.population, self.history = population, history   # the store's facets it reads
        self.interval = interval
        self.stream = stream or sys.stdout
        self.start = time.time()
        self._next = 0.0
        self._tty = self.stream.isatty()
        self._born0: int | None = None

    def snapshot(self) -> dict:
        """alive, born, best fitness and id, from one listing of alive/ and history/."""
        alive = self.population.list_alive()
        dead = self.history.count_history()
        best = max(alive, key=lambda p: p.fitness, default=None)
        return {"alive": len(alive), "born": len(alive) + dead, "killed": dead,
                "best": best.fitness if best else None, "best_id": best.id if best else None}

    def update(self, procs) -> None:
        now = time.time()
        if now < self._next:
            return
        self._next = now + self.interval
        try:
            s = self.snapshot()
        except Exception as exc:  # a transient store error must not stop the launcher
            print(f"(status unavailable: {type(exc).__name__})", file=self.stream, flush=True)
            return
        if self._born0 is None:
            self._born0 = s["born"]
        elapsed = now - self.start
        rate = (s["born"] - self._born0) / elapsed * 60 if elapsed > 1 else 0.0
        running = sum(1 for p in procs if p.poll() is None)
        best = f"{s['best']:.4f}" if s["best"] is not None else "-"
        line = (f"[{_clock(elapsed)}] workers {running}/{len(procs)} | alive {s['alive']} | born {s['born']} "
                f"| killed {s['killed']} | {rate:.1f}/min | best val acc {best}")
        if self._tty:
            print("\r" + line.ljust(100), end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._tty:
            print(file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}"


def summarize(history: HistoryFacet, url: str, log_dir, resume: str | None = None) -> str:
    """Where the results are and how to inspect them, with the run's headline numbers (from
    one census of ``history``, the store's facet).

    ``resume``: the command that starts the workers again (default: the local launcher's).
    """
    census = history.census()
    alive, history = census.listed, census.history
    best = max(alive, key=lambda p: p.fitness, default=None)
    initial = [r["fitness"] for r in history if r["mutation"] == "initial"] or \
        [c["fitness"] for c in census.commits.values() if isinstance(c, dict) and c["mutation"] == "initial"]
    lines = ["", f"run: {url}",
             f"  individuals born {len(alive) + len(history)}, alive {len(alive)}"]
    if best is not None:
        lines.append(f"  best validation accuracy {best.fitness:.4f} (individual {best.id})")
    if initial:
        lines.append(f"  best initial (no-convolution) individual {max(initial):.4f}")
    lines += [
        f"  worker logs: {log_dir}/",
        "inspect it with:",
        f"  evo status {url}            # population, workers, rates",
        f"  evo plot {url} -o progress.png",
        f"  evo best {url} --export best/   # DNA, weights and a loader",
        f"  evo check {url}             # audit the store",
        f"resume it with: {resume or f'evo launch {url} -n N'}",
    ]
    return "\n".join(lines)

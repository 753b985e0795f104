"""Capture one training step in a CUDA graph, or say why it could not be done.

The recipe is PyTorch's whole-network capture: a few real steps run first on a side stream
(they warm up cuBLAS/cuDNN handles and the caching allocator), then one step is recorded
with ``torch.cuda.graph`` and replayed for every remaining step. The step must be pure
device work at fixed addresses (see ``evo.train.batches`` and ``evo.train.sgd``). Recording executes
nothing, so a failed capture leaves the model and optimizer exactly as they were and the
caller simply continues eagerly; every such fallback is counted here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

_lock = threading.Lock()
_fallbacks = 0


def graph_fallback_count() -> int:
    """How many captures failed (and fell back to eager training) in this process."""
    return _fallbacks


def _count_fallback() -> None:
    global _fallbacks
    with _lock:
        _fallbacks += 1


def warm_up(step: Callable[[], None]) -> None:
    """Run ``step`` once on a side stream, ordered after and before the current stream's work."""
    current = torch.cuda.current_stream()
    side = torch.cuda.Stream()
    side.wait_stream(current)
    with torch.cuda.stream(side):
        step()
    current.wait_stream(side)


def capture(step: Callable[[], None]) -> tuple[torch.cuda.CUDAGraph | None, str | None]:
    """Record ``step`` into a new CUDA graph: ``(graph, None)``, or ``(None, reason)``.

    On failure the reason is one line naming the exception, and the fallback is counted.
    """
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            step()
    except Exception as exc:  # any failure to capture means: train eagerly instead
        _count_fallback()
        return None, _root_cause(exc)
    return graph, None


def _root_cause(exc: BaseException) -> str:
    # A failure inside the capture makes ending the capture fail too ("operation failed due
    # to a previous error during capture"); the first error is the one worth reporting.
    while exc.__context__ is not None:
        exc = exc.__context__
    text = " ".join(str(exc).split()).split(" Search for `", 1)[0]
    return f"{type(exc).__name__}: {text[:240] or 'no message'}"


"""What every benchmark writes: a header (machine, versions, settings) plus results, as JSON and
as a markdown table, under one output folder.

Files are named ``{name}-{mode}-{device kind}.json`` / ``.md`` (e.g. ``train_speed-full-cuda.json``),
so a CPU run and a GPU run of the same benchmark sit side by side and a rerun replaces the
previous numbers. Nothing here imports torch unless it is already imported.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results"


class BenchError(Exception):
    """A benchmark that cannot run as asked (bad option, missing piece). One-line message."""


def say(message: str) -> None:
    """Progress line on stdout, flushed at once (the GPU runs are watched through a pipe)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def device_kind(device: str) -> str:
    """``cpu`` or ``cuda`` for a device string such as ``cuda:0``."""
    return device.split(":", 1)[0]


def machine_info(device: str) -> dict[str, Any]:
    """Host, CPU, versions (python, numpy, torch when loaded, evo's git commit) and the GPU name."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "evo_commit": _git_commit(),
        "device": device,
    }
    import numpy

    info["numpy"] = numpy.__version__
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if device_kind(device) == "cuda" and torch.cuda.is_available():
            index = torch.device(device).index or 0
            info["gpu"] = torch.cuda.get_device_name(index)
            info["cuda"] = torch.version.cuda
            info["cudnn"] = torch.backends.cudnn.version()
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are shown with 3 significant digits (4 below 1)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def fmt(value: Any) -> str:
    """Human-readable cell: ints with separators, floats rounded, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.3g}"
    return str(value)


def write_report(name: str, mode: str, device: str, out_dir: str | Path, *, settings: dict[str, Any],
                 results: dict[str, Any], markdown: str, summary: str) -> dict[str, Any]:
    """Write ``{name}-{mode}-{kind}.json`` and ``.md`` under ``out_dir``; return the JSON document.

    The document is ``{benchmark, mode, date, machine, settings, summary, results}``; the
    markdown file is a title, the header as a list, the one-line summary and ``markdown``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{mode}-{device_kind(device)}"
    doc = {
        "benchmark": name, "mode": mode,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(device), "settings": settings, "summary": summary, "results": results,
    }
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2, sort_keys=True, default=_jsonable) + "\n",
                                      encoding="utf-8")
    m = doc["machine"]
    versions = ", ".join(f"{k} {m[k]}" for k in ("python", "numpy", "torch", "cuda", "cudnn") if m.get(k))
    hardware = m.get("gpu") or f"{m['cpu']} ({m['cpu_count']} cores)"
    header = [
        f"# {name} ({mode}, {device})", "",
        f"- date: {doc['date']}; evo commit: {m.get('evo_commit') or 'unknown'}",
        f"- machine: {m['host']}, {hardware}; load average at the end: "
        + (", ".join(f"{x:.1f}" for x in m["load_average"]) if m.get("load_average") else "-"),
        f"- versions: {versions}",
        "- settings: " + ", ".join(f"{k}={_short(v)}" for k, v in settings.items()),
        "", f"**{summary}**", "", "",
    ]
    (out / f"{stem}.md").write_text("\n".join(header) + markdown.rstrip() + "\n", encoding="utf-8")
    say(f"wrote {out / stem}.json and .md")
    return doc


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(str(v) for v in value)
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):   # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

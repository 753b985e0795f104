"""What `evo retrain` prints: the progress of one process's retrains (live on a terminal),
the one-line progress of local processes read from the store, and the results table.
"""

from __future__ import annotations

import sys
from typing import Any


class Printer:
    """Progress of one process's retrains: a live line on a terminal, a line per epoch otherwise."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._live = False

    def __call__(self, rid: str, info: dict[str, Any]) -> None:
        from evo.train.retrain import eta_text

        state = info.get("state")
        if state == "progress":
            if not self.tty and not info.get("epoch_done"):
                return
            frac = info["step"] / max(1, info["total_steps"])
            bar = "#" * int(frac * 20)
            loss = f"{info['loss']:.4f}" if info.get("loss") is not None else "-"
            acc = f"{info['train_accuracy']:.4f}" if info.get("train_accuracy") is not None else "-"
            val = f" val {info['val_accuracy']:.4f}" if info.get("val_accuracy") is not None else ""
            line = (f"{rid}: [{bar:<20}] epoch {info['epoch']}/{info['epochs']} step {info['step']}/"
                    f"{info['total_steps']} loss {loss} acc {acc}{val} ETA {eta_text(info.get('eta_seconds'))}")
            self._line(line)
        elif state == "training":
            resumed = info.get("resumed_from")
            how = f"resumed from the checkpoint at step {resumed}" if resumed else "from the start"
            applied = info.get("applied") or {}
            on = [k for k in ("cosine", "drop_path", "aux_head", "cutout", "label_smoothing", "grad_clip")
                  if applied.get(k)]
            self._print(f"{rid}: training {info['epochs']} epochs ({info['total_steps']} steps, "
                        f"{applied.get('training_images')} images, {applied.get('precision')}) {how}; "
                        f"protocol: {', '.join(on) or 'plain SGD'}")
        elif state == "stopped":
            self._print(f"{rid}: stopped by {info.get('signal') or 'a signal'} at step {info.get('step', 0)}; "
                        "checkpoint saved: run again to resume")
        elif state == "lost":
            self._print(f"{rid}: another process took this retrain over (this one was presumed dead); stopped")
        elif state == "failed":
            self._print(f"{rid}: FAILED: {info.get('error')}")
        elif state == "done":
            self._print(f"{rid}: done; test accuracy {info['test_accuracy']:.4f}")

    def _line(self, line: str) -> None:
        if self.tty:
            print("\r" + line[:160].ljust(160), end="", file=self.stream, flush=True)
            self._live = True
        else:
            print(line, file=self.stream, flush=True)

    def _print(self, line: str) -> None:
        if self._live:
            print(file=self.stream)
            self._live = False
        print(line, file=self.stream, flush=True)


def progress_line(store, rids: list[str]) -> str:
    """One line of every retrain's epoch and ETA (or its state), read from the store."""
    from evo.train.retrain import eta_text

    parts = []
    for rid in rids:
        s = store.retrains.retrain_state(rid)
        info = (s.beat or {}).get("info") or {}
        if s.state == "training" and isinstance(info, dict) and "epoch" in info:
            epoch, epochs = (str(info.get(k, "?"))[:12] for k in ("epoch", "epochs"))
            parts.append(f"{rid[:24]} {epoch}/{epochs} ETA {eta_text(info.get('eta_seconds'))}")
        else:
            parts.append(f"{rid[:24]} {s.state}")
    return " | ".join(parts)


def report_table(store, rids: list[str]) -> list[dict[str, Any]]:
    """One row per retrain: source, searched validation accuracy, state and test accuracy."""
    rows = []
    for rid in rids:
        s = store.retrains.retrain_state(rid)
        req = s.request or {}
        src = req.get("source") or {}
        res = s.result or {}
        rows.append({"rid": rid, "state": s.state, "source": src.get("id") or src.get("name") or src.get("file"),
                     "validation_accuracy": src.get("fitness"), "size": req.get("size"),
                     "test_accuracy": res.get("test_accuracy"), "parameters": res.get("parameters"),
                     "epochs": res.get("epochs"), "train_seconds": res.get("train_seconds")})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print :func:`report_table`'s rows as a table with a header."""
    print("retrain                                                 state     searched val  params    test accuracy")
    for r in rows:
        val = f"{r['validation_accuracy']:.4f}" if isinstance(r["validation_accuracy"], (int, float)) else "-"
        test = f"{r['test_accuracy']:.4f}" if isinstance(r["test_accuracy"], (int, float)) else "-"
        params = str(r["parameters"]) if r["parameters"] is not None else "-"
        print(f"{r['rid']:<55} {r['state']:<9} {val:<13} {params:<9} {test}")

"""The large-scale network (Real et al. 2017), built from a plain-data plan with torch alone.

Part of evo's portable model code (see ``dna.portable``): ``evo best --export`` copies this
module verbatim into every export. ``dna.portable_plan.architecture`` computes the plan from
a DNA: the convolutions, the batch-norms, and the order in which vertices sum their inflows
(the primary inflow fixes the shape; the others are resized by nearest interpolation in
space and truncated or zero-padded in channels). The forward pass follows the plan with no
data-dependent Python control flow, so it can be captured in a CUDA graph.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .portable_io import ExportError


class Inflow(NamedTuple):
    """One incoming edge of a vertex, as the forward pass applies it."""

    conv: str | None                   # key in PlanNet.edges, None for an identity edge
    src: int                           # activation slot of the source vertex
    size: tuple[int, int] | None       # spatial size to resize to (None: already right)
    channels: int                      # channels the edge produces
    target_channels: int               # channels of the destination vertex


class Step(NamedTuple):
    """Compute one non-input vertex: sum its inflows, then optionally BN + ReLU."""

    vertex: int
    slot: int
    inflows: tuple[Inflow, ...]        # the primary first
    norm: str | None                   # key in PlanNet.vertices, None for a linear vertex
    release: tuple[int, ...]           # slots no later step reads (freed to save memory)


class PlanNet(nn.Module):
    """The network a large-scale plan describes (see ``dna.portable_plan.architecture``).

    ``forward(x)`` maps normalised images ``(N, C, H, W)`` to logits ``(N, num_classes)``.
    State-dict names carry the DNA ids: ``edges.e{id}.weight``, ``vertices.v{id}.*``,
    ``classifier.*``. Raises ExportError for a malformed plan.
    """

    def __init__(self, plan: dict[str, Any]) -> None:
        super().__init__()
        try:
            self.input_shape = tuple(int(d) for d in plan["input_shape"])
            self.num_classes = int(plan["num_classes"])
            self.vertices = nn.ModuleDict()
            self.edges = nn.ModuleDict()
            for c in plan["convs"]:
                kh, kw = (int(k) for k in c["kernel"])
                self.edges[c["name"]] = nn.Conv2d(int(c["in"]), int(c["out"]), kernel_size=(kh, kw),
                                                  stride=int(c["stride"]), padding=(kh // 2, kw // 2), bias=False)
            for n in plan["norms"]:
                self.vertices[n["name"]] = nn.BatchNorm2d(int(n["channels"]))
            self.classifier = nn.Linear(int(plan["classifier_in"]), self.num_classes)
            self._steps = tuple(_step(s) for s in plan["steps"])
            self._output_slot = int(plan["output_slot"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"malformed large-scale architecture: {type(exc).__name__}: {exc}") from None
        self.plan = plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalised images; the same ops every call."""
        acts = self._run(x, keep_all=False)
        return self.classifier(acts[self._output_slot].mean(dim=(2, 3)))

    def _run(self, x: torch.Tensor, keep_all: bool) -> list[torch.Tensor | None]:
        acts: list[torch.Tensor | None] = [None] * (len(self._steps) + 1)
        acts[0] = x
        for step in self._steps:
            total = None
            for flow in step.inflows:
                y = acts[flow.src]
                if flow.conv is not None:
                    y = self.edges[flow.conv](y)
                if total is None:        # the primary edge: it defines the shape
                    total = y
                    continue
                if flow.size is not None:
                    y = F.interpolate(y, size=flow.size, mode="nearest")
                if flow.channels > flow.target_channels:
                    y = y[:, : flow.target_channels]
                elif flow.channels < flow.target_channels:
                    y = F.pad(y, (0, 0, 0, 0, 0, flow.target_channels - flow.channels))
                # Under autocast an identity edge may bring fp32 while convs give bf16.
                total = total + y.to(total.dtype)
            if step.norm is not None:
                total = F.relu(self.vertices[step.norm](total))
            acts[step.slot] = total
            if not keep_all:
                for slot in step.release:
                    acts[slot] = None
        return acts

    def extra_repr(self) -> str:
        return (f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
                f"convs={len(self.edges)}, steps={len(self._steps)}")


def _step(s: dict[str, Any]) -> Step:
    inflows = tuple(
        Inflow(f["conv"], int(f["src"]), None if f["size"] is None else (int(f["size"][0]), int(f["size"][1])),
               int(f["channels"]), int(f["target_channels"]))
        for f in s["inflows"])
    if not inflows:
        raise ValueError(f"vertex {s['vertex']} has no inflows")
    return Step(int(s["vertex"]), int(s["slot"]), inflows, s["norm"], tuple(int(r) for r in s["release"]))

"""Synthetic fitness: the real worker without training, for testing the coordination layer.

Training is replaced by a cheap, deterministic function of the DNA plus seeded noise and an
optional sleep standing in for training time. Everything else (store, selection, mutation,
publish, kill) is the real thing, and each individual stores a real safetensors file of a
configurable size. This module must never import torch: hundreds of synthetic workers run
on one machine, and a torch import costs a few hundred MB per process.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import time
from typing import Any, Callable

import numpy as np

from evo.config import RunConfig
from evo.outcome import Outcome


def synthetic_fitness(dna: Any) -> float:
    """A deterministic 'validation accuracy' in [0, 1] that rewards what helps real CNNs.

    Large-scale DNA: more convolutional capacity helps with diminishing returns, very wide
    or very deep graphs stop helping, and the learning rate has a sweet spot near 0.05.
    NASNet DNA: separable and factorised convolutions beat pooling and identity.
    """
    kind = dna.to_dict().get("kind")
    if kind == "nasnet":
        d = dna.to_dict()
        weights = {"sep3x3": 1.0, "sep5x5": 1.1, "sep7x7": 0.9, "dil3x3": 0.9, "conv1x7_7x1": 0.8,
                   "avg3x3": 0.4, "max3x3": 0.5, "identity": 0.3}
        score = 0.0
        for cell in ("normal", "reduction"):
            for comb in d[cell]["combinations"]:
                score += weights.get(comb[1], 0.2) + weights.get(comb[3], 0.2)
        return 0.1 + 0.85 * (1 - math.exp(-score / 8.0))
    capacity = 0.0
    for e in dna.conv_edges:
        capacity += math.log2(1 + e.channels) * math.sqrt(e.filter_h * e.filter_w) / e.stride ** 0.5
    skips = sum(1 for e in dna.edges if e.kind == "identity") - 1
    size_penalty = max(0, len(dna.vertices) - 12) * 0.01
    lr_factor = math.exp(-((math.log10(dna.learning_rate) - math.log10(0.05)) ** 2) / 2.0)
    base = 0.1 + 0.85 * (1 - math.exp(-capacity / 25.0)) * (0.6 + 0.4 * lr_factor)
    return min(1.0, max(0.0, base + 0.005 * min(skips, 4) - size_penalty))


def safetensors_blob(payload: bytes) -> bytes:
    """A valid safetensors file holding ``payload`` as one uint8 tensor (pure Python)."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + payload


class SyntheticEvaluator:
    """Drop-in replacement for the torch evaluator (same ``evaluate`` signature)."""

    device_name = "synthetic"

    def __init__(self, config: RunConfig):
        self.config = config
        self.settings = config.synthetic

    def evaluate(self, child, *, parent_dna=None, parent_weights: bytes | None = None, seed: int = 0,
                 progress: Callable[[], Any] | None = None) -> Outcome:
        """Fitness = synthetic_fitness(child) + N(0, noise) seeded by (DNA hash, seed)."""
        t = time.perf_counter()
        if self.settings.train_seconds > 0:
            end = time.monotonic() + self.settings.train_seconds
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(left, 1.0))
                if progress:
                    progress()
        train_s = time.perf_counter() - t
        digest = hashlib.sha256(f"{child.content_hash()}:{seed}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        fitness = synthetic_fitness(child) + float(rng.normal(0.0, self.settings.noise))
        fitness = min(1.0, max(0.0, fitness))
        weights = safetensors_blob(rng.bytes(self.settings.weight_bytes))
        inherited = 0.0
        if parent_weights is not None and child.mutation != "reset_weights":
            inherited = 1.0
        return Outcome(fitness=fitness, weights=weights, metrics={
            "train_s": train_s, "eval_s": 0.0, "build_s": 0.0, "inherit_s": 0.0,
            "inherited_fraction": inherited, "steps": 0, "synthetic": True,
        })

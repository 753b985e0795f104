"""How each child is trained: :class:`TrainSettings`, part of the run's config
(``config.json``'s ``train`` block), checked when given. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from evo.config_checks import require_choice, require_flag, require_int, require_number

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainSettings:
    """How each child is trained (paper: SGD, momentum 0.9, wd 1e-4, batch 50, 25,600 steps)."""

    steps: int = 25_600
    batch_size: int = 50
    momentum: float = 0.9
    weight_decay: float = 1e-4
    eval_batch_size: int = 1000
    augment: bool = True          # random crop + flip (only where the dataset defines it)
    precision: str = "auto"       # "auto" (bf16 on CUDA, fp32 on CPU) | "fp32" | "bf16"
    cuda_graphs: bool = True      # capture the training step in a CUDA graph when on CUDA

    def __post_init__(self) -> None:
        require_int("train.steps", self.steps, 0, 10**9)
        require_int("train.batch_size", self.batch_size, 1, 1_000_000)
        require_number("train.momentum", self.momentum, 0, 1, high_open=True)
        require_number("train.weight_decay", self.weight_decay, 0, 1, high_open=True)
        require_int("train.eval_batch_size", self.eval_batch_size, 1, 1_000_000)
        require_flag("train.augment", self.augment)
        require_choice("train.precision", self.precision, PRECISIONS)
        require_flag("train.cuda_graphs", self.cuda_graphs)

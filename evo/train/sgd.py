"""SGD with momentum and weight decay whose learning rate lives in a device tensor.

The update is ``torch.optim.SGD``'s (dampening 0, no Nesterov): ``g += wd * p``;
``buf = momentum * buf + g``; ``p -= lr * buf``. It is written out here, with
``torch._foreach`` ops, because ``torch.optim.SGD``'s foreach path turns a tensor learning
rate into a Python number (a host sync, and the value baked into a captured CUDA graph),
and its momentum buffers appear lazily on the first step. Here the buffers exist from the
start (zeros, so the first step gives ``buf = g`` exactly as torch does) and every step is
the same device work at the same addresses, on CPU and CUDA alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class MomentumSGD:
    """Momentum SGD over a fixed list of parameters; see the module docstring."""

    def __init__(self, params: Sequence[torch.Tensor], *, lr: float, momentum: float,
                 weight_decay: float) -> None:
        self.params = list(params)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        device = self.params[0].device if self.params else torch.device("cpu")
        self.lr = torch.tensor(float(lr), dtype=torch.float32, device=device)
        self.buffers = [torch.zeros_like(p) for p in self.params]

    def set_lr(self, lr: float) -> None:
        """Change the learning rate in place (a captured graph sees the new value)."""
        self.lr.fill_(float(lr))

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        """Apply one update from ``grads`` (one per parameter, same order)."""
        if not self.params:
            return
        grads = list(grads)
        if self.weight_decay != 0:
            grads = torch._foreach_add(grads, self.params, alpha=self.weight_decay)
        torch._foreach_mul_(self.buffers, self.momentum)
        torch._foreach_add_(self.buffers, grads)
        torch._foreach_add_(self.params, torch._foreach_mul(self.buffers, self.lr), alpha=-1.0)

"""Settings of the learned strategies (``selection`` ``rl`` or ``reinforce``): their block
``controller`` of config.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from evo.config_checks import ConfigError, require_int, require_number
from evo.registry import RunView
from evo.strategies.policy_state import MAX_BATCH


@dataclass(frozen=True)
class ControllerSettings:
    """The learned strategies (``selection`` ``rl`` or ``reinforce``). None takes the
    strategy's published setting: ``rl`` (NASNet's PPO controller, appendix A.2) learning
    rate 0.00035, entropy weight 1e-5, baseline decay 0.95; ``reinforce`` (NAS-Bench-201's
    baseline) 0.01, 0, 0.9. ``hidden_size``: the LSTM's units (rl). ``ppo_clip`` and
    ``ppo_epochs``: PPO's clipping range and gradient steps per update (rl).
    ``keep_versions``: how many of the newest policy versions stay in the store.
    ``batch_size``: children per controller update (B); null takes the strategy's: ``rl`` 20
    (the NASNet paper, appendix A.3: "minibatches of 20 architectures"), ``reinforce`` 1 (its
    reference updates after every child)."""

    learning_rate: float | None = field(default=None, metadata={"help": "(0, 1]; null: the strategy's"})
    entropy_weight: float | None = field(default=None, metadata={"help": "0..1; null: the strategy's"})
    baseline_decay: float | None = field(default=None, metadata={"help": "[0, 1); null: the strategy's"})
    hidden_size: int = field(default=100, metadata={"help": "1..1024"})
    ppo_clip: float = field(default=0.2, metadata={"help": "(0, 1]"})
    ppo_epochs: int = field(default=1, metadata={"help": "1..100"})
    keep_versions: int = field(default=8, metadata={"help": "2..1000"})
    batch_size: int | None = field(default=None, metadata={
        "help": f"children per update, 1..{MAX_BATCH}; null: the strategy's (rl 20, reinforce 1)", "omit_default": True})

    written_always: ClassVar[bool] = True   # config.json has always carried this block

    def __post_init__(self) -> None:
        if self.learning_rate is not None:
            require_number("controller.learning_rate", self.learning_rate, 0, 1, low_open=True)
        if self.entropy_weight is not None:
            require_number("controller.entropy_weight", self.entropy_weight, 0, 1)
        if self.baseline_decay is not None:
            require_number("controller.baseline_decay", self.baseline_decay, 0, 1, high_open=True)
        require_int("controller.hidden_size", self.hidden_size, 1, 1024)
        require_number("controller.ppo_clip", self.ppo_clip, 0, 1, low_open=True)
        require_int("controller.ppo_epochs", self.ppo_epochs, 1, 100)
        require_int("controller.keep_versions", self.keep_versions, 2, 1000)
        if self.batch_size is not None:
            require_int("controller.batch_size", self.batch_size, 1, MAX_BATCH)

    def check_run(self, run: RunView) -> None:
        if not run.uses("controller") and self != ControllerSettings():
            raise ConfigError(f"controller settings apply to the learned strategies (rl, reinforce), "
                              f"not selection {run.selection!r}", "controller")

"""The final-training protocol's settings: one typed, frozen object, recorded with every result.

The papers search with small, briefly trained models and then train the winner again, larger
and much longer, with a protocol the search never used (NASNet, Zoph et al. 2018, Appendix
A; AmoebaNet, Real et al. 2019, which follows it): single-period cosine learning-rate decay,
ScheduledDropPath whose probability rises linearly over training, an auxiliary head at 2/3
of the depth whose loss counts 0.4, cutout, weight decay, gradient clipping. docs/retrain.md
has the table of every setting, its default and where the default comes from.

Presets: ``paper`` (the papers' CIFAR-10 final training: the default for CIFAR), ``digits``
(what reaches >= 0.99 test accuracy on the digits quickstart on a CPU in minutes: the
default for digits) and ``tiny`` (every feature on, two short epochs: CPU tests).
Torch-free: the CLI validates settings before anything is trained. Unknown keys are an error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from evo.config_checks import ConfigError
from evo.train.settings import PRECISIONS
from evo.config_checks import require_choice, require_flag, require_int, require_number

SCHEDULES = ("cosine", "constant")
DATA_SPLITS = ("train+val", "train")
SETTINGS_SCHEMA = 1


@dataclass(frozen=True)
class FinalSettings:
    """How a final model is trained; every field is part of the settings hash.

    ``learning_rate`` None means the DNA's own learning rate. ``drop_path`` is the
    ScheduledDropPath probability reached at the end of training (it rises linearly from 0;
    0 turns it off). ``aux_weight`` is the auxiliary head's loss weight (0: no auxiliary
    head). ``cutout``: side of the square zeroed at a random place in each training image
    (0: off). ``crop_padding``/``flip``: random-crop padding and horizontal flips (None: what
    the dataset calls for). ``data``: train on ``train+val`` (the papers: the validation
    images the search used for fitness join the training set) or ``train`` (validation held
    out and reported each epoch). The test split is read once, at the end.
    """

    epochs: int = 600
    batch_size: int = 32
    learning_rate: float | None = 0.025
    schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    grad_clip: float = 5.0
    drop_path: float = 0.4
    aux_weight: float = 0.4
    cutout: int = 16
    crop_padding: int | None = None
    flip: bool | None = None
    data: str = "train+val"
    precision: str = "auto"
    cuda_graphs: bool = True
    eval_batch_size: int = 1000
    seed: int = 0
    schema: int = SETTINGS_SCHEMA

    def __post_init__(self) -> None:
        if isinstance(self.schema, bool) or self.schema != SETTINGS_SCHEMA:
            raise ConfigError(f"unknown final-training settings schema {self.schema!r} "
                              f"(this evo reads {SETTINGS_SCHEMA})", "schema")
        require_int("epochs", self.epochs, 1, 100_000)
        require_int("batch_size", self.batch_size, 1, 1_000_000)
        if self.learning_rate is not None:
            require_number("learning_rate", self.learning_rate, 0, 100, low_open=True)
        require_choice("schedule", self.schedule, SCHEDULES)
        require_number("momentum", self.momentum, 0, 1, high_open=True)
        require_number("weight_decay", self.weight_decay, 0, 1, high_open=True)
        require_number("label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        require_number("grad_clip", self.grad_clip, 0, 1e6)
        require_number("drop_path", self.drop_path, 0, 1, high_open=True)
        require_number("aux_weight", self.aux_weight, 0, 100)
        require_int("cutout", self.cutout, 0, 4096)
        if self.crop_padding is not None:
            require_int("crop_padding", self.crop_padding, 0, 64)
        if self.flip is not None:
            require_flag("flip", self.flip)
        require_choice("data", self.data, DATA_SPLITS)
        require_choice("precision", self.precision, PRECISIONS)
        require_flag("cuda_graphs", self.cuda_graphs)
        require_int("eval_batch_size", self.eval_batch_size, 1, 1_000_000)
        require_int("seed", self.seed, 0, 2**63 - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (every field)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "FinalSettings":
        """Inverse of :meth:`to_dict`; unknown keys or bad values raise ConfigError (one line)."""
        if not isinstance(d, dict):
            raise ConfigError("final-training settings must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"final-training settings have unknown key(s) {', '.join(unknown)}")
        try:
            return cls(**d)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"final-training settings: {exc}") from None

    def with_changes(self, **changes: Any) -> "FinalSettings":
        """A copy with some fields changed (validated like the original)."""
        return replace(self, **changes)

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON of every field: equal settings, equal hash."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def uses_validation_for_training(self) -> bool:
        """True when the validation split joins the training set (nothing is held out)."""
        return self.data == "train+val"


# The papers' CIFAR-10 final training: the values of the NASNet reference code's CIFAR
# configuration and its training notes (tensorflow/models, research/slim/nets/nasnet/nasnet.py:
# cifar_config, nasnet_cifar_arg_scope), which AmoebaNet's CIFAR-10 models follow; cutout is
# DeVries & Taylor's 16x16 for CIFAR-10. docs/retrain.md lists the sources row by row.
PAPER = FinalSettings()

# The digits quickstart (8x8 grey digits, 1,437 training images with the validation split):
# shifts of one pixel (no flips: a mirrored digit is another symbol), label smoothing and 200
# epochs of cosine decay. Chosen on the validation split (data=train, 3 seeds each: 120 epochs
# with a 3x3 cutout 0.9916 mean, 200 epochs without cutout 0.9926); its test accuracy is in
# the README.
DIGITS = FinalSettings(epochs=200, batch_size=32, learning_rate=0.05, weight_decay=5e-4,
                       label_smoothing=0.1, grad_clip=5.0, drop_path=0.1, aux_weight=0.4, cutout=0,
                       crop_padding=1, flip=False)

# Every feature on, two short epochs: what the CPU tests run.
TINY = FinalSettings(epochs=2, batch_size=32, learning_rate=0.05, label_smoothing=0.1, grad_clip=5.0,
                     drop_path=0.3, aux_weight=0.4, cutout=3, crop_padding=1, flip=False,
                     eval_batch_size=256)

PRESETS: dict[str, FinalSettings] = {"paper": PAPER, "digits": DIGITS, "tiny": TINY}


def default_preset(dataset_name: str) -> str:
    """The preset a dataset gets when the user names none: ``digits`` for digits, else ``paper``."""
    return "digits" if dataset_name == "digits" else "paper"


def preset(name: str) -> FinalSettings:
    """The named preset; ConfigError naming the known ones otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})", "preset")
    return PRESETS[name]

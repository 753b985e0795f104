"""The dataset steps of ``evo init`` (and of the launchers that initialise a run): check the
run's dataset files before a config is written, count its training images for a preset's
epochs, and decode a user dataset into the population once, with its summary printed.
Every problem is a one-line :class:`launch.errors.UserError` naming the option at fault.
"""

from __future__ import annotations

from evo.config import DataSettings, RunConfig
from evo.data.spec import DatasetSpec

from ..errors import UserError


def train_images(spec: DatasetSpec, data: DataSettings) -> int:
    """The training-split size of a dataset (for a preset's epochs), from its files' check
    (for the user's datasets: after the validation and test images are carved out)."""
    from evo.data.base import DatasetError
    from evo.data.datasets import check_dataset

    try:
        n = check_dataset(spec, data)["train_images"]
    except DatasetError as exc:
        raise UserError(f"--dataset: {exc}") from None
    return int(n)


def check_data(config: RunConfig) -> None:
    """UserError (one line) unless the config's dataset files are there and its batch fits
    (for a user dataset: its layout, classes and splits, from a listing; nothing decoded)."""
    from evo.data.base import DatasetError
    from evo.data.datasets import check_dataset

    try:
        facts = check_dataset(config.dataset_spec, config.data)
    except DatasetError as exc:
        raise UserError(f"--dataset: {exc}") from None
    n = facts["train_images"]
    if n is not None and config.train.batch_size > n:
        raise UserError(f"--batch-size: train.batch_size must be at most the {n:,} training images of "
                        f"{facts['name']}, got {config.train.batch_size}")


def decode_data(store, config: RunConfig) -> None:
    """Decode the run's user dataset into the store now (unless a cache is there already),
    with progress on stderr, and print its summary (classes, images, resolution, bytes)."""
    import sys

    from evo.data.base import DatasetError
    from evo.data.userdata import ensure_cache

    if not config.dataset_spec.is_user:
        return
    try:
        manifest = ensure_cache(config.dataset_spec, config.data, store.datacache,
                                progress=lambda line: print(line, file=sys.stderr, flush=True))
    except DatasetError as exc:
        raise UserError(f"--dataset: {exc}") from None
    from evo.data.cache import describe_summary

    print(f"dataset {config.dataset}: {describe_summary(manifest)}", flush=True)

"""The dataset steps of ``evo init`` (and of the launchers that initialise a run): check the
run's dataset files before a config is written, count its training images for a preset's
epochs, check that training a child on a user dataset's images fits the device's memory (by
the search space's estimate), and decode a user dataset into the population once, with its
summary printed. Every problem is a one-line :class:`launch.errors.UserError` naming the
option at fault.
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


def check_data(config: RunConfig, device_memory: int | None = None) -> None:
    """UserError (one line) unless the config's dataset files are there and its batch fits
    (for a user dataset: its layout, classes and splits, from a listing; nothing decoded),
    and, for a user dataset, unless training one child fits the device's memory
    (:func:`check_memory`; ``device_memory``: bytes the user gave, 0: no check)."""
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
    if config.dataset_spec.is_user and device_memory != 0:
        check_memory(config, device_memory)


MEMORY_SHARE = 0.9   # of the device's memory a child's training may take by the estimate


def training_device_memory() -> tuple[int | None, str]:
    """(bytes, what they are) of the device children will likely train on, as seen from this
    machine: the smallest GPU's total memory when ``nvidia-smi`` lists one, else the free
    memory of this machine (``MemAvailable``). Torch-free; (None, ...) when unknown."""
    import shutil
    import subprocess

    from evo.data.base import available_host_memory

    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
            mib = [int(line) for line in out.split() if line.strip().isdigit()]
            if mib:
                return min(mib) * 2**20, "this machine's GPU (nvidia-smi)"
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return available_host_memory(), "this machine (free memory; no GPU found)"


def check_memory(config: RunConfig, device_memory: int | None = None) -> None:
    """UserError (one line) when training one child of the run's search space on batches of
    the run's user images takes more than :data:`MEMORY_SHARE` of the device's memory (the
    space's estimate, :meth:`evo.spaces.SearchSpace.training_memory`, plus the decoded
    images, which the workers keep on the device), naming the largest image size that would
    fit. ``device_memory``: bytes (default: :func:`training_device_memory`). Nothing is
    checked when the space makes no estimate."""
    from evo.data.base import DatasetError, human_bytes
    from evo.data.userdata import planned_input
    from evo.spaces import make_space

    space = make_space(config)
    batch = config.train.batch_size
    if space.training_memory((3, 32, 32), batch) is None:
        return
    try:
        planned = planned_input(config.dataset_spec, config.data)
    except DatasetError as exc:
        raise UserError(f"--dataset: {exc}") from None
    c, h, w = planned["input_shape"]
    images = planned["images"]

    def need(height: int, width: int) -> tuple[int, int]:
        return int(space.training_memory((c, height, width), batch) or 0), images * c * height * width

    if device_memory is not None:
        free, what = device_memory, "the device (--device-memory)"
    else:
        free, what = training_device_memory()
    if free is None:
        return
    act, data = need(h, w)
    if act + data <= MEMORY_SHARE * free:
        return
    side = min(h, w)
    fits = next((s for s in range(side - 1, 3, -1)
                 if sum(need(h * s // side, w * s // side)) <= MEMORY_SHARE * free), None)
    advice = (f"--image-size {fits} would fit" if fits is not None and h == w else
              f"images of {h * fits // side}x{w * fits // side} would fit" if fits is not None else
              "no image size fits this batch")
    option = "--image-size" if config.data.image_size is not None else "--dataset"
    raise UserError(f"{option}: training a {config.search_space} child on batches of {batch} {c}x{h}x{w} images "
                    f"needs about {human_bytes(act + data)} (activations {human_bytes(act)}, estimated from above; "
                    f"images {human_bytes(data)}) but {what} has {human_bytes(free)}, of which training may take "
                    f"{MEMORY_SHARE:.0%}; {advice} (or use a "
                    f"smaller --batch-size, or --device-memory SIZE for the workers' device; 0 skips this check)")


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

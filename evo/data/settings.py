"""How a user dataset becomes the run's arrays: :class:`DataSettings`, part of the run's
config (``config.json``'s ``data`` block), checked when given. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from evo.config_checks import ConfigError, require_choice, require_int, require_number, written_values
from evo.data.spec import USER_DATASETS

RESIZES = ("crop", "square")
COLORS = ("auto", "rgb", "grayscale")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 4, 1024
MAX_SPLIT_SEED = 2**63 - 1
AUTO_IMAGE_SIZE_CAP = 64   # the automatic image size's default cap (search runs at CIFAR-like sizes)


@dataclass(frozen=True)
class DataSettings:
    """How a user dataset (``imagefolder``, ``npz``, ``hf``) becomes the run's arrays.

    ``image_size`` S: images become S x S pixels (None: for image files, the median shorter
    side of a sample of the images, at most :data:`AUTO_IMAGE_SIZE_CAP`; for arrays, the
    size they have). ``auto_size_cap``: that cap, written by ``evo init`` from the run's search
    space (:meth:`evo.spaces.SearchSpace.auto_image_size_cap`: 64, or 224 in the nasnet space
    when its stem will be the ImageNet stem); config.json leaves it out while it is 64, so
    configs written before it existed keep their meaning and their cache. ``resize``: ``crop`` scales the shorter side to S and keeps the centre
    (the aspect ratio is kept); ``square`` scales the whole image to S x S. ``color``:
    ``rgb``, ``grayscale``, or ``auto`` (grayscale when every sampled image is). A split the
    dataset lacks is carved from its training images, stratified by class, with
    ``split_seed``: ``val_fraction`` for validation, ``test_fraction`` for test.
    ``max_bad_fraction``: unreadable images are skipped (and counted) up to this fraction
    of the images; more fail the run. ``image_column``/``label_column``: the columns of an
    ``hf`` dataset (None: found from the dataset's features). The built-in datasets take
    none of these.
    """

    image_size: int | None = None
    resize: str = "crop"
    color: str = "auto"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    max_bad_fraction: float = 0.05
    image_column: str | None = None
    label_column: str | None = None
    auto_size_cap: int = field(default=AUTO_IMAGE_SIZE_CAP, metadata={"omit_default": True})

    def __post_init__(self) -> None:
        if self.image_size is not None:
            require_int("data.image_size", self.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        require_int("data.auto_size_cap", self.auto_size_cap, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        require_choice("data.resize", self.resize, RESIZES)
        require_choice("data.color", self.color, COLORS)
        require_number("data.val_fraction", self.val_fraction, 0, 1, low_open=True, high_open=True)
        require_number("data.test_fraction", self.test_fraction, 0, 1, high_open=True)
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"data.val_fraction + data.test_fraction must be below 1 (training needs images), "
                              f"got {self.val_fraction} + {self.test_fraction}", "data.val_fraction")
        require_int("data.split_seed", self.split_seed, 0, MAX_SPLIT_SEED)
        require_number("data.max_bad_fraction", self.max_bad_fraction, 0, 1, high_open=True)
        for key in ("image_column", "label_column"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, str) and 0 < len(value) <= 256 and value.isprintable()):
                raise ConfigError(f"data.{key} must be a column name, got {value!r}", f"data.{key}")

    def to_dict(self) -> dict:
        """The settings as config.json and the cache's name hold them (``auto_size_cap`` left
        out while it is the default, so both stay what they were before it existed)."""
        return written_values(self)


def check_data_settings(name: str, data: DataSettings) -> None:
    """Refuse settings that do not apply to dataset ``name`` (a setting is checked when given)."""
    default = DataSettings()
    given = [f.name for f in fields(DataSettings) if getattr(data, f.name) != getattr(default, f.name)]
    if name not in USER_DATASETS and given:
        raise ConfigError(f"data.{given[0]} applies only to {', '.join(USER_DATASETS)} datasets, "
                          f"not {name}", f"data.{given[0]}")
    for key in ("image_column", "label_column"):
        if name != "hf" and getattr(data, key) is not None:
            raise ConfigError(f"data.{key} applies only to hf datasets, not {name}", f"data.{key}")

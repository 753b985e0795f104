"""A registry of named plug-in classes (search spaces, search strategies): built-in modules
are imported on first use, then any module named by the entry-point group, so a separate
package can add one without a change to evo.

A plug-in owns its settings (:class:`Plugin`): it names a frozen dataclass whose defaults,
ranges and one-line errors (:mod:`evo.config_checks`) are its own; ``evo init`` validates
them, config.json stores them under the plug-in's block, ``evo init --help`` lists them, and
the plug-in receives its settings object when a run sets it up. What a plug-in sees of the
run is :class:`RunView`, never the run config's class.
"""

from __future__ import annotations

import importlib
import threading
from importlib.metadata import entry_points
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from dna.bounds import Bounds

T = TypeVar("T", bound=type)


class RunView(Protocol):
    """What a plug-in may read of the run it is set up for (``evo.config.RunConfig`` is one)."""

    dataset: str
    population_size: int
    selection: str
    search_space: str
    seed: int
    bounds: Bounds

    @property
    def dataset_name(self) -> str: ...

    def settings_of(self, block: str) -> Any:
        """The settings object of the plug-ins whose block is ``block``."""

    def uses(self, block: str) -> bool:
        """True when the run's search space, strategy or fitness mode keeps its settings in ``block``."""


class Plugin:
    """A registered class that may own settings.

    ``settings_class``: a frozen dataclass (None: the plug-in has no settings). Its
    ``__post_init__`` checks each value (with :mod:`evo.config_checks`, naming the setting as
    ``block.key``); it may define ``check_run(self, run: RunView)`` for checks against the
    run (called at ``evo init`` and whenever a config is read). ``settings_key``: the block
    of config.json that holds them (None: the plug-in's ``name``); plug-ins may share one
    block if they share the class. ``settings_inline``: the fields stand at config.json's
    top level instead of in a block of their own. A block is written to config.json when
    the run uses it, when it differs from its defaults, or when its class sets
    ``written_always`` (the blocks config.json has always carried). A field whose metadata has
    ``omit_default`` is left out of the block while it holds its default.
    """

    name: ClassVar[str]
    settings_class: ClassVar[type | None] = None
    settings_key: ClassVar[str | None] = None
    settings_inline: ClassVar[bool] = False

    @classmethod
    def settings_block(cls) -> str | None:
        """The block of config.json that holds this plug-in's settings (None: it has none)."""
        if cls.settings_class is None:
            return None
        return cls.settings_key or cls.name


class Registry(Generic[T]):
    """Classes registered under their ``name`` attribute; ``what`` names them in errors."""

    def __init__(self, what: str, builtin_modules: tuple[str, ...], entry_point_group: str):
        self.what = what
        self.builtin_modules = builtin_modules
        self.entry_point_group = entry_point_group
        self._classes: dict[str, T] = {}
        self._loaded = False
        # Reentrant: a module being loaded may itself ask the registry for names.
        self._lock = threading.RLock()
        self._loading = False

    def register(self, cls: T) -> T:
        """Class decorator: make ``cls`` the one named ``cls.name``."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"a {self.what} needs a name that is an identifier, got {name!r}")
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._classes[name] = cls
        return cls

    def _load(self) -> None:
        # Marked loaded only once everything is imported, under a lock: another thread asking
        # meanwhile waits instead of seeing a half-filled registry.
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:   # _loading: this thread is inside a module's import
                return
            self._loading = True
            try:
                for module in self.builtin_modules:
                    importlib.import_module(module)
                for ep in entry_points(group=self.entry_point_group):
                    ep.load()
                self._loaded = True
            finally:
                self._loading = False

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load()
        return sorted(self._classes)

    def get(self, name: str) -> T:
        """The class registered as ``name``; ValueError naming the known ones."""
        self._load()
        if name not in self._classes:
            raise ValueError(f"unknown {self.what} {name!r} (known: {', '.join(sorted(self._classes))})")
        return self._classes[name]

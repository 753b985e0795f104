"""A registry of named plug-in classes (search spaces, search strategies): built-in modules
are imported on first use, then any module named by the entry-point group, so a separate
package can add one without a change to evo."""

from __future__ import annotations

import importlib
import threading
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


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

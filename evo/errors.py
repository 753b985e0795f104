"""evo's errors: one base, four kinds a user can tell apart, and the one-line message helper.

Kinds (every error evo raises on purpose is one of them)::

    EvoError                 anything evo reports as a one-line message (no traceback)
    ├── SettingsError        bad configuration, options or input: config.json, a CLI option,
    │                        a device that is not there, a DNA or export the user named
    ├── DataError            a dataset that is unknown, missing, malformed, or whose decoded
    │                        cache is damaged
    ├── StoreFailure         the population store cannot be opened or used, or is damaged
    │                        (a corrupt record, an unreadable entry, a foreign policy)
    └── PluginError          a search space, strategy or evaluator misbehaved (a bug in a
                             plug-in, not in the user's settings or data)

A class of evo/ or launch/ names its kind as a base, next to the built-in base it always had
(``class ConfigError(SettingsError, ValueError)``), so ``except ValueError`` still sees it.

Lower layers. ``storage`` and ``dna`` sit below evo and never import it, so their errors
(``storage.StoreError``, ``dna.DNAError``, ...) cannot name a kind as a base. They are
*registered* with their kind instead (``abc.ABCMeta.register``, see ``_FOREIGN``): for them
``isinstance(exc, EvoError)``, ``issubclass(storage.StoreError, StoreFailure)`` and
:func:`kind_of` are true. Registration is lazy: the modules are never imported from here
(importing this module imports nothing but ``abc`` and ``sys``, so the torch-free CLI stays
light); a class is registered by the first check made after its module was imported, and an
exception of a class cannot exist before its module is imported.

One catch, and it is CPython's: an ``except`` clause compares classes with the real class
hierarchy and ignores ABC registration, so ``except EvoError`` does NOT catch a
``storage.StoreError``. Catch with :func:`caught`, which returns the kind together with
every class registered under it, as a tuple ``except`` accepts::

    try:
        ...
    except caught(StoreFailure) as exc:
        log.warning("store: %s", one_line(exc))

One line. :func:`one_line` is the only helper that turns an exception into a message for a
log line, a heartbeat or ``PROG: error: ...``: the whole message with its whitespace
(newlines included) collapsed into single spaces, cut at ``limit`` characters; the class
name alone when the message is empty. It never raises. ``with_type=True`` prefixes the
class name (``OSError: disk full``) for causes that are not evo's own errors, where the
type says what happened (a ``KeyError`` from a plug-in); evo's own messages are written to
be read without it.
"""

from __future__ import annotations

import abc
import sys

__all__ = ["EvoError", "SettingsError", "DataError", "StoreFailure", "PluginError", "caught", "kind_of",
           "one_line"]

ONE_LINE_LIMIT = 300   # characters of a message kept by one_line


class _Kind(abc.ABCMeta):
    """ABCMeta that first registers the lower layers' error classes already imported."""

    def __instancecheck__(cls, instance) -> bool:
        _adopt()
        return super().__instancecheck__(instance)

    def __subclasscheck__(cls, subclass) -> bool:
        _adopt()
        return super().__subclasscheck__(subclass)


class EvoError(Exception, metaclass=_Kind):
    """An error evo reports as one line (see the module docstring for the kinds)."""

    kind = "error"


class SettingsError(EvoError):
    """Bad configuration, options or input the user gave; the message says which and why."""

    kind = "settings"


class DataError(EvoError):
    """A dataset that cannot be used (unknown, missing, malformed, damaged cache)."""

    kind = "data"


class StoreFailure(EvoError):
    """The population store failed (cannot be opened or used) or is damaged."""

    kind = "store"


class PluginError(EvoError):
    """A search space, strategy or evaluator misbehaved: a bug in the plug-in."""

    kind = "plug-in"


KINDS = (SettingsError, DataError, StoreFailure, PluginError)

# The lower layers' errors: module -> {class name: kind}. Registered when their module is in
# sys.modules (never imported from here: dna.portable_io imports torch).
_FOREIGN: dict[str, dict[str, type[EvoError]]] = {
    "storage.backend": {"StoreError": StoreFailure, "UnreadableEntry": StoreFailure},
    "storage.records": {"CorruptRecord": StoreFailure},
    "dna.genome": {"DNAError": SettingsError},
    "dna.portable_images": {"ImageProblem": DataError},
    "dna.portable_io": {"ExportError": SettingsError},
}
_registered: dict[type, type[EvoError]] = {}   # foreign class -> its kind


def _adopt() -> None:
    """Register the foreign error classes whose modules are imported by now."""
    if not _FOREIGN:
        return
    ready = [(m, _FOREIGN.pop(m)) for m in [m for m in _FOREIGN if m in sys.modules]]   # before register(),
    for module, names in ready:                                                          # which calls back here
        for name, kind in names.items():
            cls = getattr(sys.modules[module], name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in _registered:
                abc.ABCMeta.register(kind, cls)
                _registered[cls] = kind


def caught(kind: type[EvoError] = EvoError) -> tuple[type[BaseException], ...]:
    """``kind`` and every lower-layer class registered under it (or under a kind below it),
    as a tuple for an ``except`` clause, which ignores ABC registration."""
    _adopt()
    return (kind, *[cls for cls, k in _registered.items() if issubclass(k, kind)])


def kind_of(exc: BaseException) -> type[EvoError] | None:
    """The kind of ``exc`` (one of :data:`KINDS`, or :class:`EvoError` itself), or None when
    it is not one of evo's errors."""
    for kind in KINDS:
        if isinstance(exc, kind):
            return kind
    return EvoError if isinstance(exc, EvoError) else None


def one_line(exc: BaseException, *, with_type: bool = False, limit: int = ONE_LINE_LIMIT) -> str:
    """``exc``'s message on one line (whitespace collapsed, at most ``limit`` characters, ``…``
    marking a cut), or its class name when the message is empty; ``with_type``: prefixed
    with the class name, ``"OSError: disk full"``. Never raises (a ``__str__`` that raises
    counts as an empty message)."""
    name = type(exc).__name__
    try:
        text = " ".join(str(exc).split())
    except Exception:
        text = ""
    if len(text) > limit:
        text = text[:max(0, limit - 1)].rstrip() + "…"
    if not text:
        return name
    return f"{name}: {text}" if with_type else text

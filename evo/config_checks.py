"""The one error of a run configuration and the checks every settings dataclass uses
(the run's own and every plug-in's): each raises :class:`ConfigError` with a one-line
message that names the setting."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from dna.bounds import check_int, check_number
from evo.errors import SettingsError


class ConfigError(SettingsError, ValueError):
    """A run configuration that is malformed or inconsistent. One-line message.

    ``field`` names the offending setting as a config.json path (``train.batch_size``) when
    one setting is at fault, so a caller can name the option the user gave.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def require_int(name: str, value: Any, low: int, high: int) -> None:
    """``value`` is an int (not a bool) in ``low..high``."""
    try:
        check_int(name, value, low, high)
    except ValueError as exc:
        raise ConfigError(str(exc), name) from None


def require_number(name: str, value: Any, low: float, high: float, **open_ends: bool) -> None:
    """``value`` is a finite number in ``low..high`` (``low_open``/``high_open``: excluding that end)."""
    try:
        check_number(name, value, low, high, **open_ends)
    except ValueError as exc:
        raise ConfigError(str(exc), name) from None


def require_flag(name: str, value: Any) -> None:
    """``value`` is true or false."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}", name)


def require_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"unknown {name} {value!r} (choose from {', '.join(choices)})", name)


def settings_from_dict(kind: type, value: Any, where: str) -> Any:
    """The settings dataclass ``kind`` from its config.json object ``value`` (the block at
    ``where``); unknown or mistyped keys and out-of-range values raise ConfigError."""
    if not isinstance(value, dict):
        raise ConfigError(f"config {where} must be an object")
    known = {f.name for f in fields(kind)}
    unknown = set(value) - known
    if unknown:
        raise ConfigError(f"config {where} has unknown key(s) {', '.join(sorted(unknown))}")
    try:
        return kind(**value)
    except ConfigError:
        raise
    except ValueError as exc:  # Bounds (in dna/, which knows nothing of ConfigError)
        field_name = str(exc).split(" ", 1)[0]
        raise ConfigError(str(exc), field_name if field_name.startswith(where + ".") else where) from None
    except TypeError as exc:
        raise ConfigError(f"config {where}: {exc}") from None


def written_values(settings: Any) -> dict[str, Any]:
    """A settings dataclass as config.json holds it: every field, except a field whose
    metadata has ``omit_default`` while it holds its default (a setting added after
    config.json files existed: those files are written back byte for byte)."""
    values = asdict(settings)
    for f in fields(settings):
        if f.metadata.get("omit_default") and values[f.name] == f.default:
            del values[f.name]
    return values

"""The one error of a run configuration and the checks every settings dataclass uses."""

from __future__ import annotations

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


def _int(name: str, value: Any, low: int, high: int) -> None:
    try:
        check_int(name, value, low, high)
    except ValueError as exc:
        raise ConfigError(str(exc), name) from None


def _number(name: str, value: Any, low: float, high: float, **open_ends: bool) -> None:
    try:
        check_number(name, value, low, high, **open_ends)
    except ValueError as exc:
        raise ConfigError(str(exc), name) from None


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}", name)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"unknown {name} {value!r} (choose from {', '.join(choices)})", name)

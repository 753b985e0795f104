"""Value checks for command-line options, as argparse ``type=`` functions (and
:func:`check_extension` for an output file whose extension picks its format).

A value outside its range is refused when the command line is parsed, in one line that
names the option, the valid range and the value (``evo worker: error: argument
--max-seconds: must be a finite number > 0, got 'nan'``), instead of being accepted and
failing later, in every worker.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from typing import Any, Callable

from .errors import UserError

URL_HELP = "population directory: PATH, file://PATH, gs://BUCKET/PREFIX"


def add_url(parser: argparse.ArgumentParser, help: str = URL_HELP) -> None:
    """Add the positional ``url`` (the population directory) that most commands take first."""
    parser.add_argument("url", help=help)


def add_command(sub: Any, name: str, *, url_help: str = URL_HELP, **parser_options: Any) -> argparse.ArgumentParser:
    """A subcommand's parser (``help``, ``description``, ``prog`` as for ``add_parser``) whose
    first argument is the population ``url``: the shape of almost every evo command."""
    parser = sub.add_parser(name, **parser_options)
    add_url(parser, url_help)
    return parser


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """A ``type=`` function accepting integers in ``low..high`` (no upper limit when None)."""
    valid = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {valid}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {valid}, got {value}")
        return value

    parse.__name__ = valid  # argparse names the type in some messages
    return parse


def number(low: float = 0.0, *, low_open: bool = True) -> Callable[[str], float]:
    """A ``type=`` function accepting finite numbers above ``low`` (or at least ``low`` when
    ``low_open`` is False); NaN and infinities are refused."""
    valid = f"a finite number {'>' if low_open else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {valid}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"must be {valid}, got {text!r}")
        return value

    parse.__name__ = valid
    return parse


def device(*, auto: bool = True) -> Callable[[str], str]:
    """A ``type=`` function accepting a torch device name: ``cpu``, ``cuda``, ``cuda:N``,
    ``mps`` and, where ``auto``, ``auto``."""
    names = ("auto | " if auto else "") + "cpu | cuda | cuda:N | mps"
    pattern = re.compile(("auto|" if auto else "") + r"cpu|cuda|cuda:\d+|mps")

    def parse(text: str) -> str:
        if not pattern.fullmatch(text):
            raise argparse.ArgumentTypeError(f"must be a device ({names}), got {text!r}")
        return text

    parse.__name__ = "device"
    return parse


positive_int = integer(1)            # counts that must be at least one: -n, --max-individuals
non_negative_int = integer(0)        # indices, seeds, GPU counts, limits where 0 means none
positive_seconds = number(0.0)       # durations and intervals: > 0, finite
non_negative_seconds = number(0.0, low_open=False)


_MEMORY_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def memory_size(text: str) -> int:
    """A ``type=`` function for a memory size: bytes, or a number with K, M, G or T (powers of
    1024; ``80G``, ``80GiB``, ``1.5T``); 0 is allowed (it turns a check off)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", text or "")
    value = float(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()] if m else -1.0
    if not m or not math.isfinite(value) or value > 2**60:
        raise argparse.ArgumentTypeError(f"must be a memory size such as 80G, 512M or 0, got {text!r}"[:200])
    return int(value)


def add_worker_limits(p: argparse.ArgumentParser, *, max_seconds_help: str =
                      "each worker stops starting children after T seconds (default: no limit)") -> None:
    """The limits every launcher passes on to its workers: ``--max-seconds``,
    ``--max-individuals`` and ``--max-failed-children`` (the circuit breaker)."""
    p.add_argument("--max-seconds", type=positive_seconds, metavar="T", help=max_seconds_help)
    p.add_argument("--max-individuals", type=positive_int, metavar="K",
                   help="each worker stops after publishing K individuals (default: no limit)")
    p.add_argument("--max-failed-children", type=positive_int, metavar="K",
                   help="each worker stops (exit 3) after K children in a row failed (default: evo worker's, 10)")


def lease_seconds(text: str) -> float:
    """``type=`` for a claim's lease: seconds in [5, 86400] (``storage.retrain``'s range)."""
    value = number(0.0)(text)
    if not 5 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be a number of seconds in [5, 86400], got {text!r}")
    return value


def heartbeat_seconds(text: str) -> float:
    """``type=`` for ``--heartbeat-seconds``: seconds in (0, 3600]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number of seconds in (0, 3600], got {text!r}")
    return value


def check_extension(path: str, option: str, formats: list[str]) -> None:
    """UserError (one line) unless ``path`` ends in ``.FORMAT`` for one of ``formats``."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in formats:
        raise UserError(f"{path}: unsupported file type for {option} (the extension picks the format); "
                        f"use one of {', '.join('.' + f for f in formats)}")

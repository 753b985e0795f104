"""The ``evo`` command: one subcommand per module in ``launch/``.

Each command module exposes ``register(subparsers)`` (adds its parser and sets
``func``); ``main`` dispatches. Expected failures (bad input, missing files) raise
``launch.errors.UserError`` and are printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import UserError

# Subcommand modules, in the order `evo --help` lists them.
COMMAND_MODULES = [
    "launch.cmd_init",
    "launch.cmd_worker",
    "launch.cmd_launch",
    "launch.cmd_check",
    "launch.cmd_audit",
    "launch.cmd_status",
    "launch.cmd_plot",
    "launch.cmd_lineage",
    "launch.cmd_best",
    "launch.cmd_evaluate",
    "launch.slurm",   # `evo launch slurm ...` (registered as the hidden command launch-slurm)
    "launch.k8s",     # `evo launch k8s ...` (hidden command launch-k8s)
]

# `evo launch ENGINE URL ...` goes to the engine's own parser; `evo launch URL` stays local.
LAUNCH_ENGINES = ("slurm", "k8s")


def route(argv: list[str]) -> list[str]:
    """Rewrite ``launch slurm|k8s ...`` to the hidden ``launch-slurm|launch-k8s ...`` commands."""
    if len(argv) >= 2 and argv[0] == "launch" and argv[1] in LAUNCH_ENGINES:
        return [f"launch-{argv[1]}"] + argv[2:]
    return argv


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (only modules that exist are registered)."""
    parser = argparse.ArgumentParser(prog="evo", description="Coordinator-free large-scale evolution of image classifiers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``evo`` console script; returns the exit code."""
    from dna import DNAError
    from evo.config import ConfigError
    from evo.data import DatasetError
    from storage.backend import StoreError

    argv = route(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    name = args.command.replace("-", " ")
    try:
        return int(args.func(args) or 0)
    except (UserError, StoreError, ConfigError, DatasetError, DNAError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"evo {name}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"evo {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `evo status URL | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

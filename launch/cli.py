"""The ``evo`` command: one subcommand per module in ``launch/commands/``.

Each command module exposes ``register(subparsers)`` (adds its parser and sets
``func``); ``main`` dispatches. Expected failures (bad input, missing files) raise
``launch.errors.UserError`` and are printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import one_line_errors, run_reporting

# Each command and the module that registers it, in the order `evo --help` lists them.
COMMANDS = {
    "init": "launch.commands.init",
    "worker": "launch.commands.worker",
    "launch": "launch.commands.launch",
    "check": "launch.commands.check",
    "audit": "launch.commands.audit",
    "status": "launch.commands.status",
    "plot": "launch.commands.plot",
    "report": "launch.commands.report",
    "lineage": "launch.commands.lineage",
    "arch": "launch.commands.arch",
    "best": "launch.commands.best",
    "evaluate": "launch.commands.evaluate",
    "retrain": "launch.commands.retrain",
    "launch-slurm": "launch.commands.launch_slurm",   # `evo launch slurm ...` (hidden: reached through route())
    "launch-k8s": "launch.commands.launch_k8s",       # `evo launch k8s ...`
}
COMMAND_MODULES = list(COMMANDS.values())

# `evo launch ENGINE URL ...` goes to the engine's own parser; `evo launch URL` stays local.
LAUNCH_ENGINES = ("slurm", "k8s")


def route(argv: list[str]) -> list[str]:
    """Rewrite ``launch slurm|k8s ...`` to the hidden ``launch-slurm|launch-k8s ...`` commands."""
    if len(argv) >= 2 and argv[0] == "launch" and argv[1] in LAUNCH_ENGINES:
        return [f"launch-{argv[1]}"] + argv[2:]
    return argv


# Commands reached another way (`evo launch slurm|k8s`): parsed, but not listed by `evo --help`.
HIDDEN_COMMANDS = tuple(f"launch-{engine}" for engine in LAUNCH_ENGINES)


class HelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help where it has a real default and the help
    does not already state one (no "(default: None)" or "(default: False)" noise)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if not text or text == argparse.SUPPRESS or "default" in text.lower():
            return text
        if any(action.default is nothing for nothing in (None, False, True, argparse.SUPPRESS)):
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text  # a required positional has no default
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """evo's parser: no abbreviated flags (``--rep`` must not mean ``--repair``), defaults in
    --help, and usage errors as one line. Subparsers are of this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """Print ``PROG: error: MESSAGE (see PROG --help)`` on one line and exit with 2."""
        for hidden in HIDDEN_COMMANDS:  # "invalid choice ... (choose from ...)" lists every command
            message = message.replace(f", '{hidden}'", "").replace(f"'{hidden}', ", "")
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


def version() -> str:
    """The installed evo's version (from the package metadata)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("evo")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _Version(argparse.Action):
    """``--version``: the package metadata is read only when it is asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"evo {version()}")
        parser.exit(0)


def build_parser(argv: list[str] | None = None, parser_class: type[Parser] = Parser) -> argparse.ArgumentParser:
    """The argument parser. With ``argv`` (already routed) naming a command, only that
    command's module is imported and registered (an inspection command then does not pay
    for importing every other command); else every command is (``evo --help``, a typo).
    ``parser_class``: a :class:`Parser` subclass for it and its subparsers (the Python API's
    raises its usage errors instead of exiting)."""
    parser = parser_class(prog="evo", description="Coordinator-free large-scale evolution of image classifiers.")
    parser.add_argument("--version", action=_Version, help="show program's version number and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for command, name in COMMANDS.items():
        if wanted is not None and command != wanted:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)  # hidden commands register without help=, so they are not listed
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``evo`` console script; returns the exit code."""
    argv = route(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the subcommand whose help lists the valid options, not bare `evo`
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    prog = f"evo {args.command.replace('-', ' ')}"

    def command() -> int:
        try:
            return int(args.func(args) or 0)
        except BrokenPipeError:  # `evo status URL | head`: the reader left; not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except OSError as exc:  # a file problem no command foresaw: still one line, naming the file
            where = exc.filename if exc.filename is not None else getattr(args, "url", None) or "evo"
            print(f"{prog}: error: {where}: {exc.strerror or type(exc).__name__}", file=sys.stderr)
            return 2

    return run_reporting(prog, command, one_line_errors())


if __name__ == "__main__":
    sys.exit(main())

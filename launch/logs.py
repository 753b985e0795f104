"""How evo's long-running processes log: one line per event on stderr, prefixed with the time
and the pid (`evo worker`, and the SLURM array tasks of `evo launch slurm`)."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging(quiet: bool = False) -> None:
    """One line per event on stderr, prefixed with time and pid."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format=f"%(asctime)s [{os.getpid()}] %(message)s", datefmt="%H:%M:%S", stream=sys.stderr,
    )

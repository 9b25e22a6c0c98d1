"""One module per command group; each exposes ``register(app)``."""

from __future__ import annotations

import os
import sys


def detach_stdout() -> None:
    """The reader of stdout went away (``| head``): point stdout at /dev/null, so later writes
    and the interpreter's exit-time flush neither raise nor print a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)

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


def log_to_stderr() -> None:
    """Log lines go to stderr so stdout stays the summary, the live view or clean ``--json``.
    The summaries name every outcome, so at the default level only warnings (a retry, an
    outboxed channel) reach the operator's terminal; ``DHASH_LOG_LEVEL=DEBUG`` shows everything."""
    from dhash_service.config import Settings
    from dhash_service.logs import configure_logging

    level = Settings().log_level.upper()
    configure_logging("WARNING" if level == "INFO" else level, stream=sys.stderr)

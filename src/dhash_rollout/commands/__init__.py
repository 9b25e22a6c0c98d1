"""One module per command group; each exposes ``register(app)``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator

import typer

from dhash_service.errors import DhashError


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


@contextlib.contextmanager
def json_refusal(as_json: bool) -> Iterator[None]:
    """With ``--json`` a refusal (lock held, nothing to roll back, database down) is a JSON
    object on stdout too, with the same exit code, not only a line on stderr."""
    try:
        yield
    except DhashError as err:
        if not as_json:
            raise
        answer = {"ok": False, "refused": True, "error": err.message, "exit_code": err.exit_code}
        typer.echo(json.dumps(answer, indent=2))
        typer.echo(f"dhash: error: {err.message}", err=True)
        raise typer.Exit(err.exit_code) from None

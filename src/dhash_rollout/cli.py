"""The ``dhash`` command line: thin, maps errors to exit codes, never shows a traceback."""

from __future__ import annotations

import importlib
import sys

import typer
from pydantic import ValidationError

from dhash_rollout.commands import detach_stdout
from dhash_service.config import settings_error
from dhash_service.errors import DhashError

app = typer.Typer(
    name="dhash",
    help="dhash: perceptual image hashing service and its guarded rollout toolkit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its commands on ``app`` through ``register(app)``; one module per job.
COMMAND_MODULES: list[str] = [
    "dhash_rollout.commands.hashing",
    "dhash_rollout.commands.notify",
    "dhash_rollout.commands.deploy",
    "dhash_rollout.commands.backup",
    "dhash_rollout.commands.migrate",
    "dhash_rollout.commands.service",
    "dhash_rollout.commands.checks",
    "dhash_rollout.commands.monitor",
    "dhash_rollout.commands.review",
    "dhash_rollout.commands.canary",
]


@app.command()
def version() -> None:
    """Print the installed dhash version."""
    from dhash_service import __version__

    typer.echo(__version__)


def _version_option(wanted: bool) -> None:
    if wanted:
        version()
        raise typer.Exit()


@app.callback()
def _root(
    _version: bool = typer.Option(
        False, "--version", callback=_version_option, is_eager=True, help="Print the version."
    ),
) -> None:
    """dhash: perceptual image hashing service and its guarded rollout toolkit."""


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: returns the process exit code, never a traceback."""
    _load_commands()
    try:
        app(args=argv, prog_name="dhash")
    except SystemExit as exc:  # click's standalone mode always ends this way
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except DhashError as err:
        typer.echo(f"dhash: error: {err.message}", err=True)
        return err.exit_code
    except BrokenPipeError:  # the reader went away (``| head``): no traceback for that
        detach_stdout()
        return 1
    except ValidationError as exc:  # settings read where no command turned them into an error
        problem = settings_error(exc)
        typer.echo(f"dhash: error: {problem.message}", err=True)
        return problem.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``dhash`` command line: thin, maps errors to exit codes, never shows a traceback."""

from __future__ import annotations

import importlib
import sys

import typer

from dhash_service.errors import DhashError

app = typer.Typer(
    name="dhash",
    help="dhash: perceptual image hashing service and its guarded rollout toolkit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its commands on ``app`` through ``register(app)``; one module per job.
COMMAND_MODULES: list[str] = []


@app.command()
def version() -> None:
    """Print the installed dhash version."""
    from dhash_service import __version__

    typer.echo(__version__)


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: returns the process exit code."""
    _load_commands()
    try:
        app(args=argv, standalone_mode=False)
    except DhashError as err:
        typer.echo(f"dhash: error: {err.message}", err=True)
        return err.exit_code
    except KeyboardInterrupt:
        typer.echo("dhash: interrupted", err=True)
        return 130
    except SystemExit as exc:  # raised by typer.Exit / click on --help
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            typer.echo("dhash: aborted", err=True)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

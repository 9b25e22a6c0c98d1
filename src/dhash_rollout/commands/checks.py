"""``dhash smoke``, ``validate-logging``, ``preflight``, ``check daily|weekly``, ``maintenance``.

Thin: each command loads the environment, calls the matching ``dhash_rollout.checks`` runner,
prints a table (or ``--json``) and exits 1 through :class:`CheckFailed` when any check failed.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dhash_service.errors import CheckFailed, ConfigError

if TYPE_CHECKING:
    from dhash_rollout.checks.report import CheckReport

SMOKE_LOG = "postdeploy-smoketests.log"
LOGGING_LOG = "test_logging.log"

EnvOption = typer.Option(..., "--env", help="Environment: staging, production or canary.")
JsonOption = typer.Option(False, "--json", help="Print the report as JSON.")
WorkdirOption = typer.Option(
    None, "--workdir", help="Directory holding backups/, logs/ and the artifacts (default: cwd)."
)


def _show(title: str, report: CheckReport, as_json: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    if as_json:
        typer.echo(json.dumps({"run": title, **report.to_dict()}, indent=2))
    else:
        console = Console(highlight=False)
        if not console.is_terminal:
            console.width = max(console.width, 120)  # CI logs: keep details on one line
        table = Table(title=title, title_justify="left")
        table.add_column("check", no_wrap=True)
        table.add_column("result", no_wrap=True)
        table.add_column("detail", overflow="fold")
        table.add_column("s", justify="right", no_wrap=True)
        for r in report.results:
            mark = "[green]PASS[/]" if r.ok else "[red]FAIL[/]"
            table.add_row(r.name, mark, r.detail, f"{r.seconds:.2f}")
        console.print(table)
        if report.log_path is not None:
            console.print(f"log: {report.log_path}")
    if not report.ok:
        raise CheckFailed(f"{title} failed: {report.summary()}")


def _workdir(workdir: Path | None) -> Path:
    """A mistyped ``--workdir`` is a usage error, not a list of "missing" artifacts."""
    path = (workdir or Path.cwd()).resolve()
    if not path.is_dir():
        raise ConfigError(f"--workdir {workdir} is not a directory")
    return path


def smoke(
    *,
    env: str = EnvOption,
    timeout: float = typer.Option(
        600.0, "--timeout", min=1.0, help="Overall deadline in seconds (readiness is retried)."
    ),
    post_rollback: bool = typer.Option(
        False, "--post-rollback", help="Verify a rollback: also check the active release."
    ),
    log: Path = typer.Option(Path(SMOKE_LOG), "--log", help="Where to write the result log."),
    as_json: bool = JsonOption,
) -> None:
    """Smoke-test a deployed environment: health, ready, metrics, known hash, round trip."""
    from dhash_rollout.checks.smoke import run_smoke
    from dhash_rollout.environments import load_environment

    report = run_smoke(
        load_environment(env), timeout=timeout, post_rollback=post_rollback, log_path=log
    )
    _show(f"smoke ({env})", report, as_json)


def validate_logging(
    *,
    env: str = EnvOption,
    concurrency: int = typer.Option(
        5, "--concurrency", min=1, max=64, help="Requests in flight at once."
    ),
    log: Path = typer.Option(Path(LOGGING_LOG), "--log", help="Where to write the result log."),
    as_json: bool = JsonOption,
) -> None:
    """Send concurrent requests, then check every log line they produced."""
    from dhash_rollout.checks.logging_check import run_logging_validation
    from dhash_rollout.environments import load_environment

    report = run_logging_validation(load_environment(env), concurrency=concurrency, log_path=log)
    _show(f"validate-logging ({env})", report, as_json)


def preflight(
    *, env: str = EnvOption, workdir: Path | None = WorkdirOption, as_json: bool = JsonOption
) -> None:
    """The guide's pre-deployment checklist: backup, dry runs, test logs, artifacts, approvals."""
    from dhash_rollout.checks.preflight import run_preflight
    from dhash_rollout.environments import load_environment

    report = run_preflight(load_environment(env), workdir=_workdir(workdir))
    _show(f"preflight ({env})", report, as_json)


def check_daily(
    *,
    env: str = typer.Option("production", "--env", help="Environment to check."),
    workdir: Path | None = WorkdirOption,
    as_json: bool = JsonOption,
) -> None:
    """The guide's morning health check: health, backup age, disk space."""
    from dhash_rollout.checks.daily import run_daily
    from dhash_rollout.environments import load_environment

    report = run_daily(load_environment(env), workdir=_workdir(workdir))
    _show(f"daily check ({env})", report, as_json)


def check_weekly(
    *,
    env: str = typer.Option("production", "--env", help="Environment whose backups to verify."),
    count: int = typer.Option(7, "--count", min=1, help="How many of the newest backups."),
    workdir: Path | None = WorkdirOption,
    as_json: bool = JsonOption,
) -> None:
    """The guide's weekly backup verification: the newest backups, each verified end to end."""
    from dhash_rollout.checks.daily import run_weekly
    from dhash_rollout.environments import load_environment

    report = run_weekly(load_environment(env), workdir=_workdir(workdir), count=count)
    _show(f"weekly backup verification ({env})", report, as_json)


def maintenance(
    *,
    env: str = typer.Option("production", "--env", help="Environment to maintain."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Report what would change; change nothing."
    ),
    retention_days: int = typer.Option(
        30, "--retention-days", min=1, help="Delete backups older than this (newest verified kept)."
    ),
    archive_after_days: float = typer.Option(
        7.0, "--archive-after-days", min=0.0, help="Archive closed logs untouched this long."
    ),
    workdir: Path | None = WorkdirOption,
    as_json: bool = JsonOption,
) -> None:
    """Monthly maintenance: remove backups older than 30 days, archive closed logs."""
    from dhash_rollout.checks.maintenance import run_maintenance
    from dhash_rollout.environments import load_environment

    report = run_maintenance(
        load_environment(env),
        workdir=_workdir(workdir),
        dry_run=dry_run,
        retention=timedelta(days=retention_days),
        archive_after_days=archive_after_days,
    )
    _show(f"maintenance ({env}){' [dry run]' if dry_run else ''}", report, as_json)


def register(app: typer.Typer) -> None:
    app.command("smoke")(smoke)
    app.command("validate-logging")(validate_logging)
    app.command("preflight")(preflight)
    app.command("maintenance")(maintenance)
    check_app = typer.Typer(help="Routine operational checks from the guide's runbooks.")
    check_app.command("daily")(check_daily)
    check_app.command("weekly")(check_weekly)
    app.add_typer(check_app, name="check")

"""``dhash migrate`` (upgrade to head), ``migrate status``, ``migrate downgrade REV`` and a real
``--dry-run`` that writes ``migrate-dryrun.log``.

The database is the environment's (``--env``) or, without ``--env``, ``DHASH_DATABASE_URL``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dhash_service.errors import CheckFailed

DRYRUN_LOG = "migrate-dryrun.log"

migrate_app = typer.Typer(
    name="migrate",
    help="Schema migrations: upgrade to head (default), status, downgrade, --dry-run.",
    invoke_without_command=True,
)

EnvOption = typer.Option(None, "--env", help="Environment (default: DHASH_DATABASE_URL).")
JsonOption = typer.Option(False, "--json", help="Print the result as JSON.")
DryRunOption = typer.Option(
    False, "--dry-run", help="Run inside a transaction and roll it back; write the log."
)
LogOption = typer.Option(Path(DRYRUN_LOG), "--log", help="Where --dry-run writes its report.")


def _database_url(env: str | None) -> str:
    if env:
        from dhash_rollout.environments import load_environment

        return load_environment(env).database_url
    from dhash_service.config import Settings

    return Settings().effective_database_url


def _print_status(status: object, as_json: bool, verb: str = "") -> None:
    from dhash_rollout.migrate import MigrationStatus

    assert isinstance(status, MigrationStatus)
    if as_json:
        typer.echo(json.dumps({"event": verb or "status", **status.to_dict()}))
        return
    if verb:
        typer.echo(f"{verb}: {status.database} is at {status.current or '(none)'}")
    typer.echo(f"database: {status.database}")
    typer.echo(f"current:  {status.current or '(none)'}")
    typer.echo(f"head:     {status.head}")
    if not status.known:
        typer.echo("the current revision is not one this release ships (a newer release's?)")
    for rev in status.pending:
        typer.echo(f"pending:  {rev.revision}  {rev.message}")


def _dry_run(url: str, log: Path, as_json: bool, *, target: str, direction: str) -> None:
    from dhash_rollout.migrate import dry_run

    report = dry_run(url, log, target=target, direction=direction)
    if as_json:
        typer.echo(json.dumps({"event": "migrate_dry_run", **report.to_dict()}))
    else:
        typer.echo(f"dry-run {direction} of {report.database}: {'OK' if report.ok else 'FAILED'}")
        typer.echo(f"current: {report.start or '(none)'}  target: {target}")
        for rev in report.pending:
            typer.echo(f"would apply: {rev.revision}  {rev.message}")
        for change in report.changes:
            typer.echo(f"  {change}")
        typer.echo(f"{len(report.statements)} SQL statements, rolled back; log: {log}")
        if report.error:
            typer.echo(f"error: {report.error}", err=True)
    if not report.ok:
        raise CheckFailed(f"migration dry-run failed: {report.error} (see {log})")


@migrate_app.callback()
def migrate(
    ctx: typer.Context,
    *,
    env: str | None = EnvOption,
    dry_run: bool = DryRunOption,
    downgrade_to: str | None = typer.Option(
        None, "--downgrade", help="Downgrade to this revision instead (same as `downgrade REV`)."
    ),
    upgrade_to: str | None = typer.Option(
        None, "--to", help="Upgrade to this revision, not head (a fleet's expand step)."
    ),
    log: Path = LogOption,
    as_json: bool = JsonOption,
) -> None:
    """Upgrade the database to this release's head (--dry-run to rehearse it)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"env": env, "dry_run": dry_run, "log": log, "json": as_json}
        return
    url = _database_url(env)
    direction, target = (
        ("downgrade", downgrade_to) if downgrade_to else ("upgrade", upgrade_to or "head")
    )
    if dry_run:
        _dry_run(url, log, as_json, target=target, direction=direction)
        return
    from dhash_rollout import migrate as migrations

    if downgrade_to:
        status = migrations.downgrade(url, downgrade_to)
        _print_status(status, as_json, "downgraded")
    else:
        status = migrations.upgrade(url, upgrade_to or "head")
        _print_status(status, as_json, "upgraded")


def _inherit(ctx: typer.Context, key: str, value: object) -> object:
    parent = ctx.obj if isinstance(ctx.obj, dict) else {}
    return value or parent.get(key)


@migrate_app.command("status")
def status(ctx: typer.Context, env: str | None = EnvOption, as_json: bool = JsonOption) -> None:
    """Current revision, head, and the pending migrations."""
    from dhash_rollout.migrate import migration_status

    env_name = _inherit(ctx, "env", env)
    url = _database_url(env_name if isinstance(env_name, str) else None)
    _print_status(migration_status(url), bool(_inherit(ctx, "json", as_json)))


@migrate_app.command("downgrade")
def downgrade(
    ctx: typer.Context,
    revision: str = typer.Argument(..., help="Target revision (or 'base')."),
    *,
    env: str | None = EnvOption,
    dry_run: bool = DryRunOption,
    log: Path = LogOption,
    as_json: bool = JsonOption,
) -> None:
    """Downgrade to REVISION (--dry-run to rehearse it)."""
    env_name = _inherit(ctx, "env", env)
    url = _database_url(env_name if isinstance(env_name, str) else None)
    use_json = bool(_inherit(ctx, "json", as_json))
    if dry_run or _inherit(ctx, "dry_run", False):
        _dry_run(url, log, use_json, target=revision, direction="downgrade")
        return
    from dhash_rollout import migrate as migrations

    _print_status(migrations.downgrade(url, revision), use_json, "downgraded")


def register(app: typer.Typer) -> None:
    app.add_typer(migrate_app, name="migrate")

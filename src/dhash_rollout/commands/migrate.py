"""``dhash migrate`` (upgrade to head), ``migrate status``, ``migrate downgrade REV`` and a real
``--dry-run`` that writes ``migrate-dryrun.log``.

The database is the environment's (``--env``) or, without ``--env``, ``DHASH_DATABASE_URL``.
``--dry-run --source BACKUP|DATABASE`` rehearses on a throw-away copy of a backup or of another
database instead (``migrate-dryrun-source.log``): the live database is only read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dhash_rollout.commands import json_refusal
from dhash_service.errors import CheckFailed, ConfigError

if TYPE_CHECKING:
    from dhash_rollout.migrate import DryRunReport

DRYRUN_LOG = "migrate-dryrun.log"
SOURCE_LOG = "migrate-dryrun-source.log"  # never the live dry-run's evidence preflight reads

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
LogOption = typer.Option(
    None,
    "--log",
    help=f"Where --dry-run writes its report ({DRYRUN_LOG}; {SOURCE_LOG} with --source).",
)
SourceOption = typer.Option(
    None,
    "--source",
    help="With --dry-run: rehearse on a copy of this backup archive, SQLite file or database URL.",
)


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


def _dry_run(
    url: str,
    log: Path | None,
    as_json: bool,
    *,
    target: str,
    direction: str,
    source: str | None = None,
) -> None:
    from dhash_rollout.migrate import check_database_url, dry_run

    if source is not None:
        check_database_url(url)  # a mistyped --env URL is a usage error before any copy
        log = log or Path(SOURCE_LOG)
        report = _rehearse(url, source, log, target=target, direction=direction)
    else:
        log = log or Path(DRYRUN_LOG)
        report = dry_run(url, log, target=target, direction=direction)
    if as_json:
        typer.echo(json.dumps({"event": "migrate_dry_run", **report.to_dict()}))
    else:
        what = f"a copy of {report.source}" if report.source else report.database
        typer.echo(f"dry-run {direction} of {what}: {'OK' if report.ok else 'FAILED'}")
        typer.echo(f"current: {report.start or '(none)'}  target: {target}")
        verb = "applied to the copy" if report.source else "would apply"
        for rev in report.pending:
            typer.echo(f"{verb}: {rev.revision}  {rev.message}")
        for change in report.changes:
            typer.echo(f"  {change}")
        for table in sorted(report.rows_before.keys() | report.rows_after.keys()):
            before, after = report.rows_before.get(table), report.rows_after.get(table)
            if before != after and (before is not None or after):  # not new empty tables
                typer.echo(f"  rows {table}: {before if before is not None else '-'} -> "
                           f"{after if after is not None else '-'}")  # fmt: skip
        done = "on the copy, then deleted it" if report.source else "rolled back"
        typer.echo(f"{len(report.statements)} SQL statements, {done}; log: {log}")
        if report.error:
            typer.echo(f"error: {report.error}", err=True)
    if not report.ok:
        failed = CheckFailed(f"migration dry-run failed: {report.error} (see {log})")
        if as_json:  # the report above is the one JSON answer: only the exit code is left
            typer.echo(f"dhash: error: {failed.message}", err=True)
            raise typer.Exit(failed.exit_code)
        raise failed


def _rehearse(url: str, source: str, log: Path, *, target: str, direction: str) -> DryRunReport:
    """Copy ``source`` (a PostgreSQL backup onto the server of ``url``), migrate the copy."""
    from dhash_rollout.backup.scratch import scratch_copy
    from dhash_rollout.migrate import rehearse

    with scratch_copy(source, server_url=url) as copy:
        return rehearse(
            copy.url,
            log,
            source=copy.label,
            source_revision=copy.source_revision,
            target=target,
            direction=direction,
            notes=copy.notes,
        )


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
    log: Path | None = LogOption,
    source: str | None = SourceOption,
    as_json: bool = JsonOption,
) -> None:
    """Upgrade the database to this release's head (--dry-run to rehearse it)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"env": env, "dry_run": dry_run, "log": log, "json": as_json, "source": source}
        return
    with json_refusal(as_json):
        _source_needs_dry_run(source, dry_run)
        url = _database_url(env)
        direction, target = (
            ("downgrade", downgrade_to) if downgrade_to else ("upgrade", upgrade_to or "head")
        )
        if dry_run:
            _dry_run(url, log, as_json, target=target, direction=direction, source=source)
            return
        from dhash_rollout import migrate as migrations

        if downgrade_to:
            status = migrations.downgrade(url, downgrade_to)
            _print_status(status, as_json, "downgraded")
        else:
            status = migrations.upgrade(url, upgrade_to or "head")
            _print_status(status, as_json, "upgraded")


def _source_needs_dry_run(source: str | None, dry_run: bool) -> None:
    if source is not None and not dry_run:
        raise ConfigError(
            "--source rehearses on a copy of a backup or database: it needs --dry-run "
            "(to put a backup in place, use dhash restore)"
        )


def _inherit(ctx: typer.Context, key: str, value: object) -> object:
    parent = ctx.obj if isinstance(ctx.obj, dict) else {}
    return value or parent.get(key)


@migrate_app.command("status")
def status(ctx: typer.Context, env: str | None = EnvOption, as_json: bool = JsonOption) -> None:
    """Current revision, head, and the pending migrations."""
    from dhash_rollout.migrate import migration_status

    env_name = _inherit(ctx, "env", env)
    use_json = bool(_inherit(ctx, "json", as_json))
    with json_refusal(use_json):
        url = _database_url(env_name if isinstance(env_name, str) else None)
        _print_status(migration_status(url), use_json)


@migrate_app.command("downgrade")
def downgrade(
    ctx: typer.Context,
    revision: str = typer.Argument(..., help="Target revision (or 'base')."),
    *,
    env: str | None = EnvOption,
    dry_run: bool = DryRunOption,
    log: Path | None = LogOption,
    source: str | None = SourceOption,
    as_json: bool = JsonOption,
) -> None:
    """Downgrade to REVISION (--dry-run to rehearse it)."""
    env_name = _inherit(ctx, "env", env)
    use_json = bool(_inherit(ctx, "json", as_json))
    rehearsal = _inherit(ctx, "source", source)
    rehearsal = rehearsal if isinstance(rehearsal, str) else None
    dry = bool(dry_run or _inherit(ctx, "dry_run", False))
    with json_refusal(use_json):
        _source_needs_dry_run(rehearsal, dry)
        url = _database_url(env_name if isinstance(env_name, str) else None)
        if dry:
            given = _inherit(ctx, "log", log)
            _dry_run(url, given if isinstance(given, Path) else None, use_json, target=revision,
                     direction="downgrade", source=rehearsal)  # fmt: skip
            return
        from dhash_rollout import migrate as migrations

        _print_status(migrations.downgrade(url, revision), use_json, "downgraded")


def register(app: typer.Typer) -> None:
    app.add_typer(migrate_app, name="migrate")

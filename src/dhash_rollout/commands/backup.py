"""``dhash backup create|verify|list|prune`` and ``dhash restore``.

Thin: resolves the environment and the backup directory (``DHASH_BACKUP_DIR``), calls
:mod:`dhash_rollout.backup`, shows progress (a Rich bar on a terminal; JSON lines on stderr with
``--json`` or when stderr is not a terminal) and prints the result (``--json`` on stdout).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import typer

from dhash_service.errors import CheckFailed, ConfigError, DhashError, IntegrityError

if TYPE_CHECKING:
    from dhash_rollout.environments import Environment

EnvOption = typer.Option(..., "--env", help="Environment: staging, production or canary.")
JsonOption = typer.Option(False, "--json", help="Print results (and progress) as JSON.")
BackupDirOption = typer.Option(
    None, "--backup-dir", help="Backup directory (default: DHASH_BACKUP_DIR, i.e. backups/)."
)

backup_app = typer.Typer(
    name="backup",
    help="Create, verify, list and prune SHA-256-verified backups.",
    no_args_is_help=True,
)


class ProgressView:
    """A Rich progress bar on a terminal, else throttled JSON lines on stderr."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json or not sys.stderr.isatty()
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._last: dict[str, tuple[float, float]] = {}

    def __enter__(self) -> ProgressView:
        if not self.as_json:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn

            self._progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, phase: str, fraction: float) -> None:
        fraction = max(0.0, min(1.0, fraction))
        if self._progress is not None:
            if phase not in self._tasks:
                self._tasks[phase] = self._progress.add_task(phase, total=1.0)
            self._progress.update(self._tasks[phase], completed=fraction)
            return
        now = time.monotonic()
        last_fraction, last_time = self._last.get(phase, (-1.0, 0.0))
        if fraction == last_fraction or (
            fraction < 1.0 and fraction - last_fraction < 0.1 and now - last_time < 2.0
        ):
            return
        self._last[phase] = (fraction, now)
        event = {"event": "progress", "phase": phase, "fraction": round(fraction, 3)}
        sys.stderr.write(json.dumps(event) + "\n")
        sys.stderr.flush()


def _backup_dir(given: Path | None) -> Path:
    from dhash_service.config import Settings

    return given if given is not None else Settings().backup_dir


def _fault() -> str | None:
    from dhash_service.config import Settings

    return Settings().backup_fault


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _human_age(seconds: float) -> str:
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


@backup_app.command("create")
def create(
    env: str = EnvOption,
    retention_days: int | None = typer.Option(
        None, "--retention-days", min=1, help="Then delete this env's backups older than N days."
    ),
    backup_dir: Path | None = BackupDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Back up an environment: database dump, gates config and active release, SHA-256 last."""
    from dhash_rollout.backup import create_backup
    from dhash_rollout.environments import load_environment

    environment = load_environment(env)
    with ProgressView(as_json) as view:
        info = create_backup(
            environment,
            _backup_dir(backup_dir),
            retention_days=retention_days,
            progress=view,
            fault_point=_fault(),
        )
    if as_json:
        typer.echo(json.dumps({"event": "backup_created", **info.to_dict()}))
        return
    typer.echo(f"created {info.path} ({_human_size(info.size)}, {info.state})")
    typer.echo(f"sha256 {info.sha256}  schema {info.schema_revision or '(none)'}")
    for path in info.pruned:
        typer.echo(f"pruned {path}")


@backup_app.command("verify")
def verify(
    file: Path | None = typer.Argument(None, help="The backup .zip to verify."),
    *,
    latest: bool = typer.Option(False, "--latest", help="Verify the newest backup."),
    last: int | None = typer.Option(None, "--last", min=1, help="Verify the newest N backups."),
    env: str | None = typer.Option(None, "--env", help="Only this environment's backups."),
    restore_test: bool = typer.Option(
        False, "--restore-test", help="Also restore into a scratch database and compare rows."
    ),
    backup_dir: Path | None = BackupDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Check outer SHA-256, manifest, every member and the zip structure (exit 4 on failure)."""
    from dhash_rollout.backup import list_backups, verify_backup
    from dhash_rollout.backup.naming import parse_backup_name
    from dhash_rollout.environments import load_environment

    chosen = sum([file is not None, latest, last is not None])
    if chosen != 1:
        raise ConfigError("give exactly one of FILE, --latest or --last N")
    if file is not None:
        targets = [file]
    else:
        found = list_backups(_backup_dir(backup_dir), env)
        targets = [b.path for b in found[: 1 if latest else (last or 1)]]
        if not targets:
            raise ConfigError(f"no backups in {_backup_dir(backup_dir)}")
    failures: list[str] = []
    with ProgressView(as_json) as view:
        for target in targets:
            scratch: str | None = None
            if restore_test:
                parsed = parse_backup_name(target.name)
                name = env or (parsed.env if parsed else None)
                scratch = load_environment(name).database_url if name else None
            try:
                info = verify_backup(
                    target, restore_test=restore_test, scratch_database_url=scratch, progress=view
                )
            except IntegrityError as err:
                failures.append(err.message)
                _emit(
                    as_json, {"event": "backup_failed", "path": str(target), "error": err.message}
                )
                continue
            _emit(
                as_json,
                {"event": "backup_verified", "restore_tested": restore_test, **info.to_dict()},
                f"OK {info.path}" + (" (restore-tested)" if restore_test else ""),
            )
    if failures:
        parsed = parse_backup_name(targets[0].name)
        name = env or (parsed.env if parsed else "ENV")
        raise IntegrityError(
            "; ".join(failures) + f" (make a new one: ./scripts/backup_dhash.sh --env {name})"
        )


def _emit(as_json: bool, event: dict[str, object], text: str | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(event))
    else:
        typer.echo(text or f"FAILED {event.get('error')}", err=text is None)


@backup_app.command("list")
def list_(
    env: str | None = typer.Option(None, "--env", help="Only this environment's backups."),
    backup_dir: Path | None = BackupDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Complete backups, newest first: age, size, last verification."""
    from dhash_rollout.backup import list_backups

    backups = list_backups(_backup_dir(backup_dir), env)
    now = datetime.now(UTC)
    if as_json:
        typer.echo(
            json.dumps(
                [{**b.to_dict(), "age_seconds": int(b.age(now).total_seconds())} for b in backups]
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"backups in {_backup_dir(backup_dir)}", title_justify="left")
    # The name is what an operator copies into `--backup`: it is never broken over lines.
    for column in ("backup", "env", "age", "size", "state", "schema"):
        table.add_column(column, no_wrap=column != "schema", overflow="fold")
    for b in backups:
        table.add_row(
            b.path.name,
            b.env,
            _human_age(b.age(now).total_seconds()),
            _human_size(b.size),
            b.state,
            b.schema_revision or "",
        )
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # logs and pipes: one row per backup
    if not backups:
        if env:
            from dhash_rollout.environments import load_environment

            load_environment(env)  # a mistyped --env is a usage error, not "no backups"
        of = f" of {env}" if env else ""
        console.print(
            f"no backups{of} in {_backup_dir(backup_dir)} yet "
            f"(make one: ./scripts/backup_dhash.sh --env {env or 'ENV'})"
        )
        return
    console.print(table)


@backup_app.command("prune")
def prune(
    older_than: str = typer.Option(..., "--older-than", help="Age such as 30d, 12h, 2w."),
    env: str | None = typer.Option(None, "--env", help="Only this environment."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report, delete nothing."),
    backup_dir: Path | None = BackupDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Delete old backups; the newest verified backup of each environment is always kept."""
    from dhash_rollout.backup import parse_age, prune_backups

    report = prune_backups(
        _backup_dir(backup_dir), older_than=parse_age(older_than), env=env, dry_run=dry_run
    )
    if as_json:
        typer.echo(json.dumps({"event": "backups_pruned", **report.to_dict()}))
        return
    verb = "would delete" if dry_run else "deleted"
    for path in report.deleted:
        typer.echo(f"{verb} {path}")
    for path in report.kept:
        typer.echo(f"kept (newest verified) {path}")
    if not report.deleted:
        typer.echo("nothing to prune")


def restore(
    backup: Path = typer.Option(..., "--backup", help="The backup .zip to restore."),
    env: str = EnvOption,
    force: bool = typer.Option(
        False, "--force", help="Restore even if verification fails or the env differs."
    ),
    rows_only: bool = typer.Option(
        False, "--rows-only", help="Compare only row counts, not content hashes (faster)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Verify a backup, load it into a new database and swap it in (old one kept as snapshot)."""
    from dhash_rollout.backup import restore_backup
    from dhash_rollout.environments import load_environment

    environment = load_environment(env)
    serving = _serving(environment)
    if serving:
        raise CheckFailed(
            f"{env} is serving ({serving}): writes landing during the restore would be lost. "
            f"Stop it first (dhash release stop --env {env}), restore, then "
            f"dhash release start --env {env}; or roll back with --backup, which stops it and "
            "keeps the rows written since the backup"
        )
    with ProgressView(as_json) as view:
        result = restore_backup(
            backup,
            environment,
            force=force,
            compare_content=not rows_only,
            progress=view,
            fault_point=_fault(),
        )
    if as_json:
        typer.echo(json.dumps({"event": "backup_restored", **result.to_dict()}))
        return
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    rows = sum(result.tables.values())
    typer.echo(f"restored {result.backup} into {result.database} ({rows} rows)")
    typer.echo(f"schema {result.schema_revision or '(none)'}")
    typer.echo(f"pre-restore snapshot: {result.snapshot or '(none: there was no database)'}")


def _serving(environment: Environment) -> str:
    """The environment's processes that serve right now (none for a target it cannot ask)."""
    from dhash_rollout.targets import get_target

    try:
        status = get_target(environment).status()
    except DhashError:
        return ""
    return ", ".join(f"{p.name} {p.release or '?'}" for p in status.serving)


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
    app.command("restore")(restore)

"""``dhash deploy``, ``dhash rollback`` and ``dhash release list|install|status|logs``.

Thin: parse options, call :mod:`dhash_rollout.deploy` / :mod:`dhash_rollout.rollback`, print
progress (or ``--json``), and exit with the failing error's own code when the run failed (a
phase that failed: 1, a backup that does not verify: 4; ``exit_code`` in ``--json`` too).
Refusals before the run (``Locked``: 3, a bad option: 2) map to exit codes in ``cli.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from dhash_rollout.commands import detach_stdout, json_refusal
from dhash_rollout.commands.guard import (
    MonitorOptions,
    NoMonitorOption,
    ReleaseSettingOption,
    gates_config_option,
    parse_guard,
)
from dhash_service.errors import ConfigError, DhashError

EnvOption = typer.Option(..., "--env", help="Environment: staging, production or canary.")
JsonOption = typer.Option(False, "--json", help="Print the result as JSON.")


def _printer(as_json: bool) -> Any:
    """Progress lines on stdout. A reader that goes away (``| head``, a closed terminal) must not
    stop a deploy or rollback in the middle of a phase: the run log has every line anyway."""
    if as_json:
        return lambda _m: None
    gone = False

    def say(message: str) -> None:
        nonlocal gone
        if gone:
            return
        try:
            typer.echo(message)
        except BrokenPipeError:
            gone = True
            detach_stdout()

    return say


@contextlib.contextmanager
def _log_to_file(kind: str, env: str) -> Iterator[Path]:
    """The run's log file; library loggers (notifier, backup) write their JSON lines there too,
    so the terminal shows only the progress lines. A run refused before it began (locked,
    nothing to roll back, a bad argument or backup) says why there too."""

    from dhash_rollout.runs.runlog import run_log_path
    from dhash_rollout.settings import ToolkitSettings
    from dhash_service.config import Settings
    from dhash_service.logs import configure_logging

    _, log_dir = ToolkitSettings.load().work_dirs(Path.cwd())
    path = run_log_path(log_dir, kind, env)
    configure_logging(Settings().log_level, stream=open(os.devnull, "w"), file=path)  # noqa: SIM115
    try:
        yield path
    except DhashError as err:
        import structlog

        structlog.get_logger("dhash.cli").error(
            f"{kind}_refused", env=env, error=err.message, exit_code=err.exit_code
        )
        raise


def deploy(
    *,
    env: str = EnvOption,
    version: str | None = typer.Option(
        None, "--version", help="Release to deploy (default: the version of the checkout)."
    ),
    source: str | None = typer.Option(
        None,
        "--source",
        help="Build from: a wheel file, a source directory or git:REF (default: the checkout, "
        "unless the version is already installed).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Plan every phase, execute none; write deploy-dryrun.log."
    ),
    no_monitor: bool = NoMonitorOption,
    monitor_source: str = typer.Option(
        "scrape", "--monitor-source", help="The monitor's metrics: scrape (default) or prometheus."
    ),
    prometheus_url: str | None = typer.Option(
        None, "--prometheus-url", help="Prometheus base URL (with --monitor-source prometheus)."
    ),
    gates_config: Path | None = gates_config_option(
        "Quality gates file (default: quality-gates-config.json)."
    ),
    time_scale: float | None = typer.Option(
        None,
        "--time-scale",
        min=0.001,
        help="Run the monitoring window N times faster (demos, tests; also "
        "DHASH_MONITOR_TIME_SCALE).",
    ),
    release_setting: list[str] | None = ReleaseSettingOption,
    smoke_timeout: float = typer.Option(
        120.0, "--smoke-timeout", min=1.0, help="Deadline of the post-deploy smoke tests (s)."
    ),
    initiator: str | None = typer.Option(None, "--initiator", help="Who deploys (default: you)."),
    as_json: bool = JsonOption,
) -> None:
    """Guarded deploy: lock, preflight, backup, install, migrate, switch, health, smoke, notify."""
    from dhash_rollout.deploy import DeployRequest
    from dhash_rollout.deploy import deploy as run_deploy
    from dhash_rollout.environments import load_environment
    from dhash_rollout.notify.factory import environment_escalation
    from dhash_rollout.rollback import execute as rollback_inside
    from dhash_rollout.runs.plan import render_plan

    options = MonitorOptions(
        monitor_source, prometheus_url, gates_config, view="quiet" if as_json else "auto"
    )
    # A matrix that does not validate would page nobody about this deploy's failure: refused
    # now (exit 2, naming the key), like every other setting, not found by cron at 3 AM.
    with json_refusal(as_json):
        environment_escalation(load_environment(env).name)
    guard = parse_guard(
        load_environment(env).name,
        options,
        no_monitor=no_monitor,
        given_scale=time_scale,
        given_settings=release_setting,
        check=not dry_run,
    )
    with contextlib.ExitStack() as stack:
        log_path = None if dry_run else stack.enter_context(_log_to_file("deploy", env))
        request = DeployRequest(
            env=env,
            version=version,
            source=source,
            dry_run=dry_run,
            no_monitor=no_monitor,
            smoke_timeout=smoke_timeout,
            log_path=log_path,
            monitor_time_scale=guard.time_scale,
            release_settings=guard.release_settings,
        )
        if initiator:
            request = replace(request, initiator=_one_line("--initiator", initiator))
        monitor = guard.deploy_monitor()
        with json_refusal(as_json):
            if load_environment(env).target == "fleet":  # hosts behind HAProxy, in waves
                from dhash_rollout.canary.fleet import mark_undone
                from dhash_rollout.deploy.fleet_run import deploy_fleet

                result = deploy_fleet(
                    request, say=_printer(as_json), monitor=monitor, on_undone=mark_undone
                )
            else:
                result = run_deploy(
                    request, say=_printer(as_json), monitor=monitor, rollback=rollback_inside
                )
    if monitor is not None and result.run_id is not None:
        from dhash_rollout.commands.monitor import mark_rollback

        mark_rollback(load_environment(env), result.run_id)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    elif dry_run:
        typer.echo(render_plan(result.plan).rstrip())
        typer.echo(f"plan written to {result.log_path}")
    else:
        verdict = "deployed" if result.ok else "FAILED"
        typer.echo(f"{verdict}: {result.env} {result.version} [{result.run_id}]")
        if result.log_path:
            typer.echo(f"log: {result.log_path}")
    _exit_if_interrupted(result.interrupted, result.error)
    if not result.ok:  # with the failing error's own exit code (an integrity failure: 4)
        typer.echo(f"dhash: error: {result.error or 'deploy failed'}", err=True)
        raise typer.Exit(result.exit_code)


def _exit_if_interrupted(interrupted: bool, message: str | None) -> None:
    """A run stopped by SIGTERM/SIGINT says so and exits 130 (the run stays open)."""
    from dhash_rollout.runs.interrupt import EXIT_INTERRUPTED

    if interrupted:
        typer.echo(f"dhash: interrupted: {message}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)


def _one_line(flag: str, value: str) -> str:
    """Names go into notice headers and e-mail subjects, where a line break is an injection."""
    from dhash_rollout.notify.model import has_line_break

    if has_line_break(value) or any(ord(c) < 32 and c != "\t" for c in value):
        raise ConfigError(f"{flag} must be a single line without control characters")
    return value


def rollback(
    *,
    env: str = EnvOption,
    reason: str = typer.Option(..., "--reason", help="Why (goes to the journal and notices)."),
    backup: str | None = typer.Option(
        None, "--backup", help="Restore this backup (keeping rows written after it)."
    ),
    to_release: str | None = typer.Option(
        None, "--to-release", help="Switch to this installed release instead of the previous."
    ),
    trigger: str = typer.Option("manual", "--trigger", help="manual or automatic."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan the rollback, execute nothing."),
    smoke_timeout: float = typer.Option(
        120.0, "--smoke-timeout", min=1.0, help="Deadline of the post-rollback smoke tests (s)."
    ),
    initiator: str | None = typer.Option(None, "--initiator", help="Who rolls back."),
    as_json: bool = JsonOption,
) -> None:
    """Roll back: previous release, schema down, or a data restore that keeps later writes."""
    from dhash_rollout.rollback import RollbackRequest
    from dhash_rollout.rollback import rollback as run_rollback
    from dhash_service.config import Settings

    with contextlib.ExitStack() as stack:
        log_path = None if dry_run else stack.enter_context(_log_to_file("rollback", env))
        request = RollbackRequest(
            env=env,
            reason=reason,
            backup=backup,
            to_release=to_release,
            trigger=trigger,
            dry_run=dry_run,
            smoke_timeout=smoke_timeout,
            log_path=log_path,
            fault_point=Settings().backup_fault,  # DHASH_BACKUP_FAULT: a crash test's pause
        )
        if initiator:
            request = replace(request, initiator=_one_line("--initiator", initiator))
        with json_refusal(as_json):
            result = run_rollback(request, say=_printer(as_json))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    elif not dry_run:
        verdict = "rolled back" if result.ok else "ROLLBACK FAILED"
        typer.echo(f"{verdict}: {result.env} -> {result.plan.version} [{result.run_id}]")
        if result.log_path:
            typer.echo(f"log: {result.log_path}")
    _exit_if_interrupted(result.interrupted, result.error)
    if not result.ok:  # with the failing error's own exit code (an integrity failure: 4)
        typer.echo(f"dhash: error: {result.error or 'rollback failed'}", err=True)
        raise typer.Exit(result.exit_code)


release_app = typer.Typer(help="Installed releases of an environment and their processes.")


def _target(env: str) -> Any:
    from dhash_rollout.environments import load_environment
    from dhash_rollout.targets import get_target

    return get_target(load_environment(env))


@release_app.command("list")
def release_list(env: str = EnvOption, as_json: bool = JsonOption) -> None:
    """Installed releases, oldest first; the current one is marked."""
    target = _target(env)
    current = target.current()
    rows = [
        {**r.to_dict(), "current": bool(current and current.version == r.version)}
        for r in target.releases()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        mark = "*" if row["current"] else " "
        typer.echo(
            f"{mark} {row['version']:<12} {row['created_at']}  {row['deps']:<6} "
            f"sha256:{row['wheel_sha256'][:12]}  {row['source']}"
        )


@release_app.command("install")
def release_install(
    env: str = EnvOption,
    source: str = typer.Option(".", "--source", help="A wheel, a source directory or git:REF."),
    version: str | None = typer.Option(None, "--version", help="Expected version."),
    as_json: bool = JsonOption,
) -> None:
    """Install a release without activating it (inert: nothing serving changes)."""
    from dhash_rollout.releases import ReleaseSource

    target = _target(env)
    release = target.install(
        ReleaseSource.parse(source, Path.cwd()), version=version, progress=_printer(as_json)
    )
    typer.echo(
        json.dumps(release.to_dict(), indent=2) if as_json else f"installed {release.version}"
    )


@release_app.command("status")
def release_status(env: str = EnvOption, as_json: bool = JsonOption) -> None:
    """Current and previous release, the state of each process slot, and whether the last
    deploy (or promoted canary) was verified by its monitoring window; on a fleet, every host
    with its release and its HAProxy status and weight."""
    from dhash_rollout.environments import load_environment
    from dhash_rollout.runs.release_change import last_change_verification

    environment = load_environment(env)
    fleet = environment.settings
    if fleet.hosts is not None and fleet.proxy is not None:
        from dhash_rollout.canary.controller import status_line
        from dhash_rollout.targets.fleet.status import fleet_status, status_lines

        statuses = fleet_status(
            fleet.hosts, fleet.proxy, known_hosts=environment.root / "fleet" / "known_hosts"
        )
        on_fleet = status_line(environment)  # the canary host's line, if a canary ran
        if as_json:
            hosts = [s.to_dict() for s in statuses]
            typer.echo(json.dumps({"hosts": hosts, "canary": on_fleet}, indent=2))
            return
        for line in status_lines(statuses):
            typer.echo(line)
        if on_fleet is not None:
            typer.echo(on_fleet)
        return
    target = _target(env)
    status = target.status()
    verification = last_change_verification(target.env)
    from dhash_rollout.canary.controller import status_line

    canary = status_line(target.env)
    if as_json:
        checked = {"state": verification.state, "line": verification.line}
        typer.echo(
            json.dumps({**status.to_dict(), "verification": checked, "canary": canary}, indent=2)
        )
        return
    for line in _status_lines(status):
        typer.echo(line)
    typer.echo(f"last deploy: {verification.line}")
    if canary is not None:
        typer.echo(canary)


@release_app.command("proxy-config")
def release_proxy_config(
    env: str = EnvOption,
    bind: str | None = typer.Option(
        None, "--bind", help="Where clients connect (default: every address, proxy.url's port)."
    ),
) -> None:
    """Print the fleet's haproxy.cfg: its hosts checked on /ready, the runtime API, and with
    proxy.metrics_address HAProxy's Prometheus exporter (the fleet gate's proxyErrorRate)."""
    from dhash_rollout.environments import load_environment
    from dhash_rollout.targets.fleet.haproxy_config import client_bind, render_config, servers_of

    settings = load_environment(env).settings
    if settings.hosts is None or settings.proxy is None:
        raise ConfigError(f"{env} is not a fleet: no [[{env}.hosts]] and [{env}.proxy]")
    try:
        where = client_bind(settings.proxy, bind)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    typer.echo(render_config(settings.proxy, servers_of(settings.hosts), bind=where), nl=False)


def _status_lines(status: Any) -> list[str]:
    """What an on-call operator needs at a glance, with '-' for what does not exist (never
    Python's None): releases, the process manager, the port, the kernel's hand-over setting."""
    lines = [f"current:  {status.current or '-'}", f"previous: {status.previous or '-'}"]
    extra = status.extra
    if "supervisord" in extra:
        state = "running" if extra["supervisord"] else "not running"
        lines.append(f"supervisord: {state} ({extra.get('socket', '-')})")
    if "port" in extra:
        lines.append(f"port: {extra['port']}")
    if "tcp_migrate_req" in extra:
        setting = {True: "1", False: "0", None: "unknown"}[extra["tcp_migrate_req"]]
        lines.append(f"net.ipv4.tcp_migrate_req: {setting}")
    for proc in status.processes:
        pid = f"pid {proc.pid}" if proc.pid else "-"
        lines.append(f"  {proc.name:<12} {proc.state:<9} {proc.release or '-':<12} {pid}")
    return lines


@release_app.command("logs")
def release_logs(
    env: str = EnvOption,
    lines: int = typer.Option(100, "--lines", "-n", min=1, help="Lines per process slot."),
) -> None:
    """The last lines of each process slot's output."""
    output = _target(env).logs(lines)
    typer.echo(output or f"no process output for {env} yet: nothing was started there")


@release_app.command("stop")
def release_stop(
    env: str = EnvOption,
    everything: bool = typer.Option(
        False, "--all", help="Also shut the environment's supervisord down."
    ),
) -> None:
    """Stop serving (and with --all the process manager too)."""
    target = _target(env)
    if everything:
        target.shutdown()
    else:
        target.stop()
    typer.echo("stopped")


@release_app.command("start")
def release_start(env: str = EnvOption) -> None:
    """Start the current release again (after a stop or a reboot)."""
    activation = _target(env).start(progress=typer.echo)
    typer.echo(f"serving {activation.version}")


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.command("rollback")(rollback)
    app.add_typer(release_app, name="release")

"""``dhash canary start|status|promote|abort``: a candidate beside stable (docs/canary.md).

Exit codes of ``start``: 0 promoted, 1 aborted by the judgement, 2 usage, 3 locked,
5 inconclusive (the canary holds its weight for an operator), 130 interrupted (the canary keeps
its weight: ``dhash canary promote`` or ``abort`` ends it). ``promote`` and ``abort`` act under
the environment's lock, or ask the running ``start`` to act at its next poll.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from dhash_rollout.commands.guard import (
    Guard,
    MonitorOptions,
    NoMonitorOption,
    ReleaseSettingOption,
    gates_config_option,
    parse_guard,
)
from dhash_service.errors import CheckFailed, ConfigError, DhashError, Locked

if TYPE_CHECKING:
    from dhash_rollout.canary.controller import CanaryState
    from dhash_rollout.canary.judge import JudgeConfig
    from dhash_rollout.environments import Environment
    from dhash_rollout.runs.context import RunContext
    from dhash_rollout.runs.locking import HeldLock
    from dhash_rollout.targets import DeployTarget
    from dhash_rollout.targets.fleet.status import HostStatus
    from dhash_rollout.targets.fleet.target import FleetTarget
    from dhash_rollout.targets.local import LocalTarget

EXIT_OK, EXIT_ABORTED, EXIT_LOCKED, EXIT_INCONCLUSIVE, EXIT_INTERRUPTED = 0, 1, 3, 5, 130
EnvOption = typer.Option(..., "--env", help="Environment: staging, production or canary.")

canary_app = typer.Typer(help="A candidate release beside stable, judged against it.")


CANARY_KEYS = {"steps", "step_minutes", "interval_seconds", "alpha", "min_samples", "host"}


def _table(env: Environment) -> dict[str, str | int | float | bool]:
    """The environment's ``canary`` table (docs/canary.md); an unknown key is refused."""
    table = dict(env.settings.canary or {})
    unknown = sorted(set(table) - CANARY_KEYS)
    if unknown:
        raise ConfigError(
            f"environment {env.name}: unknown canary setting(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(CANARY_KEYS))})"
        )
    return table


def _number(table: dict[str, str | int | float | bool], key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"canary setting {key} must be a number, got {value!r}")
    return float(value)


def _config(
    weights: str,
    step_seconds: float,
    time_scale: float,
    *,
    alpha: float,
    min_samples: int | None,
    gates: dict[str, float],
) -> JudgeConfig:
    from dhash_rollout.canary.judge import JudgeConfig, Step

    try:
        values = [float(w) for w in weights.split(",") if w.strip()]
        steps = tuple(Step(w, step_seconds / time_scale) for w in values)
        samples = min_samples if min_samples is not None else int(gates.get("min_samples", 10))
        return JudgeConfig(
            steps=steps,
            max_wait_seconds=600.0 / time_scale,
            alpha=alpha,
            min_samples=samples,
            failure_rate_threshold_pct=gates.get("failure_rate_threshold_pct", 5.0),
            p95_threshold_ms=gates.get("p95_threshold_ms", 2000.0),
            health_threshold=int(gates.get("health_threshold", 2)),
        )
    except ValueError as exc:
        raise ConfigError(f"canary steps {weights!r}: {exc}") from exc


def canary_gates(gates_file: Path | None) -> dict[str, float]:
    """The canary gates of the quality-gates file (its ``canary`` environment), which the judge
    evaluates on the canary alone: the failure-rate and P95 thresholds, the health threshold and
    ``minSamples``. No file given and none in the working directory, or no ``canary`` section:
    the judge's defaults (the same values as the shipped file); a bad file is a usage error."""
    from dhash_rollout.monitor.gates_config import GatesConfigError, load_gates_config
    from dhash_rollout.monitor.runner import DEFAULT_GATES_FILE

    path = gates_file or DEFAULT_GATES_FILE
    if gates_file is None and not path.exists():
        return {}
    try:
        gates = load_gates_config(path).environments.get("canary")
    except GatesConfigError as err:
        raise ConfigError(err.message) from None
    if gates is None:
        return {}
    return {
        "failure_rate_threshold_pct": gates.extraction_failure_rate.threshold,
        "p95_threshold_ms": gates.p95_hash_time.threshold,
        "health_threshold": gates.health_failures.threshold,
        "min_samples": float(gates.extraction_failure_rate.min_samples),
    }


def _env_target(env_name: str) -> tuple[Environment, LocalTarget | FleetTarget]:
    """The local target (a weighted program on one port) or a fleet (a canary host, its
    share an HAProxy weight: canary/fleet.py)."""
    from dhash_rollout.environments import load_environment
    from dhash_rollout.targets.local import LocalTarget

    env = load_environment(env_name)
    if env.settings.target == "fleet":
        from dhash_rollout.targets.fleet.target import FleetTarget

        return env, FleetTarget(env)
    if env.settings.target not in (None, "local"):
        raise ConfigError(
            f"dhash canary runs on the local target or a fleet (environment {env_name})"
        )
    return env, LocalTarget(env)


def _is_fleet(target: LocalTarget | FleetTarget) -> bool:
    from dhash_rollout.targets.fleet.target import FleetTarget

    return isinstance(target, FleetTarget)


def _host_setting(table: dict[str, str | int | float | bool], given: str | None) -> str | None:
    value = given if given is not None else table.get("host")
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"canary setting host must be a host's name, got {value!r}")
    return value


@canary_app.command("start")
def start(
    *,
    env_name: str = EnvOption,
    source: str | None = typer.Option(
        None, "--source", help="A wheel, a source directory or git:REF."
    ),
    version: str = typer.Option(
        None, "--version", help="An installed release (or the version to build)."
    ),
    steps: str | None = typer.Option(
        None, "--steps", help="Weights in percent, step by step (default 5,25,50)."
    ),
    weight: float = typer.Option(
        None, "--weight", help="One step at this weight (overrides --steps)."
    ),
    step_minutes: float | None = typer.Option(
        None, "--step-minutes", help="Least time analysed per step (default 5)."
    ),
    interval: float | None = typer.Option(
        None, "--interval", help="Seconds between polls (default 30)."
    ),
    time_scale: float = typer.Option(1.0, "--time-scale", help="Divide every time by N (tests)."),
    release_setting: list[str] | None = ReleaseSettingOption,
    no_monitor: bool = NoMonitorOption,
    gates_config: Path | None = gates_config_option(
        "Quality gates file: its canary gates for the judge, its environment's for the "
        "monitor after a promotion (default: quality-gates-config.json)."
    ),
    monitor_time_scale: float | None = typer.Option(
        None,
        "--monitor-time-scale",
        help="The monitor's window after a promotion N times faster, as dhash deploy "
        "--time-scale (default: DHASH_MONITOR_TIME_SCALE, else 1).",
    ),
    host: str | None = typer.Option(
        None, "--host", help="On a fleet: the canary host (default: the first of the first wave)."
    ),
) -> None:
    """Start the candidate beside stable and judge it, step by step, until it ends; run again
    after an interruption, it resumes the canary (or aborts it to stable if its candidate is
    gone)."""
    from dhash_rollout.canary.controller import CanaryRun, JudgedCanary
    from dhash_rollout.releases import ReleaseSource
    from dhash_rollout.rollback import execute as rollback_inside
    from dhash_rollout.runs.locking import hold_lock
    from dhash_rollout.runs.paths import lock_path
    from dhash_rollout.targets.fleet.target import FleetTarget

    if source is None and version is None:
        raise ConfigError("say which release: --source or --version")
    env, target = _env_target(env_name)
    table = _table(env)
    chosen = str(weight) if weight is not None else (steps or str(table.get("steps", "5,25,50")))
    minutes = step_minutes if step_minutes is not None else _number(table, "step_minutes", 5.0)
    every = interval if interval is not None else _number(table, "interval_seconds", 30.0)
    config = _config(
        chosen,
        minutes * 60.0,
        time_scale,
        alpha=_number(table, "alpha", 0.05),
        min_samples=int(_number(table, "min_samples", 0)) if "min_samples" in table else None,
        gates=canary_gates(gates_config),
    )
    # a promotion that could not be watched is refused before the start
    guard = parse_guard(
        env.name,
        MonitorOptions(gates_config=gates_config),
        no_monitor=no_monitor,
        given_scale=monitor_time_scale,
        given_settings=release_setting,
    )
    stop = {"now": False}

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop["now"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    canary_host = _host_setting(table, host)
    if canary_host is not None and not isinstance(target, FleetTarget):
        raise ConfigError(f"--host (a canary host) is for a fleet; {env.name} is not one")
    with hold_lock(lock_path(env), "canary") as held, _context(env, target, held) as ctx:
        run: JudgedCanary
        if isinstance(target, FleetTarget):
            from dhash_rollout.canary.fleet import FleetCanaryRun

            run = FleetCanaryRun(
                ctx, target, config, interval_s=every / time_scale, notice=_notice_for(env),
                monitor=guard.deploy_monitor(), monitor_time_scale=guard.time_scale,
                release_settings=guard.release_settings, host=canary_host,
                guard_record=guard.to_record(),
            )  # fmt: skip
        else:
            run = CanaryRun(
                ctx,
                target,
                config,
                interval_s=every / time_scale,
                notice=_notice_for(env),
                monitor=guard.deploy_monitor(),
                rollback=rollback_inside,
                monitor_time_scale=guard.time_scale,
                release_settings=guard.release_settings,
                guard_record=guard.to_record(),
            )
        src = ReleaseSource.parse(source, Path.cwd()) if source else None
        state = run.start(src, version)
        if state.status == "running":  # (a resumed canary whose candidate was gone: aborted)
            run.run(state, lambda: stop["now"])
    raise typer.Exit(_exit_for(env))


@contextlib.contextmanager
def _context(
    env: Environment, target: DeployTarget, held: HeldLock, run_id: str | None = None
) -> Iterator[RunContext]:
    """The canary's run in the environment's journal and its run log (``logs/canary_*``)."""
    from dhash_rollout.runs.context import RunContext
    from dhash_rollout.runs.journal import Journal, new_run_id
    from dhash_rollout.runs.runlog import open_run_log
    from dhash_rollout.settings import ToolkitSettings

    backup_dir, log_dir = ToolkitSettings.load().work_dirs(Path.cwd())
    _path, handle, logger = open_run_log(log_dir, "canary", env.name)
    with handle:
        yield RunContext(
            kind="canary",
            env=env,
            target=target,
            journal=Journal.for_root(env.root),
            run_id=run_id or new_run_id("canary"),
            base=Path.cwd(),
            log_dir=log_dir,
            backup_dir=backup_dir,
            logger=logger,
            say=_say,
            lock=held,
        )


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _notice_for(env: Environment) -> Callable[[str, str, str, str], None]:
    """Notices to the environment's channels; one that cannot go out never stops the canary."""

    def notice(kind: str, severity: str, version: str, message: str) -> None:
        from dhash_rollout.notify import Event, Severity, notifier_from_settings

        try:
            notifier = notifier_from_settings(env.name, channels=env.channels, log_dir=Path("logs"))
            notifier.send(
                Event(
                    kind=kind,
                    env=env.name,
                    message=message,
                    severity=Severity.parse(severity),
                    version=version,
                    subject=f"canary {version}",
                )
            )
        except DhashError as err:
            _say(f"notice not sent: {err.message}")

    return notice


def _exit_for(env: Environment) -> int:
    from dhash_rollout.canary.controller import read_state

    state = read_state(env)
    status = state.status if state else "none"
    return {
        "promoted": EXIT_OK,
        "aborted": EXIT_ABORTED,
        "aborting": EXIT_ABORTED,  # a host not put back: `dhash canary abort` again
        "inconclusive": EXIT_INCONCLUSIVE,
        "interrupted": EXIT_INTERRUPTED,
        "rolled_back": EXIT_ABORTED,
    }.get(status, EXIT_OK)


@canary_app.command("status")
def status(
    *,
    env_name: str = EnvOption,
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
    html_out: Path | None = typer.Option(
        None, "--html", help="Also write the HTML report (canary and stable side by side) here."
    ),
) -> None:
    """Weights, both releases and the judgement so far (replayed from the poll ledger); the
    run writes its HTML report to <root>/canary/report.html when it ends or is held."""
    from dhash_rollout.canary.controller import config_of, judgements, read_state

    env, target = _env_target(env_name)
    state = read_state(env)
    if state is None:
        typer.echo(f"no canary in {env.name}")
        return
    js = judgements(env, config_of(state))
    last = js[-1] if js else None
    hosts = _fleet_hosts(target)
    if as_json:
        out = {
            "canary": asdict(state),
            "hosts": None if hosts is None else [h.to_dict() for h in hosts],
            "polls": len(js),
            "judgement": None
            if last is None
            else {
                "action": last.action.value,
                "step": last.step + 1,
                "weight": last.weight,
                "reason": last.reason,
                "evidence": [asdict(e) for e in last.evidence],
            },
        }
        typer.echo(json.dumps(out, indent=2))
        return
    where = f"on host {state.host}" if state.host else f"({state.slot})"
    typer.echo(
        f"canary {state.version} {where} beside stable {state.stable}: {state.status}, "
        f"{state.weight:g}% of new {'requests' if state.host else 'connections'}"
    )
    if hosts is not None:
        from dhash_rollout.targets.fleet.status import status_lines

        for line in status_lines(hosts):
            typer.echo(f"  {line}")
    if state.run_id:
        typer.echo(f"run {state.run_id} in {env.root / 'journal.jsonl'}")
    if last is None:
        typer.echo("no poll yet")
        return
    typer.echo(f"after {len(js)} polls: {last.action.value}: {last.reason}")
    for e in last.evidence:
        typer.echo(f"  {'WORSE' if e.worse else 'ok   '} {e.check}: {e.detail}")
    if html_out is not None:
        from dhash_rollout.canary.controller import write_report

        typer.echo(f"report: {write_report(env, state, html_out)}")


def _fleet_hosts(target: LocalTarget | FleetTarget) -> list[HostStatus] | None:
    """On a fleet: every host, its release, HAProxy's state and weight of it."""
    from dhash_rollout.targets.fleet.target import FleetTarget

    return target.host_statuses() if isinstance(target, FleetTarget) else None


def _act(env_name: str, what: str) -> None:
    from dhash_rollout.canary.controller import CanaryRun, JudgedCanary, read_state, request_path
    from dhash_rollout.canary.judge import JudgeConfig
    from dhash_rollout.rollback import execute as rollback_inside
    from dhash_rollout.runs.locking import hold_lock
    from dhash_rollout.runs.paths import lock_path
    from dhash_rollout.targets.fleet.target import FleetTarget

    env, target = _env_target(env_name)
    state = read_state(env)
    ends: tuple[str, ...] = ("running", "inconclusive", "interrupted")
    fleet_abort = isinstance(target, FleetTarget) and what == "abort"
    if fleet_abort:  # a promotion stopped midway, an abort not finished: touched hosts undone
        ends += ("promoting", "aborting")
    stale = fleet_abort and (state is None or state.status not in ends) and _stale_start(env)
    if not stale and (state is None or state.status not in ends):
        raise CheckFailed(f"no canary to {what} in {env.name}")
    try:
        with (
            hold_lock(lock_path(env), f"canary {what}") as held,
            _context(env, target, held, state.run_id if state and not stale else None) as ctx,
        ):
            state = read_state(env)  # again, under the lock: a controller may have ended it
            if stale:
                assert isinstance(target, FleetTarget)
                _undo_stale_start(ctx, target, state)
                return
            if state is None or state.status not in ends:
                raise CheckFailed(f"no canary to {what} in {env.name}")
            started = ctx.journal.run(ctx.run_id)  # the start said how to watch a promotion
            guard = Guard.from_record(started.params.get("guard") if started else None)
            watch = guard.deploy_monitor() if what == "promote" else None
            run: JudgedCanary
            if isinstance(target, FleetTarget):
                from dhash_rollout.canary.fleet import FleetCanaryRun

                run = FleetCanaryRun(
                    ctx, target, JudgeConfig(), notice=_notice_for(env), monitor=watch,
                    monitor_time_scale=guard.time_scale,
                )  # fmt: skip
            else:
                run = CanaryRun(
                    ctx,
                    target,
                    JudgeConfig(),
                    notice=_notice_for(env),
                    monitor=watch,
                    rollback=rollback_inside,
                    monitor_time_scale=guard.time_scale,
                )
            if what == "abort":
                run.abort(state, "aborted by an operator")
            else:
                run.promote(state, "promoted by an operator")
            _refuse_unfinished(env)
            return
    except Locked:
        pass
    # The running controller holds the lock: it acts on the request at its next poll.
    request_path(env).write_text(what, encoding="utf-8")
    _say(f"asked the running canary to {what}")
    _wait_for_the_controller(env, what)


def _stale_start(env: Environment) -> bool:
    """The journal's last run is a canary run left open by a start that wrote no state."""
    from dhash_rollout.runs.journal import Journal

    last = Journal.for_root(env.root).last_run()
    return last is not None and last.kind == "canary" and not last.finished


def _undo_stale_start(ctx: RunContext, target: FleetTarget, state: CanaryState | None) -> None:
    """``canary abort`` of a fleet canary whose start was killed while its host switched (no
    state names its run): the hosts it touched back, as the next ``start`` would."""
    from dhash_rollout.canary.fleet import FleetCanaryRun
    from dhash_rollout.canary.judge import JudgeConfig

    undo = FleetCanaryRun(ctx, target, JudgeConfig(), notice=_notice_for(ctx.env))
    if not undo.close_stale_run(state):
        raise CheckFailed(f"no canary to abort in {ctx.env.name}")
    _say(f"the interrupted canary start in {ctx.env.name} is undone")


def _refuse_unfinished(env: Environment) -> None:
    """An abort that did not put every touched host back fails the command, saying which."""
    from dhash_rollout.canary.controller import read_state

    now = read_state(env)
    if now is not None and now.status == "aborting":
        raise CheckFailed(f"canary {now.version}: {now.reason}")


def _wait_for_the_controller(env: Environment, what: str) -> None:
    from dhash_rollout.canary.controller import read_state
    from dhash_rollout.runs.verification import lock_held

    deadline = time.monotonic() + 120.0
    while time.monotonic() < deadline:
        now = read_state(env)
        if now is not None and now.status in ("aborted", "promoted", "rolled_back"):
            _say(f"canary {now.version}: {now.status}")
            return
        if now is not None and now.status == "aborting" and not lock_held(env):
            raise CheckFailed(f"canary {now.version}: {now.reason}")
        time.sleep(0.2)
    raise CheckFailed(f"the running canary did not {what} within 120 s; see dhash canary status")


@canary_app.command("promote")
def promote(env_name: str = EnvOption) -> None:
    """The candidate becomes stable through the normal switch."""
    _act(env_name, "promote")


@canary_app.command("abort")
def abort(env_name: str = EnvOption) -> None:
    """The candidate stops; stable untouched."""
    _act(env_name, "abort")


def register(app: typer.Typer) -> None:
    app.add_typer(canary_app, name="canary")

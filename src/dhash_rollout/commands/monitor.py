"""``dhash monitor`` (the post-deploy monitor by hand), ``dhash gates check`` / ``replay``.

Exit codes (docs/monitoring.md): 0 passed, 1 a gate failed, 2 usage or a bad gates file,
3 locked (a deploy or rollback holds the environment: its own monitor guards it),
5 inconclusive (gates without data at the end), 130 interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from dhash_rollout.commands import log_to_stderr
from dhash_service.errors import ConfigError, DhashError

if TYPE_CHECKING:
    from dhash_rollout.environments import Environment
    from dhash_rollout.monitor.guard import RollbackAction, RollbackOutcome
    from dhash_rollout.notify.model import Severity
    from dhash_rollout.runs.monitoring import DeployMonitor, MonitorResult

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3
EXIT_INCONCLUSIVE, EXIT_INTERRUPTED = 5, 130
TIME_SCALE_ENV = "DHASH_MONITOR_TIME_SCALE"  # the same as --time-scale, for wrappers and demos
DEFAULT_GATES = Path("quality-gates-config.json")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # end the run as INTERRUPTED, ledger intact

EnvOption = typer.Option(..., "--env", help="Environment: staging, production or canary.")
ConfigOption = typer.Option(
    DEFAULT_GATES, "--config", help="Quality gates file (default: quality-gates-config.json)."
)


class _CommandEvents:
    """The run's side of the seam for a monitor started by hand: notices to the environment's
    channels, journal-worthy events to the monitor's log, stop on SIGINT/SIGTERM."""

    def __init__(self, env: Environment, log_dir: Path, quiet_notify: bool = False) -> None:
        self.env = env
        self.log_dir = log_dir
        self.stop = False
        self.quiet_notify = quiet_notify
        self.recorded: list[tuple[str, Mapping[str, object]]] = []

    def record(self, event: str, data: Mapping[str, object]) -> None:
        self.recorded.append((event, data))

    def notify(
        self, severity: Severity, title: str, message: str, *, phase: str | None = None
    ) -> None:
        from dhash_rollout.notify import Event, notifier_from_settings

        if self.quiet_notify:
            return
        try:
            notifier = notifier_from_settings(
                self.env.name, channels=self.env.channels, log_dir=self.log_dir
            )
            notifier.send(
                Event(
                    kind="gate",
                    env=self.env.name,
                    message=message,
                    severity=severity,
                    subject=title,
                    phase=phase,
                )
            )
        except DhashError as err:  # a notice that cannot go out never stops the monitor
            typer.echo(f"dhash: notice not sent: {err.message}", err=True)

    def stop_requested(self) -> bool:
        return self.stop

    def on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.stop = True


def default_rollback(environment: str, *, reason: str, monitor_run_id: str) -> RollbackOutcome:
    """THE call site of the monitor's rollback (trigger=automatic, reason=the gate)."""
    from dhash_rollout.monitor.guard import RollbackOutcome
    from dhash_rollout.rollback import RollbackRequest, rollback

    try:
        done = rollback(
            RollbackRequest(env=environment, reason=reason, trigger="automatic"),
            say=typer.echo,
        )
    except DhashError as err:
        return RollbackOutcome(False, None, err.message)
    return RollbackOutcome(done.ok, done.run_id, done.error or "rolled back")


ROLLBACK_ACTION: RollbackAction = default_rollback


def _time_scale(given: float | None) -> float:
    if given is not None:
        return given
    raw = os.environ.get(TIME_SCALE_ENV)
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{TIME_SCALE_ENV}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{TIME_SCALE_ENV} must be > 0")
    return value


def _exit_code(result: MonitorResult) -> int:
    from dhash_rollout.runs.monitoring import Verdict

    return {
        Verdict.PASSED: EXIT_PASSED,
        Verdict.FAILED: EXIT_FAILED,
        Verdict.INCONCLUSIVE: EXIT_INCONCLUSIVE,
        Verdict.INTERRUPTED: EXIT_INTERRUPTED,
    }[result.verdict]


def monitor(
    *,
    env: str = EnvOption,
    duration: float | None = typer.Option(
        None, "--duration", min=0.01, help="Window in minutes (default: the gates file's)."
    ),
    config: Path = ConfigOption,
    url: str | None = typer.Option(None, "--url", help="Service base URL (default: the env's)."),
    source: str = typer.Option("scrape", "--source", help="scrape (default) or prometheus."),
    prometheus_url: str | None = typer.Option(
        None, "--prometheus-url", help="Prometheus base URL (with --source prometheus)."
    ),
    time_scale: float | None = typer.Option(
        None,
        "--time-scale",
        min=0.001,
        help=f"Run the same schedule N times faster (demos, tests; also {TIME_SCALE_ENV}).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the verdict as JSON."),
    guard: bool | None = typer.Option(
        None,
        "--rollback/--no-rollback",
        help="Roll back on a violation (default: only while the last deploy is in its window).",
    ),
) -> None:
    """Watch the quality gates of a deployed environment; resume the guard of a deploy whose
    controller died inside its window (rolling back once on a violation), else observe."""
    from dhash_rollout.environments import api_token, load_environment
    from dhash_rollout.monitor.deploy_guard import DeployGuard
    from dhash_rollout.monitor.gates_config import load_gates_config
    from dhash_rollout.monitor.guard import open_deploy, should_guard
    from dhash_rollout.monitor.runner import prometheus_source, scrape_source
    from dhash_rollout.runs.journal import Journal, new_run_id
    from dhash_rollout.runs.monitoring import MonitorRequest, SystemClock
    from dhash_rollout.targets import get_target

    if source not in ("scrape", "prometheus"):
        raise ConfigError(f"--source must be scrape or prometheus, not {source!r}")
    if source == "prometheus" and not prometheus_url:
        raise ConfigError("--source prometheus needs --prometheus-url")
    scale = _time_scale(time_scale)
    log_to_stderr()
    gates = load_gates_config(config, environment=env)
    environment = load_environment(env)
    nominal_s = (duration or gates.monitoring.duration_minutes) * 60
    now = time.time()
    journal = Journal.for_root(environment.root)
    deploy = open_deploy(
        journal.last_run(), journal.records(), now=now, duration_s=nominal_s / scale
    )
    guarding = should_guard(deploy, guard)
    factory = prometheus_source(prometheus_url or "") if source == "prometheus" else scrape_source
    view = "quiet" if as_json else "auto"
    watcher = DeployGuard(source=factory, gates_file=config, view=view, escalate=escalate_on_poll)
    if guarding and deploy is not None:
        _resume_guard(env, deploy.run_id, watcher, scale, as_json)
        return
    current = get_target(environment).current() if environment.root.exists() else None
    log_dir = Path("logs")
    request = MonitorRequest(
        environment=env,
        version=current.version if current else "",  # "": every version's samples count
        previous_version=None,
        base_url=(url or environment.url).rstrip("/"),
        window_start=now,  # its own window and ledger: never a deploy's
        run_id=new_run_id("monitor"),
        log_dir=log_dir,
        gates_file=config,
        duration_s=nominal_s,
        time_scale=scale,
        api_token=api_token(environment),
    )
    events = _CommandEvents(environment, log_dir)
    previous = {sig: signal.signal(sig, events.on_signal) for sig in STOP_SIGNALS}
    mode = "observing, rolling back on a violation" if guarding else "observing (no rollback)"
    if not as_json:
        typer.echo(
            f"monitoring {env} {request.version} at {request.base_url} from {source}, "
            f"{nominal_s / 60:g} min"
            + (f" (time scale {scale:g})" if scale != 1 else "")
            + f": {mode}"
        )
    try:
        result = watcher.watch(request, events, SystemClock())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    rollback = _act(result, env, request.run_id) if guarding else None
    _final_notice(events, result, rollback, guarding)
    _print_result(result, rollback, guarding, as_json)
    raise typer.Exit(_exit_code(result))


def escalate_on_poll(_at: float) -> None:
    """``dhash notify escalate`` while a monitor is alive: page the levels now due (the
    deploy's monitor and ``dhash monitor`` call it on their polls, throttled by DeployGuard)."""
    from dhash_rollout.notify.factory import build_escalator
    from dhash_rollout.settings import ToolkitSettings

    _, log_dir = ToolkitSettings.load().work_dirs(Path.cwd())
    build_escalator(log_dir, strict=False).escalate_due()


def mark_rollback(env: Environment, run_id: str) -> None:
    """After a deploy's automatic rollback: the ledger gets the rollback (once) and the report
    is drawn again with it marked, so "why did it roll back?" is answered on that one page."""
    from dhash_rollout.monitor.ledger import Ledger
    from dhash_rollout.monitor.report import write_report
    from dhash_rollout.runs.journal import Journal

    journal = Journal.for_root(env.root)
    run = journal.run(run_id)
    if run is None or run.status_of("auto_rollback") is None:
        return
    detail, rolled = run.detail_of("monitor"), run.detail_of("auto_rollback")
    ledger_path, report = detail.get("ledger"), detail.get("report")
    if not ledger_path or not report or not Path(ledger_path).is_file():
        return
    ledger = Ledger.open(Path(ledger_path))
    if not ledger.of_kind("rollback"):
        began = next(
            (
                datetime.fromisoformat(r.ts).timestamp()
                for r in journal.records()
                if r.deploy_id == run_id and r.phase == "auto_rollback"
            ),
            time.time(),
        )
        ledger.append(
            "rollback",
            {
                "at": began,
                "ok": bool(rolled.get("ok")),
                "run_id": rolled.get("rollback_run"),
                "detail": rolled.get("summary") or rolled.get("error") or "",
                "reason": detail.get("reason"),
            },
        )
    write_report(Path(ledger_path), Path(report))


def _resume_guard(
    env: str, run_id: str, watcher: DeployMonitor, scale: float, as_json: bool
) -> None:
    """The deploy ``run_id`` is owed its guard: resume it under the lock (exit 3 when its own
    controller still holds it), then report its verdict and exit as the monitor does."""
    from dhash_rollout.deploy import DeployRequest
    from dhash_rollout.deploy.guard import resume_guard
    from dhash_rollout.environments import load_environment
    from dhash_rollout.rollback import execute
    from dhash_rollout.runs.journal import Journal

    def say(message: str) -> None:
        if not as_json:
            typer.echo(message)

    say(f"{env}: the deploy {run_id} is inside its window with no monitor: resuming its guard")
    result = resume_guard(
        DeployRequest(env=env, monitor_time_scale=scale),
        run_id,
        say,
        monitor=watcher,
        rollback=execute,
    )
    environment = load_environment(env)
    mark_rollback(environment, run_id)
    run = Journal.for_root(environment.root).run(run_id)
    detail = run.detail_of("monitor") if run else {}
    rolled = run.detail_of("auto_rollback") if run else {}
    verdict = str(detail.get("verdict") or ("interrupted" if not result.ok else "passed"))
    code = {"passed": EXIT_PASSED, "failed": EXIT_FAILED, "inconclusive": EXIT_INCONCLUSIVE}
    exit_code = code.get(verdict, EXIT_INTERRUPTED)
    if as_json:
        payload = {
            "verdict": verdict,
            "reason": detail.get("reason"),
            "failed_gate": detail.get("failed_gate"),
            "polls": detail.get("polls"),
            "guarding": True,
            "deploy": run_id,
            "deploy_ok": result.ok,
            "rollback": rolled or None,
            "evidence": detail.get("evidence", []),
            "report": detail.get("report"),
            "ledger": detail.get("ledger"),
            "exit_code": exit_code,
        }
        typer.echo(json.dumps(payload, indent=2, default=str))
    else:
        typer.echo(f"verdict: {verdict.upper()}: {detail.get('reason', result.error or '')}")
        if rolled:
            typer.echo(f"rollback: {'done' if rolled.get('ok') else 'FAILED'}: {rolled}")
        typer.echo(f"deploy {run_id}: {'done' if result.ok else 'failed'}")
        typer.echo(f"report: {detail.get('report')}")
        typer.echo(f"ledger: {detail.get('ledger')}")
    raise typer.Exit(exit_code)


def _act(result: MonitorResult, env: str, run_id: str) -> RollbackOutcome | None:
    """Guarding: a failed verdict rolls back once, through the one call site, and the ledger
    says so; a re-run that finds the rollback in the ledger reports it and does not act again."""
    from dhash_rollout.monitor.guard import RollbackOutcome
    from dhash_rollout.monitor.ledger import Ledger
    from dhash_rollout.monitor.report import RollbackMark, write_report
    from dhash_rollout.runs.monitoring import Verdict

    if result.verdict is not Verdict.FAILED or result.ledger_path is None:
        return None
    ledger = Ledger.open(result.ledger_path)
    done = ledger.of_kind("rollback")
    if done:
        last = done[-1]
        return RollbackOutcome(bool(last["ok"]), last.get("run_id"), f"already: {last['detail']}")
    started = time.time()
    reason = f"quality gate {result.failed_gate}: {result.reason}"
    rollback = ROLLBACK_ACTION(env, reason=reason, monitor_run_id=run_id)
    ledger.append("rollback", {"at": started, "ok": rollback.ok, "run_id": rollback.run_id,
                               "detail": rollback.detail, "reason": reason})  # fmt: skip
    if result.report_path is not None:
        mark = RollbackMark(started, "done" if rollback.ok else "failed", rollback.detail)
        write_report(result.ledger_path, result.report_path, mark)
    return rollback


def _print_result(
    result: MonitorResult, rollback: RollbackOutcome | None, guarding: bool, as_json: bool
) -> None:
    if as_json:
        typer.echo(json.dumps(_as_json(result, rollback, guarding), indent=2, default=str))
    else:
        typer.echo(f"verdict: {result.verdict.value.upper()}: {result.reason}")
        if rollback is not None:
            typer.echo(f"rollback: {'done' if rollback.ok else 'FAILED'}: {rollback.detail}")
        typer.echo(f"report: {result.report_path}")
        typer.echo(f"ledger: {result.ledger_path}")


def _final_notice(
    events: _CommandEvents, result: MonitorResult, rollback: RollbackOutcome | None, guarding: bool
) -> None:
    from dhash_rollout.notify.escalator import GATES_PASSED_PHASE
    from dhash_rollout.notify.model import Severity
    from dhash_rollout.runs.monitoring import Verdict

    report = f" Report: {result.report_path}"
    env = events.env.name
    if result.verdict is Verdict.PASSED:  # also resolves the environment's open gate alerts
        events.notify(
            Severity.INFO,
            f"{env}: quality gates passed",
            result.reason + report,
            phase=GATES_PASSED_PHASE,
        )
    elif result.verdict is Verdict.INCONCLUSIVE:
        events.notify(Severity.WARN, f"{env}: monitoring inconclusive", result.reason + report)
    elif result.verdict is Verdict.FAILED:
        action = "rollback not enabled (observing)" if not guarding else "rolled back"
        if rollback is not None and not rollback.ok:
            events.notify(
                Severity.CRITICAL,
                f"{env}: quality gate violated, ROLLBACK FAILED",
                f"{result.reason}; rollback: {rollback.detail}.{report}",
            )
            return
        events.notify(
            Severity.ERROR, f"{env}: quality gate violated, {action}", result.reason + report
        )


def _as_json(
    result: MonitorResult, rollback: RollbackOutcome | None, guarding: bool
) -> dict[str, object]:
    return {
        "verdict": result.verdict.value,
        "reason": result.reason,
        "failed_gate": result.failed_gate,
        "polls": result.polls,
        "guarding": guarding,
        "rollback": asdict(rollback) if rollback else None,
        "evidence": [asdict(e) for e in result.evidence],
        "report": str(result.report_path),
        "ledger": str(result.ledger_path),
        "exit_code": _exit_code(result),
    }


def gates_check(
    config: Path = typer.Option(DEFAULT_GATES, "--config", help="File to check."),
) -> None:
    """Validate a quality gates file without running anything (exit 2 with one line each)."""
    from dhash_rollout.monitor.gates_config import GatesConfigError, load_gates_config

    try:
        loaded = load_gates_config(config)
    except GatesConfigError as err:
        for line in err.lines:
            typer.echo(f"{config}: {line}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    envs = ", ".join(sorted(loaded.environments))
    typer.echo(f"{config}: OK ({envs}; {loaded.monitoring.duration_minutes:g} min window)")


def gates_replay(
    ledger: Path = typer.Argument(..., help="A monitor ledger (logs/monitor_<env>_<ts>.jsonl)."),
    config: Path = typer.Option(..., "--config", help="The thresholds to replay against."),
) -> None:
    """Re-evaluate a ledger's recorded samples against other thresholds: when would each fire?"""
    from dhash_rollout.monitor.gates_config import load_gates_config
    from dhash_rollout.monitor.replay import ReplayError, replay

    loaded = load_gates_config(config)
    if not ledger.is_file():
        raise ConfigError(f"{ledger} is not a file")
    try:
        result = replay(ledger, loaded, config)
    except ReplayError as err:
        raise ConfigError(str(err)) from None
    typer.echo(
        f"{ledger}: {result.polls} polls of {result.environment} against {config} "
        "(window values as recorded)"
    )
    for name, _gate in loaded.for_environment(result.environment, config).items():
        fired = result.fired.get(name)
        if fired is None:
            typer.echo(f"  {name.value}: would not fire")
        else:
            value = "no data" if fired.value is None else f"{fired.value:.4g}"
            typer.echo(
                f"  {name.value}: would fire at poll {fired.poll} (t+{fired.offset_s:g}s):"
                f" {value} > {fired.threshold:g}; {fired.detail}"
            )
    typer.echo(f"verdict: {result.verdict.value.upper()}: {result.reason}")


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
    gates_app = typer.Typer(help="Quality gates: validate a file, replay a ledger against it.")
    gates_app.command("check")(gates_check)
    gates_app.command("replay")(gates_replay)
    app.add_typer(gates_app, name="gates")

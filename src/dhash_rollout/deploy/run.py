"""The guarded deploy as a resumable state machine.

``deploy()`` gathers facts, asks :mod:`dhash_rollout.deploy.plan` for the steps and runs them
under the environment's lock, journaling each phase before and after. Every phase is
idempotent, so a deploy killed anywhere is finished by running it again: the re-run finds the
unfinished run in the journal and continues it with the same parameters. When a phase fails
after the schema or the serving release changed, the run undoes it (:mod:`.runs.recovery`:
previous release back, schema back down) so the environment ends fully old or fully new, never
mixed. When the monitor's verdict is FAILED, the injected rollback runs under this lock.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dhash_rollout.backup import create_backup, latest_verified_backup
from dhash_rollout.checks.preflight import PORT_CHECK, run_preflight
from dhash_rollout.checks.smoke import smoke_phase
from dhash_rollout.deploy.plan import ONCE_PER_RUN, BackupFact, DeployFacts, plan_deploy
from dhash_rollout.environments import (
    STRICT_TOKEN_ENVIRONMENTS,
    Environment,
    api_token,
    load_environment,
)
from dhash_rollout.releases import (
    Release,
    ReleaseSource,
    normalize_version,
    source_version,
    write_release_settings,
)
from dhash_rollout.runs.context import RunContext, deploy_run_context, run_steps
from dhash_rollout.runs.events import RunEvents, stop_on_signals
from dhash_rollout.runs.health import health_phase
from dhash_rollout.runs.interrupt import (
    RunInterrupted,
    interruptible,
    report_interrupted,
    stopped_in,
)
from dhash_rollout.runs.journal import Journal, RunState, new_run_id
from dhash_rollout.runs.locking import hold_lock, lock_holder
from dhash_rollout.runs.monitoring import (
    DeployMonitor,
    MonitorRequest,
    MonitorResult,
    SystemClock,
    Verdict,
)
from dhash_rollout.runs.notices import notify
from dhash_rollout.runs.paths import lock_path
from dhash_rollout.runs.plan import Phase, Plan, Step, render_plan
from dhash_rollout.runs.recovery import (
    Leftover,
    RollbackOutcome,
    RunsRollback,
    recover_interrupted,
    undo_deploy,
)
from dhash_rollout.runs.schema import database_exists, database_revision, migrate_with
from dhash_rollout.settings import ToolkitSettings
from dhash_rollout.targets import DeployTarget, get_target
from dhash_service.errors import CheckFailed, ConfigError, DhashError, NotFound

INSTALLED = "the installed release"
DRY_RUN_LOG = "deploy-dryrun.log"


@dataclass(frozen=True)
class DeployRequest:
    env: str
    version: str | None = None
    source: str | None = None
    dry_run: bool = False
    no_monitor: bool = False
    initiator: str = field(default_factory=getpass.getuser)
    base: Path = field(default_factory=Path.cwd)
    smoke_timeout: float = 120.0
    log_path: Path | None = None  # default: logs/deploy_<env>_<ts>.log
    settings: ToolkitSettings = field(default_factory=ToolkitSettings.load)
    monitor_time_scale: float = 1.0  # the monitor's schedule N times faster (demos, tests)
    # The release's own service settings (``--release-setting``, e.g. a fault for a test or the
    # demo), written to its settings.json before the switch; None: keep what it carries.
    release_settings: dict[str, str] | None = None


@dataclass(frozen=True)
class DeployResult:
    run_id: str | None
    env: str
    version: str
    ok: bool
    plan: Plan
    log_path: Path | None
    resumed_from: str | None = None
    error: str | None = None
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    interrupted: bool = False  # stopped by SIGTERM/SIGINT: the run stays open (exit 130)
    exit_code: int = 1  # of the error that failed it (an integrity failure is 4, as elsewhere)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "env": self.env,
            "version": self.version,
            "ok": self.ok,
            "exit_code": 0 if self.ok else self.exit_code,
            "interrupted": self.interrupted,
            "resumed_from": self.resumed_from,
            "error": self.error,
            "log": str(self.log_path) if self.log_path else None,
            "plan": self.plan.to_dict(),
            "phases": self.phases,
        }


def resolve_release(
    request: DeployRequest, target: DeployTarget
) -> tuple[str, ReleaseSource | None]:
    """The version to deploy and where it comes from (None: an installed release)."""
    if request.source:
        source = ReleaseSource.parse(request.source, request.base)
        built = source.version()  # read without building: a bad git ref is refused here
        if built is None:
            raise ConfigError(f"cannot tell which version {source.describe()} builds")
        if request.version and normalize_version(request.version) != normalize_version(built):
            raise ConfigError(f"{source.describe()} builds version {built}, not {request.version}")
        return normalize_version(built), source
    if request.version:
        version = normalize_version(request.version)
        if target.release(version) is not None:
            return version, None
        built = normalize_version(source_version(request.base))
        if built != version:
            raise ConfigError(
                f"release {version} is not installed and the checkout at {request.base} is "
                f"version {built}: pass --source (a wheel, a directory or git:REF)"
            )
        return version, ReleaseSource("dir", str(request.base.resolve()))
    return normalize_version(source_version(request.base)), ReleaseSource(
        "dir", str(request.base.resolve())
    )


def preflight_default(env_name: str) -> str:
    """Production deploys are gated by the checklist; elsewhere its problems are warnings."""
    return "enforce" if env_name == "production" else "warn"


def _latest_backup(env: Environment, backup_dir: Path) -> BackupFact | None:
    info = latest_verified_backup(backup_dir, env.name)
    if info is None:
        return None
    age = (datetime.now(UTC) - info.created_at).total_seconds()
    return BackupFact(str(info.path), max(0.0, age))


def gather_facts(
    request: DeployRequest,
    env: Environment,
    target: DeployTarget,
    resume: RunState | None,
    lock_holder: str | None = None,
    *,
    monitor_available: bool = False,
) -> DeployFacts:
    backup_dir, _ = request.settings.work_dirs(request.base)
    version, source = resolve_release(request, target)
    current = target.current()
    return DeployFacts(
        env=env.name,
        url=env.url,
        root=str(env.root),
        version=version,
        source=source.describe() if source else INSTALLED,
        release_installed=target.release(version) is not None and source is None,
        current_version=current.version if current else None,
        schema_revision=database_revision(env.database_url),
        latest_backup=_latest_backup(env, backup_dir),
        backup_max_age_seconds=env.settings.backup_max_age_seconds,
        channels=env.channels,
        deps=env.settings.release_deps,
        monitor_available=monitor_available,
        no_monitor=request.no_monitor,
        smoke_timeout=request.smoke_timeout,
        resumed_from=resume.deploy_id if resume else None,
        resumed_done=frozenset(
            p for p in ONCE_PER_RUN if resume and resume.status_of(p) in ("done", "skipped")
        ),
        lock_holder=lock_holder,
        database_exists=database_exists(env.database_url),
        auth_state=_token_fact(env),
    )


def _token_fact(env: Environment) -> Literal["configured", "generate", "missing"]:
    if api_token(env) is not None:
        return "configured"
    return "missing" if env.name in STRICT_TOKEN_ENVIRONMENTS else "generate"


def dry_run(request: DeployRequest, monitor: DeployMonitor | None = None) -> DeployResult:
    """Plan every phase, execute none, and write the plan to ``deploy-dryrun.log``."""
    env = load_environment(request.env, request.base)
    target = get_target(env)
    journal = Journal.for_root(env.root)
    last = journal.last_run("deploy")
    resume = last if last and not last.finished else None
    holder = _lock_holder(env)
    facts = gather_facts(request, env, target, resume, holder, monitor_available=bool(monitor))
    plan = plan_deploy(facts)
    log_path = request.base / DRY_RUN_LOG
    footer = (
        f"# dhash deploy --dry-run --env {env.name} at {datetime.now(UTC).isoformat()}; "
        f"initiator: {request.initiator}; release source: {facts.source}\n"
    )
    log_path.write_text(render_plan(plan) + footer, encoding="utf-8")
    return DeployResult(None, env.name, facts.version, True, plan, log_path, facts.resumed_from)


def _lock_holder(env: Environment) -> str | None:
    """Who holds the deploy lock right now (for the dry-run), without keeping it."""
    return lock_holder(lock_path(env))


def deploy(
    request: DeployRequest,
    say: Callable[[str], None] | None = None,
    *,
    monitor: DeployMonitor | None = None,
    rollback: RunsRollback | None = None,
) -> DeployResult:
    """Run (or resume) a deploy. Raises ``Locked`` (exit 3) when another run holds the env.

    ``monitor`` watches the quality gates after the switch (None: the phase is skipped);
    ``rollback`` is what runs, under this deploy's lock, when the monitor's verdict is FAILED
    (None: the deploy's own undo puts the previous release back).
    """
    if request.dry_run:
        return dry_run(request, monitor)
    progress = say or (lambda _m: None)
    env = load_environment(request.env, request.base)
    target = get_target(env)
    dirs = request.settings.work_dirs(request.base)
    journal = Journal.for_root(env.root)
    with hold_lock(lock_path(env), "deploy") as held:
        last = journal.last_run()
        unfinished = last if last and not last.finished else None
        resume: RunState | None = None
        if unfinished is not None:
            resume = _take_over(unfinished, request, target, env, journal, progress)
        run_id = resume.deploy_id if resume else new_run_id("deploy")
        with deploy_run_context(
            env, target, journal, run_id, base=request.base, dirs=dirs, say=progress, lock=held,
            log_path=request.log_path,
        ) as ctx:  # fmt: skip
            facts = gather_facts(request, env, target, resume, monitor_available=bool(monitor))
            plan = plan_deploy(facts)
            params = _params(request, facts, resume)
            if resume is None:
                ctx.start(params)
            progress(f"deploy {env.name} {facts.version} [{run_id}]")
            if resume is not None:
                progress(f"  resuming the interrupted run (stopped in {resume.interrupted_phase})")
            for warning in plan.warnings:
                progress(f"  warning: {warning}")
            ctx.record(
                Phase.LOCK,
                "done",
                {"took_over": held.took_over.__dict__ if held.took_over else None},
            )
            runner = _DeployRunner(ctx, request, facts, params, release_source(request))
            runner.monitor, runner.rollback = monitor, rollback
            return runner.run(plan, ctx.log_path)


def release_source(request: DeployRequest) -> ReleaseSource | None:
    if request.source:
        return ReleaseSource.parse(request.source, request.base)
    return None


def _params(request: DeployRequest, facts: DeployFacts, resume: RunState | None) -> dict[str, Any]:
    if resume is not None:
        return dict(resume.params)
    return {
        "env": facts.env,
        "version": facts.version,
        "source": facts.source,
        "from_version": facts.current_version,
        "from_revision": facts.schema_revision,
        "initiator": request.initiator,
        "no_monitor": request.no_monitor,
        "release_settings": request.release_settings,
    }


def _take_over(  # noqa: PLR0917 - private, one call site
    unfinished: RunState,
    request: DeployRequest,
    target: DeployTarget,
    env: Environment,
    journal: Journal,
    say: Callable[[str], None],
) -> RunState | None:
    """Resume an interrupted deploy of the same version; undo any other interrupted run."""
    if unfinished.kind == "deploy":
        wanted, _ = resolve_release(request, target)
        if unfinished.params.get("version") == wanted:
            return unfinished
    say(f"the interrupted {unfinished.kind} {unfinished.deploy_id} is undone first")
    dirs = request.settings.work_dirs(request.base)
    recover_interrupted(unfinished, env, target, journal, request.base, say, dirs)
    return None


class MonitorInterrupted(Exception):
    """The monitoring window was cut short (SIGTERM/SIGINT). Not a ``DhashError`` on purpose:
    the phase runner leaves the monitor phase ``started``, so the run is resumed, not undone."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class GatesFailed(CheckFailed):
    """The monitor's verdict was FAILED: the deploy rolls back instead of undoing itself."""

    def __init__(self, message: str, result: MonitorResult) -> None:
        super().__init__(message)
        self.result = result


def watch_phase(
    ctx: RunContext, monitor: DeployMonitor, request: MonitorRequest, detail: dict[str, Any]
) -> MonitorResult:
    """The monitor phase's body, for a deploy and a promoted canary alike: the monitor's window
    over the release that now serves, its verdict and evidence in the phase's journal detail.
    Raises :class:`GatesFailed` on FAILED (and on INCONCLUSIVE under the environment's
    ``monitor_inconclusive = fail``); an INTERRUPTED window leaves the phase ``started``."""

    def stopped_by(name: str) -> None:
        ctx.stop_signal = name

    with stop_on_signals(ctx.stop, stopped_by):
        result = monitor.watch(request, RunEvents(ctx), SystemClock())
    detail.update(verdict=str(result.verdict), reason=result.reason, polls=result.polls)
    detail["evidence"] = [e.__dict__ for e in result.evidence]  # the decision's evidence
    if result.failed_gate:
        detail["failed_gate"] = result.failed_gate
    if result.report_path:
        detail["report"] = str(result.report_path)
    if result.ledger_path:
        detail["ledger"] = str(result.ledger_path)
    policy = ctx.env.settings.monitor_inconclusive
    if result.verdict is Verdict.INCONCLUSIVE and policy == "fail":
        detail["policy"] = "monitor_inconclusive = fail"
        raise GatesFailed(
            f"quality gates inconclusive ({result.reason}) and {ctx.env.name}'s "
            "monitor_inconclusive policy is fail",
            result,
        )
    if result.verdict is Verdict.FAILED:
        raise GatesFailed(f"quality gates failed: {result.reason}", result)
    if result.verdict is Verdict.INTERRUPTED:
        ctx.record(Phase.MONITOR, "started", {"interrupted": result.reason})
    return result


class _DeployRunner:
    monitor: DeployMonitor | None = None
    rollback: RunsRollback | None = None

    def __init__(
        self,
        ctx: RunContext,
        request: DeployRequest,
        facts: DeployFacts,
        params: dict[str, Any],
        source: ReleaseSource | None,
    ) -> None:
        self.ctx = ctx
        self.request = request
        self.facts = facts
        self.params = params
        self.source = source
        if source is None and facts.source != INSTALLED:
            self.source = ReleaseSource("dir", str(request.base.resolve()))
        self.version: str = facts.version
        self.release: Release | None = ctx.target.release(self.version)
        self.inconclusive: str | None = None  # the monitor's reason, for a WARN success notice
        self.watched: MonitorResult | None = None  # the monitor's result, for the notices

    def run(self, plan: Plan, log_path: Path | None) -> DeployResult:
        handlers = {
            Phase.PREFLIGHT: self._preflight,
            Phase.NOTIFY_START: self._notify_start,
            Phase.BACKUP: self._backup,
            Phase.INSTALL: self._install,
            Phase.MIGRATE: self._migrate,
            Phase.ACTIVATE: self._activate,
            Phase.HEALTH: self._health,
            Phase.SMOKE: self._smoke,
            Phase.MONITOR: self._monitor,
            Phase.NOTIFY_RESULT: self._notify_result,
        }
        body = replace(plan, steps=tuple(s for s in plan.steps if s.phase != Phase.LOCK))
        try:
            with interruptible(self.ctx):
                run_steps(self.ctx, body, handlers)
        except RunInterrupted as stop:
            return self.run_interrupted(plan, log_path, stop)
        except MonitorInterrupted as stopped:
            if self.ctx.stop.is_set():  # a SIGTERM/SIGINT ended the window: an interruption
                signal_name = self.ctx.stop_signal or "a stop signal"
                at_monitor = RunInterrupted(signal_name, Phase.MONITOR.value, at_once=True)
                return self.run_interrupted(plan, log_path, at_monitor)
            message = f"deploy of {self.version} stopped while monitoring: {stopped.message}"
            self.ctx.say(f"  {message}")
            return self._result(plan, log_path, message)
        except DhashError as exc:
            if self.ctx.stop.is_set():  # the signal killed the phase's child (a Ctrl-C)
                return self.run_interrupted(plan, log_path, stopped_in(self.ctx, exc))
            return self._failed(plan, log_path, exc)
        self.ctx.finish(True, {"version": self.version})
        return self._result(plan, log_path, None)

    def run_interrupted(
        self, plan: Plan, log_path: Path | None, stop: RunInterrupted
    ) -> DeployResult:
        env = self.ctx.env.name
        message = report_interrupted(
            self.ctx,
            stop,
            f"`dhash deploy --env {env} --version {self.version}` resumes it; "
            f"`dhash rollback --env {env} --reason ...` undoes it",
        )
        return replace(self._result(plan, log_path, message), interrupted=True)

    def _result(self, plan: Plan, log_path: Path | None, error: str | None) -> DeployResult:
        return DeployResult(
            self.ctx.run_id,
            self.ctx.env.name,
            self.version,
            error is None,
            plan,
            log_path,
            self.facts.resumed_from,
            error,
            self.ctx.results,
        )

    def _failed(self, plan: Plan, log_path: Path | None, exc: DhashError) -> DeployResult:
        state = self.ctx.journal.run(self.ctx.run_id)
        phase = state.interrupted_phase if state else None
        if isinstance(exc, GatesFailed):
            phase = Phase.MONITOR
        undo = self._undo(exc, state)
        message = f"deploy of {self.version} failed: {exc.message}"
        self.ctx.finish(False, {"error": exc.message, "undo": undo})
        report = self.watched.report_path if self.watched else None
        text = f"{message}; {undo.get('summary', '')}" + (f". Report: {report}" if report else "")
        put_back = undo.get("rollback_ok")
        notify(
            self.ctx,
            "failure",
            text,
            # The rollback that should have put the environment back failed: every channel,
            # at the top severity (no channel's floor filters it out); nothing retries it.
            severity="CRITICAL" if put_back is False else "ERROR",
            version=self.version,
            initiator=self.params.get("initiator"),
            phase=phase or "deploy",
        )
        if put_back:  # the old release serves again: the deploy's alert is resolved
            serving = undo.get("to_version") or "its previous release"
            notify(
                self.ctx,
                "info",
                f"Resolved: {self.ctx.env.name} serves {serving} again after the automatic "
                f"rollback ({undo.get('rollback_run')})",
                version=self.version,
                phase="resolved",
                resolves=self.ctx.run_id,
            )
        return replace(self._result(plan, log_path, message), exit_code=exc.exit_code)

    def _undo(self, exc: DhashError, state: RunState | None) -> dict[str, Any]:
        """Put the environment back: a rollback plan (``trigger=automatic``) run under this
        deploy's lock when there is a release to go back to and one was injected; else (a
        first deploy, or no rollback given) the deploy's own undo, which can also stop a
        release that had nothing before it."""
        left = Leftover.of(self.params, state)
        gates = isinstance(exc, GatesFailed)
        touched = left.touched_serving or left.touched_schema
        if self.rollback is not None and left.from_version and (touched or gates):
            why = exc.result.reason if isinstance(exc, GatesFailed) else exc.message
            why = (why.strip().splitlines() or ["the deploy failed"])[0][:300]  # one line
            return self._roll_back(Phase.AUTO_ROLLBACK if gates else Phase.UNDO, why)
        try:
            return undo_deploy(self.ctx, left)
        except DhashError as undo_error:
            return {"summary": f"UNDO FAILED: {undo_error.message}"}

    def _roll_back(self, phase: Phase, reason: str) -> dict[str, Any]:
        """The automatic rollback, once, under the lock this deploy holds, journaled as a
        rollback run inside this one (its header names this run as ``parent``)."""
        assert self.rollback is not None
        step = Step(phase, f"roll back automatically: {reason}")
        outcome: RollbackOutcome | None = None
        try:
            with self.ctx.phase(step) as detail:
                outcome = self.rollback(self.ctx, trigger="automatic", reason=reason)
                detail.update(
                    rollback_run=outcome.run_id,
                    ok=outcome.ok,
                    error=outcome.error,
                    summary=outcome.summary,
                )
                if not outcome.ok:
                    raise CheckFailed(f"the automatic rollback failed: {outcome.error}")
        except DhashError as exc:
            return {
                "rollback_run": outcome.run_id if outcome else None,
                "rollback_ok": False,
                "summary": f"ROLLBACK FAILED: {exc.message}",
            }
        serving = self.ctx.target.current()
        return {
            "rollback_run": outcome.run_id,
            "rollback_ok": outcome.run_id is not None,
            "to_version": serving.version if serving else None,
            "summary": outcome.summary,
        }

    # --- phases -------------------------------------------------------------------------------
    def _preflight(self, _step: Step, detail: dict[str, Any]) -> None:
        env = self.ctx.env
        if _token_fact(env) == "missing":  # whatever the checklist policy: never made up
            raise CheckFailed(
                f"{env.name} names no API token, so its write endpoints would refuse every "
                f"request: set api_token in [{env.name}] of dhash-environments.toml, or "
                f"api_tokens in {env.service_config_file}"
            )

        report = run_preflight(self.ctx.env, workdir=self.request.base, version=self.version)
        detail["report"] = str(report.log_path) if report.log_path else None
        detail["checks"] = len(report.results)
        if report.ok:
            return
        shared = [r for r in report.failures if r.name == PORT_CHECK]
        if shared:  # whatever the policy: the new release would share the port (issue 12)
            raise CheckFailed(f"refused before anything changed: {shared[0].detail}")
        policy = self.ctx.env.settings.preflight or preflight_default(self.ctx.env.name)
        if policy == "warn":
            detail["warnings"] = report.summary()
            self.ctx.say(f"    preflight problems (policy: warn): {report.summary()}")
            return
        raise CheckFailed(f"preflight failed: {report.summary()}")

    def _notify_start(self, _step: Step, detail: dict[str, Any]) -> None:
        detail.update(
            notify(
                self.ctx,
                "deploy",
                f"Deploying {self.version} to {self.ctx.env.name} "
                f"(from {self.params.get('from_version') or 'nothing'})",
                version=self.version,
                initiator=self.params.get("initiator"),
                phase="start",
            )
        )

    def _backup(self, _step: Step, detail: dict[str, Any]) -> None:
        info = create_backup(self.ctx.env, self.ctx.backup_dir)  # verifies before returning
        detail.update(
            path=str(info.path), sha256=info.sha256, schema=info.schema_revision, state=info.state
        )

    def _install(self, _step: Step, detail: dict[str, Any]) -> None:
        assert self.source is not None
        release = self.ctx.target.install(
            self.source, version=self.version, progress=lambda m: self.ctx.say(f"    {m}")
        )
        self.release = release
        detail.update(path=str(release.path), wheel_sha256=release.wheel_sha256)

    def _need_release(self) -> Release:
        release = self.release or self.ctx.target.release(self.version)
        if release is None:
            raise NotFound(f"release {self.version} is not installed")
        self.release = release
        return release

    def _migrate(self, _step: Step, detail: dict[str, Any]) -> None:
        release = self._need_release()
        detail["from_revision"] = database_revision(self.ctx.env.database_url)
        migrate_with(release, self.ctx.env, self.request.base, None)
        detail["to_revision"] = database_revision(self.ctx.env.database_url)

    def _activate(self, _step: Step, detail: dict[str, Any]) -> None:
        release = self._need_release()
        settings = self.params.get("release_settings")
        if settings is not None:  # before the switch: the new processes start with them
            write_release_settings(release, settings)
            detail["release_settings"] = sorted(settings)
        state = self.ctx.journal.run(self.ctx.run_id)
        earlier = state.detail_of(Phase.ACTIVATE).get("switched_at") if state else None
        result = self.ctx.target.activate(self.version, progress=lambda m: self.ctx.say(f"    {m}"))
        # The monitor's window starts at the switch; a resumed run that finds its release
        # already serving keeps the switch it made, so its monitor continues the same window.
        again = earlier is not None and not result.changed
        detail.update(
            instance=result.instance,
            previous=result.previous,
            changed=result.changed,
            steered=result.steered,
            switched_at=earlier if again else time.time(),
        )

    def _health(self, _step: Step, detail: dict[str, Any]) -> None:
        health_phase(self.ctx.env, detail)

    def _smoke(self, _step: Step, detail: dict[str, Any]) -> None:
        smoke_phase(
            self.ctx.env,
            detail,
            timeout=self.request.smoke_timeout,
            post_rollback=False,
            log_path=self.request.base / "postdeploy-smoketests.log",
        )

    def monitor_request(self) -> MonitorRequest:
        """The window starts at the switch the journal recorded (a resumed run's own one)."""
        state = self.ctx.journal.run(self.ctx.run_id)
        switched = state.detail_of(Phase.ACTIVATE).get("switched_at") if state else None
        env = self.ctx.env
        return MonitorRequest(
            environment=env.name,
            version=self.version,
            previous_version=self.params.get("from_version"),
            base_url=env.url,
            window_start=float(switched) if switched is not None else time.time(),
            run_id=self.ctx.run_id,
            log_dir=self.ctx.log_dir,
            time_scale=self.request.monitor_time_scale,
            api_token=api_token(env),
        )

    def _monitor(self, _step: Step, detail: dict[str, Any]) -> None:
        if self.monitor is None:
            raise CheckFailed("the monitor is not available")
        try:
            result = watch_phase(self.ctx, self.monitor, self.monitor_request(), detail)
        except GatesFailed as failed:
            self.watched = failed.result  # its report goes into the failure notice
            raise
        self.watched = result
        if result.verdict is Verdict.INTERRUPTED:
            raise MonitorInterrupted(
                f"{result.reason}; the run stays open: `dhash deploy --env {self.ctx.env.name} "
                f"--version {self.version}` resumes it"
            )
        if result.verdict is Verdict.INCONCLUSIVE:
            self.inconclusive = result.reason

    def _notify_result(self, _step: Step, detail: dict[str, Any]) -> None:
        text = f"Deployed {self.version} to {self.ctx.env.name}"
        watched = self.watched
        if self.inconclusive is not None:
            text += f"; the monitoring was inconclusive: {self.inconclusive}"
        elif watched is not None:
            text += f"; quality gates passed over {watched.polls} polls"
        if watched is not None:
            summary = watched.extra.get("summary")
            text += f" ({summary})" if summary else ""
            text += f". Report: {watched.report_path}" if watched.report_path else ""
        detail.update(
            notify(
                self.ctx,
                "success",
                text,
                severity="WARN" if self.inconclusive is not None else "INFO",
                version=self.version,
                initiator=self.params.get("initiator"),
                phase="complete",
            )
        )

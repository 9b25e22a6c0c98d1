"""The guarded deploy as a resumable state machine.

``deploy()`` gathers facts, asks :mod:`dhash_rollout.plan` for the steps and runs them under the
environment's lock, journaling each phase before and after. Every phase is idempotent, so a
deploy killed anywhere is finished by running it again: the re-run finds the unfinished run in
the journal and continues it with the same parameters. When a phase fails after the schema or
the serving release changed, the run compensates (previous release back, schema back down) so
the environment ends fully old or fully new, never mixed.
"""

from __future__ import annotations

import getpass
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dhash_rollout.environments import (
    STRICT_TOKEN_ENVIRONMENTS,
    Environment,
    api_token,
    load_environment,
)
from dhash_rollout.journal import Journal, RunState, new_run_id
from dhash_rollout.locking import hold_lock
from dhash_rollout.pipeline import (
    RunContext,
    check_health,
    database_exists,
    database_revision,
    migrate_with,
    notify,
    open_run_log,
    run_steps,
)
from dhash_rollout.plan import (
    ONCE_PER_RUN,
    BackupFact,
    DeployFacts,
    Plan,
    Step,
    plan_deploy,
    render_plan,
)
from dhash_rollout.releases import Release, ReleaseSource, normalize_version, source_version
from dhash_rollout.targets import Target, get_target
from dhash_service.config import Settings
from dhash_service.errors import CheckFailed, ConfigError, DhashError, NotFound

INSTALLED = "the installed release"
DRY_RUN_LOG = "deploy-dryrun.log"
LOCK_NAME = "deploy.lock"
DEFAULT_BACKUP_MAX_AGE = 3600.0


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "env": self.env,
            "version": self.version,
            "ok": self.ok,
            "resumed_from": self.resumed_from,
            "error": self.error,
            "log": str(self.log_path) if self.log_path else None,
            "plan": self.plan.to_dict(),
            "phases": self.phases,
        }


def work_dirs(base: Path) -> tuple[Path, Path]:
    """The backups and logs directories (``backups/`` and ``logs/`` under the working dir)."""
    settings = Settings()
    return (base / settings.backup_dir).resolve(), (base / settings.log_dir).resolve()


def lock_path(env: Environment) -> Path:
    return env.root / LOCK_NAME


def resolve_release(request: DeployRequest, target: Target) -> tuple[str, ReleaseSource | None]:
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


def monitor_hook() -> Callable[..., Any] | None:
    """The monitor's entry point once it exists (``dhash_rollout.monitor.monitor_deploy``)."""
    if importlib.util.find_spec("dhash_rollout.monitor") is None:
        return None
    module = importlib.import_module("dhash_rollout.monitor")
    hook = getattr(module, "monitor_deploy", None)
    return hook if callable(hook) else None


def _latest_backup(env: Environment, backup_dir: Path) -> BackupFact | None:
    from dhash_rollout.backup import latest_verified_backup

    info = latest_verified_backup(backup_dir, env.name)
    if info is None:
        return None
    age = (datetime.now(UTC) - info.created_at).total_seconds()
    return BackupFact(str(info.path), max(0.0, age))


def gather_facts(
    request: DeployRequest,
    env: Environment,
    target: Target,
    resume: RunState | None,
    lock_holder: str | None = None,
) -> DeployFacts:
    backup_dir, _ = work_dirs(request.base)
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
        backup_max_age_seconds=float(
            env.extra.get("backup_max_age_seconds", DEFAULT_BACKUP_MAX_AGE)
        ),
        channels=env.channels,
        deps=str(env.extra.get("release_deps", "full")),
        monitor_available=monitor_hook() is not None,
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


def dry_run(request: DeployRequest) -> DeployResult:
    """Plan every phase, execute none, and write the plan to ``deploy-dryrun.log``."""
    env = load_environment(request.env, request.base)
    target = get_target(env)
    journal = Journal.for_root(env.root)
    last = journal.last_run("deploy")
    resume = last if last and not last.finished else None
    holder = _lock_holder(env)
    facts = gather_facts(request, env, target, resume, holder)
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
    from dhash_service.errors import Locked

    path = lock_path(env)
    if not path.exists():
        return None
    try:
        with hold_lock(path, "dry-run probe"):
            return None
    except Locked as exc:
        return exc.message.split(" is held by ", 1)[-1]


def deploy(request: DeployRequest, say: Callable[[str], None] | None = None) -> DeployResult:
    """Run (or resume) a deploy. Raises ``Locked`` (exit 3) when another run holds the env."""
    if request.dry_run:
        return dry_run(request)
    progress = say or (lambda _m: None)
    env = load_environment(request.env, request.base)
    target = get_target(env)
    backup_dir, log_dir = work_dirs(request.base)
    journal = Journal.for_root(env.root)
    with hold_lock(lock_path(env), "deploy") as held:
        last = journal.last_run()
        unfinished = last if last and not last.finished else None
        resume: RunState | None = None
        if unfinished is not None:
            resume = _take_over(unfinished, request, target, env, journal, progress)
        run_id = resume.deploy_id if resume else new_run_id("deploy")
        log_path, handle, logger = open_run_log(log_dir, "deploy", env.name, request.log_path)
        with handle:
            ctx = RunContext(
                kind="deploy",
                env=env,
                target=target,
                journal=journal,
                run_id=run_id,
                base=request.base,
                log_dir=log_dir,
                backup_dir=backup_dir,
                logger=logger,
                say=progress,
            )
            facts = gather_facts(request, env, target, resume)
            plan = plan_deploy(facts)
            params = _params(request, facts, resume)
            if resume is None:
                ctx.start(params)
            progress(f"deploy {env.name} {facts.version} [{run_id}]")
            if resume is not None:
                progress(f"  resuming the interrupted run (stopped in {resume.interrupted_phase})")
            for warning in plan.warnings:
                progress(f"  warning: {warning}")
            ctx.journal.append(
                run_id,
                "lock",
                "done",
                {"took_over": held.took_over.__dict__ if held.took_over else None},
            )
            runner = _DeployRunner(ctx, request, facts, params, resume, release_source(request))
            return runner.run(plan, log_path)


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
    }


def _take_over(  # noqa: PLR0917 - private, one call site
    unfinished: RunState,
    request: DeployRequest,
    target: Target,
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
    from dhash_rollout.rollback import recover_interrupted

    recover_interrupted(unfinished, env, target, journal, request.base, say)
    return None


class _DeployRunner:
    def __init__(  # noqa: PLR0917 - private, one call site
        self,
        ctx: RunContext,
        request: DeployRequest,
        facts: DeployFacts,
        params: dict[str, Any],
        resume: RunState | None,
        source: ReleaseSource | None,
    ) -> None:
        self.ctx = ctx
        self.request = request
        self.facts = facts
        self.params = params
        self.resume = resume
        self.source = source
        if source is None and facts.source != INSTALLED:
            self.source = ReleaseSource("dir", str(request.base.resolve()))
        self.version: str = facts.version
        self.release: Release | None = ctx.target.release(self.version)

    def run(self, plan: Plan, log_path: Path) -> DeployResult:
        handlers = {
            "lock": lambda _s, d: d.update(holder="this run"),
            "preflight": self._preflight,
            "notify_start": self._notify_start,
            "backup": self._backup,
            "install": self._install,
            "migrate": self._migrate,
            "activate": self._activate,
            "health": self._health,
            "smoke": self._smoke,
            "monitor": self._monitor,
            "notify_result": self._notify_result,
        }
        steps = tuple(s for s in plan.steps if s.phase != "lock")
        body = replace(plan, steps=steps)
        try:
            run_steps(self.ctx, body, handlers)
        except DhashError as exc:
            failed_phase = self.ctx.journal.run(self.ctx.run_id)
            phase = failed_phase.interrupted_phase if failed_phase else None
            try:
                undo = compensate_deploy(
                    self.ctx, self.params, self.ctx.say, self.ctx.journal.run(self.ctx.run_id)
                )
            except DhashError as undo_error:
                undo = {"summary": f"UNDO FAILED: {undo_error.message}"}
            message = f"deploy of {self.version} failed: {exc.message}"
            self.ctx.finish(False, {"error": exc.message, "undo": undo})
            notify(
                self.ctx,
                "failure",
                f"{message}; {undo.get('summary', '')}",
                severity="ERROR",
                version=self.version,
                initiator=self.params.get("initiator"),
                phase=phase or "deploy",
            )
            return DeployResult(
                self.ctx.run_id,
                self.ctx.env.name,
                self.version,
                False,
                plan,
                log_path,
                self.facts.resumed_from,
                message,
                self.ctx.results,
            )
        self.ctx.finish(True, {"version": self.version})
        return DeployResult(
            self.ctx.run_id,
            self.ctx.env.name,
            self.version,
            True,
            plan,
            log_path,
            self.facts.resumed_from,
            None,
            self.ctx.results,
        )

    # --- phases -------------------------------------------------------------------------------
    def _preflight(self, _step: Step, detail: dict[str, Any]) -> None:
        from dhash_rollout.checks.preflight import run_preflight

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
        policy = str(self.ctx.env.extra.get("preflight", preflight_default(self.ctx.env.name)))
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
        from dhash_rollout.backup import create_backup

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
        self._need_release()
        result = self.ctx.target.activate(self.version, progress=lambda m: self.ctx.say(f"    {m}"))
        detail.update(
            instance=result.instance,
            previous=result.previous,
            changed=result.changed,
            steered=result.steered,
        )

    def _health(self, _step: Step, detail: dict[str, Any]) -> None:
        answers = check_health(self.ctx.env.url)
        detail["health"] = answers.get("health")

    def _smoke(self, _step: Step, detail: dict[str, Any]) -> None:
        from dhash_rollout.checks.smoke import run_smoke

        report = run_smoke(
            self.ctx.env,
            timeout=self.request.smoke_timeout,
            post_rollback=False,
            log_path=self.request.base / "postdeploy-smoketests.log",
        )
        detail.update(checks=len(report.results), log=str(report.log_path))
        if not report.ok:
            raise CheckFailed(f"smoke tests failed: {report.summary()}")

    def _monitor(self, _step: Step, detail: dict[str, Any]) -> None:
        hook = monitor_hook()
        if hook is None:
            raise CheckFailed("the monitor is not available")
        verdict = hook(
            self.ctx.env, deploy_id=self.ctx.run_id, version=self.version, log_dir=self.ctx.log_dir
        )
        detail["verdict"] = str(getattr(verdict, "summary", lambda: verdict)())
        if not getattr(verdict, "ok", False):
            raise CheckFailed(f"quality gates failed: {detail['verdict']}")

    def _notify_result(self, _step: Step, detail: dict[str, Any]) -> None:
        detail.update(
            notify(
                self.ctx,
                "success",
                f"Deployed {self.version} to {self.ctx.env.name}",
                version=self.version,
                initiator=self.params.get("initiator"),
                phase="complete",
            )
        )


def compensate_deploy(
    ctx: RunContext,
    params: dict[str, Any],
    say: Callable[[str], None],
    run: RunState | None,
) -> dict[str, Any]:
    """Take the environment back to what it was before the deploy (``params`` from its header).

    Only what the run touched is undone (the journal says whether ``activate`` and ``migrate``
    started). The serving release goes back first (zero-downtime switch), then the schema goes
    back down with the new release's migrations, the only ones that know its revisions.
    """
    target, env = ctx.target, ctx.env
    version = str(params.get("version"))
    from_version = params.get("from_version")
    from_revision = params.get("from_revision")
    touched_serving = run is not None and run.status_of("activate") is not None
    touched_schema = run is not None and run.status_of("migrate") is not None
    steps: list[str] = []
    with ctx.phase(Step("undo", "put the environment back as it was before the deploy")) as d:
        if touched_serving:
            serving = {p.release for p in target.status().serving}
            current = target.current()
            if from_version and (
                serving != {from_version} or current is None or current.version != from_version
            ):
                say(f"    switching back to {from_version}")
                target.activate(str(from_version), progress=lambda m: say(f"    {m}"))
                steps.append(f"switched back to {from_version}")
            elif not from_version and (serving or current is not None):
                target.deactivate()
                steps.append("stopped the new release and unset current (there was none before)")
        new_release = target.release(version)
        revision_now = database_revision(env.database_url)
        if touched_schema and new_release is not None and from_revision != revision_now:
            if from_revision:
                say(f"    downgrading the schema {revision_now} -> {from_revision}")
                migrate_with(new_release, env, ctx.base, str(from_revision))
                steps.append(f"schema {revision_now} -> {from_revision}")
            else:
                steps.append(f"schema left at {revision_now} (the database was new)")
        d.update(steps=steps)
    return {"steps": steps, "summary": "; ".join(steps) or "nothing had changed"}

"""Rollback: the app back to the previous (or named) release, the schema back down when the
migrations allow it, and the data restored from a backup when they do not (or when the database
is damaged, or a backup is named), keeping every row written since that backup.

Runs under the same per-environment lock as deploys and is journaled the same way; a rollback
killed half-way resumes from its journal (the exported rows survive in ``<root>/rollback/``).
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dhash_rollout.backup import (
    latest_verified_backup,
    list_backups,
    restore_backup,
    verify_backup,
)
from dhash_rollout.backup.archive import open_archive
from dhash_rollout.backup.catalog import FAILED
from dhash_rollout.backup.putback import put_back
from dhash_rollout.carryover import export_rows, reapply_rows
from dhash_rollout.checks.smoke import smoke_phase
from dhash_rollout.environments import Environment, load_environment
from dhash_rollout.releases import Release, normalize_version
from dhash_rollout.rollback.decision import (
    BackupCandidate,
    DeployFootprint,
    RollbackFacts,
    SchemaReach,
    TargetFacts,
    choose_target,
    pick_backup,
    plan_rollback,
    restore_reason,
    rollback_headline,
)
from dhash_rollout.rollback.fleet import FleetHostSteps
from dhash_rollout.rollback.fleet_plan import (
    FleetRestorePlan,
    host_records,
    hosts_back,
    hosts_going_back,
    plan_fleet_restore,
    plan_serve_again,
    touched_hosts,
    with_fleet_steps,
)
from dhash_rollout.runs.context import RunContext, deploy_run_context, run_steps
from dhash_rollout.runs.health import health_phase
from dhash_rollout.runs.interrupt import (
    RunInterrupted,
    interruptible,
    report_interrupted,
    stopped_in,
)
from dhash_rollout.runs.journal import Journal, RunState, new_run_id
from dhash_rollout.runs.locking import hold_lock
from dhash_rollout.runs.notices import notify
from dhash_rollout.runs.paths import lock_path
from dhash_rollout.runs.plan import Phase, Plan, Step, render_plan
from dhash_rollout.runs.recovery import TRIGGERS, RollbackOutcome, Trigger, open_canary
from dhash_rollout.runs.schema import (
    database_readable,
    database_revision,
    downgrade_reversible,
    migrate_with,
    release_head,
    release_revisions,
)
from dhash_rollout.settings import ToolkitSettings
from dhash_rollout.targets import Activation, DeployTarget, get_target
from dhash_rollout.targets.fleet.target import FleetTarget
from dhash_service.errors import CheckFailed, ConfigError, DhashError, IntegrityError, NotFound

Say = Callable[[str], None]
__all__ = ["TRIGGERS", "RollbackRequest", "RollbackResult", "execute", "rollback"]


class NothingToRollBack(CheckFailed):
    """The rollback would change nothing: refused before any journal entry or notice."""


@dataclass(frozen=True)
class RollbackRequest:
    env: str
    reason: str
    backup: str | None = None
    to_release: str | None = None
    trigger: str = "manual"
    initiator: str = field(default_factory=getpass.getuser)
    base: Path = field(default_factory=Path.cwd)
    dry_run: bool = False
    smoke_timeout: float = 120.0
    log_path: Path | None = None  # default: logs/rollback_<env>_<ts>.log
    settings: ToolkitSettings = field(default_factory=ToolkitSettings.load)
    fault_point: str | None = None  # test hook: the restore's pause point (docs/backups.md)


@dataclass(frozen=True)
class RollbackResult:
    run_id: str | None
    env: str
    ok: bool
    plan: Plan
    log_path: Path | None
    error: str | None = None
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    interrupted: bool = False  # stopped by SIGTERM/SIGINT: the run stays open (exit 130)
    exit_code: int = 1  # of the error that failed it (an integrity failure is 4, as elsewhere)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "env": self.env,
            "ok": self.ok,
            "exit_code": 0 if self.ok else self.exit_code,
            "interrupted": self.interrupted,
            "error": self.error,
            "log": str(self.log_path) if self.log_path else None,
            "plan": self.plan.to_dict(),
            "phases": self.phases,
            "not_carried": self.phases.get(Phase.REAPPLY_WRITES, {}).get("not_carried", {}),
        }


def _made_version(run: RunState) -> str | None:
    """The release a run put in service: a deploy's, or a promoted canary's (its switch is the
    deploy's; started from ``--source``, its version is the install's)."""
    if run.kind == "deploy":
        version = run.params.get("version")
        return str(version) if version else None
    if run.kind == "canary" and run.status_of(Phase.ACTIVATE) == "done":
        version = run.params.get("version") or run.detail_of(Phase.INSTALL).get("version")
        return normalize_version(str(version)) if version else None
    return None


def _deploy_that_made(journal: Journal, version: str) -> RunState | None:
    """The latest deploy run (or promoted canary) that put ``version`` in service in place of
    another release (finished or not); a re-deploy of the serving version does not count."""
    found = None
    for run in journal.runs():
        made_it = _made_version(run) == version
        replaced = run.params.get("from_version") != version
        if made_it and replaced and run.outcome != "failed":
            found = run
    return found


def _bound_backup(run: RunState | None) -> str | None:
    if run is None:
        return None
    path = run.detail_of(Phase.BACKUP).get("path")
    return str(path) if path else None


def _resolve_backup(text: str, base: Path) -> Path:
    path = (base / text).resolve()
    if not path.is_file():
        raise NotFound(f"backup {text} does not exist (the backups: dhash backup list)")
    return path


@dataclass
class _Choice:
    current: Release | None  # the release holding the newest migrations (current, or the
    # interrupted deploy's): schema downgrades use its code
    target: Release | None
    backup: Path | None
    facts: RollbackFacts
    fleet: FleetRestorePlan | None = None  # a restore on a fleet: every host's part
    served: tuple[str, ...] = ()  # releases known to have served (a fleet's switches back)

    def plan(self) -> Plan:
        plan = plan_rollback(self.facts)
        return plan if self.fleet is None else with_fleet_steps(plan, self.fleet)


def _fleet_restore(
    target: DeployTarget,
    facts: RollbackFacts,
    deploy: RunState | None,
    *,
    touched: frozenset[str] | None = None,
    resumed: RunState | None = None,
    served: tuple[str, ...] = (),
) -> FleetRestorePlan | None:
    """On a fleet whose rollback restores data: which hosts stop, and how each comes back
    (the pure :func:`plan_fleet_restore` over what the hosts serve and what the deploy being
    rolled back touched, from its journal; a resumed run keeps its own record of both)."""
    if not isinstance(target, FleetTarget) or facts.target_version is None:
        return None
    if restore_reason(facts) is None:
        return None
    read = FleetHostSteps(target, lambda *_a: None, lambda _m: None).facts(None)
    if touched is None:
        fleet_deploy = deploy is not None and deploy.params.get("target") == "fleet"
        states = (
            host_records((p, s.detail) for p, s in deploy.phases.items())
            if deploy is not None and fleet_deploy
            else None
        )
        serving = {h.name: h.serving for h in read}
        touched = touched_hosts(states, serving, facts.target_version)
    back: frozenset[str] = frozenset()
    if resumed is not None:
        back = hosts_back(host_records((p, s.detail) for p, s in resumed.phases.items()))
    hosts = [replace(h, touched=h.name in touched) for h in read]
    return plan_fleet_restore(hosts, facts.target_version, back, served)


def _footprint(run: RunState | None) -> DeployFootprint | None:
    if run is None:
        return None
    bound = _bound_backup(run)
    version, was = _made_version(run) or run.params.get("version"), run.params.get("from_version")
    return DeployFootprint(
        version=str(version) if version else None,
        from_version=str(was) if was else None,
        backup=bound if bound and Path(bound).is_file() else None,
    )


def _gather_target_facts(  # noqa: PLR0917 - private, one call site
    request: RollbackRequest,
    env: Environment,
    target: DeployTarget,
    journal: Journal,
    backup_dir: Path,
    unfinished: RunState | None,
) -> TargetFacts:
    current = target.current()
    installed = frozenset(r.version for r in target.releases())
    to_release = normalize_version(request.to_release) if request.to_release else None
    if to_release is not None and to_release not in installed:
        raise NotFound(
            f"release {request.to_release} is not installed in {env.root} "
            f"(installed: {', '.join(sorted(installed)) or 'none'}; "
            f"see dhash release list --env {env.name})"
        )
    interrupted = unfinished if unfinished is not None and unfinished.kind == "deploy" else None
    made = _deploy_that_made(journal, current.version) if current and not interrupted else None
    undone = _footprint(interrupted or made)
    bound = undone.backup if undone else None  # verifying the others is only done when needed
    latest = None if request.backup or bound else latest_verified_backup(backup_dir, env.name)
    return TargetFacts(
        current_version=current.version if current else None,
        installed=installed,
        to_release=to_release,
        backup_named=str(_resolve_backup(request.backup, request.base)) if request.backup else None,
        interrupted=undone if interrupted else None,
        made_current=undone if made else None,
        database_ok=database_readable(env.database_url),
        latest_backup=str(latest.path) if latest else None,
    )


def _choose(  # noqa: PLR0917 - private, one call site
    request: RollbackRequest,
    env: Environment,
    target: DeployTarget,
    journal: Journal,
    backup_dir: Path,
    unfinished: RunState | None,
) -> _Choice:
    """Gather the facts, let the pure decision choose, then read the schema facts of that
    choice for the plan."""
    gathered = _gather_target_facts(request, env, target, journal, backup_dir, unfinished)
    choice = choose_target(gathered)
    wanted = target.release(choice.target_version) if choice.target_version else None
    newest = target.release(choice.newest_version) if choice.newest_version else None
    current_revision = database_revision(env.database_url)
    target_revision = None
    reversible = True
    if wanted is not None:
        target_revision = release_head(wanted)
        assert newest is not None
        reversible = downgrade_reversible(newest, current_revision, target_revision)
    current = gathered.current_version
    serving = {p.release for p in target.status().serving}
    facts = RollbackFacts(
        env=env.name,
        url=env.url,
        current_version=current,
        target_version=choice.target_version,
        current_revision=current_revision,
        target_revision=target_revision,
        downgrade_reversible=reversible,
        database_ok=gathered.database_ok,
        backup=choice.backup,
        backup_requested=request.backup is not None,
        channels=env.channels,
        reason=request.reason,
        trigger=request.trigger,
        others_serving=bool(serving - {current}),
        newest_version=choice.newest_version,
    )
    if restore_reason(facts) is not None and wanted is not None:
        facts = _fit_backup(facts, env, backup_dir, wanted, newest)
    backup = Path(facts.backup) if facts.backup else None
    deploy = unfinished if unfinished is not None and unfinished.kind == "deploy" else None
    served = _known_served(facts, named=request.to_release is not None)
    fleet = _fleet_restore(target, facts, deploy or journal.last_run("deploy"), served=served)
    return _Choice(newest, wanted, backup, facts, fleet, served)


def _known_served(facts: RollbackFacts, *, named: bool) -> tuple[str, ...]:
    """The releases this rollback knows served: the current one, and the target unless it
    was named (the undone deploy's previous release, or the current one again)."""
    known = [facts.current_version] + ([] if named else [facts.target_version])
    return tuple(v for v in known if v is not None)


def _candidate(path: str) -> BackupCandidate:
    """A backup and the schema revision its manifest names (cheap: the whole file is verified
    only for the one chosen)."""
    try:
        opened = open_archive(Path(path))
    except IntegrityError:
        return BackupCandidate(path, None, FAILED)
    with opened.zf:
        return BackupCandidate(path, opened.manifest.schema_revision)


def _fit_backup(
    facts: RollbackFacts,
    env: Environment,
    backup_dir: Path,
    wanted: Release,
    newest: Release | None,
) -> RollbackFacts:
    """Read where the migrations can take each backup's schema and let the pure
    :func:`pick_backup` choose one that fits the target release, before any outage."""
    candidates = tuple(
        BackupCandidate(str(info.path), info.schema_revision, info.state)
        for info in list_backups(backup_dir, env.name)
        if info.state != FAILED
    )
    preferred = _candidate(facts.backup) if facts.backup else None
    known = frozenset(release_revisions(wanted))
    seen = {c.revision for c in (*candidates, preferred) if c is not None and c.revision}
    downgradable = frozenset(
        revision
        for revision in seen - known
        if newest is not None and downgrade_reversible(newest, revision, facts.target_revision)
    )
    reach = SchemaReach(facts.target_revision, known, downgradable)
    pick = pick_backup(preferred, candidates, reach, named=facts.backup_requested)
    return replace(
        facts,
        backup=pick.backup if pick.refusal is None else facts.backup,
        backup_refusal=pick.refusal,
        backup_note=pick.note,
    )


def _nothing_to_do(plan: Plan, facts: RollbackFacts) -> str | None:
    """Why this rollback would change nothing (and must fail), or None when it acts."""
    current = facts.current_version
    if current is None and facts.target_version is None:
        return f"nothing to roll back to: no release is deployed to {facts.env}"
    if any(plan.step(p).run for p in (Phase.RESTORE, Phase.ACTIVATE, Phase.DOWNGRADE)):
        return None
    if current is None:
        return f"nothing to roll back to: no release is deployed to {facts.env}"
    if facts.target_version == current:
        return f"nothing to roll back to: {current} already serves {facts.env}"
    if facts.target_version is None:
        return (
            f"nothing to roll back to: no release was deployed to {facts.env} before {current} "
            "(name an installed one with --to-release, or a backup with --backup)"
        )
    return f"nothing to roll back to: {current} already serves with the schema it needs"


def _check_backup(path: Path, env: Environment, say: Say) -> None:
    """The backup to restore verifies and is this environment's, checked while the service
    still serves: a bad file must not cost an outage."""
    say(f"verifying {path.name} before anything changes")
    others = f"nothing was changed; the backups of {env.name}: dhash backup list --env {env.name}"
    try:
        info = verify_backup(path)
    except IntegrityError as err:
        raise IntegrityError(f"{err.message} ({others})") from None
    if info.env != env.name:
        raise ConfigError(f"{path} is a backup of {info.env!r}, not {env.name!r} ({others})")


def _validate(request: RollbackRequest) -> None:
    if not request.reason.strip():
        raise ConfigError("--reason is required and must not be empty")
    if request.trigger not in TRIGGERS:
        raise ConfigError(f"--trigger must be one of {', '.join(TRIGGERS)}")
    if request.backup and request.to_release:
        raise ConfigError("give --backup or --to-release, not both")


def rollback(request: RollbackRequest, say: Say | None = None) -> RollbackResult:
    """Roll the environment back; ``Locked`` (exit 3) when a deploy or rollback holds it."""
    _validate(request)
    progress = say or (lambda _m: None)
    env = load_environment(request.env, request.base)
    target = get_target(env)
    dirs = request.settings.work_dirs(request.base)
    journal = Journal.for_root(env.root)
    if request.dry_run:
        last = journal.last_run()
        unfinished = last if last and not last.finished else None
        choice = _choose(request, env, target, journal, dirs[0], unfinished)
        plan = choice.plan()
        empty = _nothing_to_do(plan, choice.facts)
        refusal = choice.facts.backup_refusal if plan.step(Phase.RESTORE).run else None
        refusal = refusal or (choice.fleet.refusal if choice.fleet else None)
        if empty is not None:  # the real run is refused before it starts: nothing would run
            plan = plan.refused("nothing to roll back to")
        elif refusal is not None:
            empty = refusal
            plan = plan.refused("no backup fits the target's schema")
        progress(render_plan(plan).rstrip())
        return RollbackResult(None, env.name, empty is None, plan, None, empty)
    with hold_lock(lock_path(env), "rollback") as held:
        last = journal.last_run()
        unfinished = last if last and not last.finished else None
        if unfinished is not None and unfinished.kind == "canary":
            raise CheckFailed(open_canary(unfinished, env.name))
        resume = unfinished if unfinished and unfinished.kind == "rollback" else None
        run_id = resume.deploy_id if resume else new_run_id("rollback")
        with deploy_run_context(
            env, target, journal, run_id, base=request.base, dirs=dirs, say=progress, lock=held,
            log_path=request.log_path, kind="rollback",
        ) as ctx:  # fmt: skip
            return _execute(ctx, request, unfinished, resume, ctx.log_path)


def execute(ctx: RunContext, *, trigger: Trigger, reason: str) -> RollbackOutcome:
    """Roll back from inside the run ``ctx`` (a deploy whose monitor failed), under the lock it
    holds: a rollback run of its own in the same journal and log, naming ``ctx`` its parent."""
    if ctx.lock is None:
        raise ConfigError("a rollback inside a run needs the environment's lock held by that run")
    with hold_lock(lock_path(ctx.env), "rollback", within=ctx.lock):
        request = RollbackRequest(
            env=ctx.env.name,
            reason=reason,
            trigger=trigger,
            initiator=f"{trigger} ({ctx.run_id})",
            base=ctx.base,
            settings=ToolkitSettings(backup_dir=ctx.backup_dir, log_dir=ctx.log_dir),
        )
        _validate(request)
        child = ctx.child("rollback", new_run_id("rollback"))
        parent = ctx.journal.run(ctx.run_id)
        try:
            result = _execute(child, request, parent, None, None)
        except NothingToRollBack as nothing:
            return RollbackOutcome(None, True, None, f"nothing had changed ({nothing.message})")
        except DhashError as exc:  # refused before it began (a backup that does not verify)
            return RollbackOutcome(None, False, exc.message, f"ROLLBACK REFUSED: {exc.message}")
    summary = f"rolled back to {result.plan.version} ({result.run_id})"
    if not result.ok:
        summary = f"ROLLBACK FAILED: {result.error} ({result.run_id})"
    return RollbackOutcome(result.run_id, result.ok, result.error, summary)


def _execute(
    ctx: RunContext,
    request: RollbackRequest,
    unfinished: RunState | None,
    resume: RunState | None,
    log_path: Path | None,
) -> RollbackResult:
    """Choose, plan and run the rollback of ``ctx`` (the environment's lock is held)."""
    env, target, journal, progress = ctx.env, ctx.target, ctx.journal, ctx.say
    if resume is not None:
        choice = _resume_choice(resume, env, target)
    else:
        choice = _choose(request, env, target, journal, ctx.backup_dir, unfinished)
    plan = choice.plan()
    if resume is None:  # refused before any journal entry or notice
        empty = _nothing_to_do(plan, choice.facts)
        if empty is not None:
            raise NothingToRollBack(empty)
        if plan.step(Phase.RESTORE).run and choice.facts.backup_refusal is not None:
            raise CheckFailed(
                f"{choice.facts.backup_refusal}; nothing was changed "
                f"(the backups of {env.name}: dhash backup list --env {env.name})"
            )
        if choice.fleet is not None and choice.fleet.refusal is not None:
            raise CheckFailed(f"{choice.fleet.refusal}; nothing was changed")
        if plan.step(Phase.RESTORE).run and choice.backup is not None:
            _check_backup(choice.backup, env, progress)
    undone = unfinished is not None and unfinished.kind == "deploy"
    if undone and unfinished is not None and unfinished.deploy_id != ctx.parent:
        ctx.supersede(unfinished.deploy_id)  # (a parent deploy closes its own run)
    if resume is None:
        ctx.start(_params(request, choice))
    else:
        _close_parent(ctx, resume)
    progress(f"rollback {env.name} -> {choice.facts.target_version} [{ctx.run_id}]")
    for warning in plan.warnings:
        progress(f"  warning: {warning}")
    return _RollbackRunner(ctx, request, choice, resume).run(plan, log_path)


def _close_parent(ctx: RunContext, resumed: RunState) -> None:
    """An automatic rollback killed mid-way left its deploy open too: resuming the rollback
    closes that deploy, so the journal holds no half-run deploy that looks resumable."""
    parent = resumed.params.get("parent")
    state = ctx.journal.run(str(parent)) if parent else None
    if state is not None and not state.finished:
        ctx.supersede(state.deploy_id)


def _params(request: RollbackRequest, choice: _Choice) -> dict[str, Any]:
    f = choice.facts
    return {
        "env": f.env,
        "reason": request.reason,
        "trigger": request.trigger,
        "initiator": request.initiator,
        "from_version": f.current_version,
        "to_version": f.target_version,
        "from_revision": f.current_revision,
        "to_revision": f.target_revision,
        "downgrade_reversible": f.downgrade_reversible,
        "database_ok": f.database_ok,
        "backup": f.backup,
        "backup_requested": f.backup_requested,
        "others_serving": f.others_serving,
        "newest_version": f.newest_version,
        **({"fleet_touched": list(choice.fleet.touched)} if choice.fleet else {}),
        **({"fleet_served": list(choice.served)} if choice.served else {}),
    }


def _resume_choice(run: RunState, env: Environment, target: DeployTarget) -> _Choice:
    """The interrupted rollback's own decisions, from its journal header."""
    p = run.params
    newest = p.get("newest_version") or p.get("from_version")
    current = target.release(str(newest)) if newest else None
    wanted = target.release(str(p["to_version"])) if p.get("to_version") else None
    backup = Path(str(p["backup"])) if p.get("backup") else None
    facts = RollbackFacts(
        env=env.name,
        url=env.url,
        current_version=p.get("from_version"),
        target_version=p.get("to_version"),
        current_revision=p.get("from_revision"),
        target_revision=p.get("to_revision"),
        downgrade_reversible=bool(p.get("downgrade_reversible", True)),
        database_ok=bool(p.get("database_ok", True)),
        backup=str(backup) if backup else None,
        backup_requested=bool(p.get("backup_requested")),
        channels=env.channels,
        reason=str(p.get("reason", "")),
        trigger=str(p.get("trigger", "manual")),
        others_serving=bool(p.get("others_serving")),
        newest_version=p.get("newest_version"),
    )
    touched = frozenset(p["fleet_touched"]) if "fleet_touched" in p else None
    served = tuple(str(v) for v in p.get("fleet_served", ()))
    fleet = _fleet_restore(target, facts, None, touched=touched, resumed=run, served=served)
    return _Choice(current, wanted, backup, facts, fleet, served)


SERVED_SNAPSHOT = "served_snapshot"  # the restore phase's record of the database that served
_DATA_PHASES = (Phase.EXPORT_WRITES, Phase.RESTORE, Phase.REAPPLY_WRITES)


def _data_final(run: RunState) -> bool:
    """The run's rows are back on the restored database: its re-apply is done, or its activate
    began (only after that; a resumed run journals its re-apply as skipped)."""
    return (
        run.status_of(Phase.REAPPLY_WRITES) == "done" or run.status_of(Phase.ACTIVATE) is not None
    )


def _resumed_plan(plan: Plan, resumed: RunState) -> Plan:
    """What a resumed rollback does again: not the start notice it sent; and not the restore
    once its re-applied rows are in (the database is final, and on a fleet some hosts may
    already serve on it: restoring again would lose their writes)."""
    final = _data_final(resumed)
    steps = tuple(
        Step(s.phase, s.action, False, "already done by the interrupted run")
        if s.run
        and (
            (s.phase == Phase.NOTIFY_START and resumed.status_of(s.phase) == "done")
            or (final and s.phase in _DATA_PHASES)
        )
        else s
        for s in plan.steps
    )
    return replace(plan, steps=steps)


def _served_snapshot(run: RunState) -> str | None:
    """Where this rollback's first swap kept the database that served: journaled before the
    swap (``served_snapshot``), or, in a journal written before that record existed, the
    snapshot in the restore phase's result."""
    detail = run.detail_of(Phase.RESTORE)
    where = detail.get(SERVED_SNAPSHOT) or (detail.get("result") or {}).get("snapshot")
    return str(where) if where else None


class _RollbackRunner:
    def __init__(
        self,
        ctx: RunContext,
        request: RollbackRequest,
        choice: _Choice,
        resume: RunState | None,
    ) -> None:
        self.ctx = ctx
        self.request = request
        self.choice = choice
        self.resume = resume
        self.facts = choice.facts
        self.rows_file = ctx.env.root / "rollback" / ctx.run_id / "live-rows.jsonl"
        self.swapped = False  # this run replaced the live database with the backup
        self.snapshot: str | None = None  # where that swap kept the database it replaced
        self.hosts: FleetHostSteps | None = None  # a fleet's restore: every host's steps
        if choice.fleet is not None and isinstance(ctx.target, FleetTarget):
            self.hosts = FleetHostSteps(ctx.target, ctx.record, ctx.say)

    def run(self, plan: Plan, log_path: Path | None) -> RollbackResult:
        handlers = {
            Phase.LOCK: self._lock,
            Phase.NOTIFY_START: self._notify_start,
            Phase.EXPORT_WRITES: self._export,
            Phase.RESTORE: self._restore,
            Phase.REAPPLY_WRITES: self._reapply,
            Phase.ACTIVATE: self._activate,
            Phase.DOWNGRADE: self._downgrade,
            Phase.HEALTH: self._health,
            Phase.SMOKE: self._smoke,
            Phase.NOTIFY_RESULT: self._notify_result,
        }
        if self.resume is not None:
            plan = _resumed_plan(plan, self.resume)
            if plan.step(Phase.RESTORE).reason == "already done by the interrupted run":
                self.ctx.results[Phase.REAPPLY_WRITES] = self.resume.detail_of(
                    Phase.REAPPLY_WRITES
                )  # what the notice and --json report as kept
        try:
            with interruptible(self.ctx):
                run_steps(self.ctx, plan, handlers)
        except (RunInterrupted, DhashError) as caught:
            if isinstance(caught, DhashError) and not self.ctx.stop.is_set():
                return self._failed(plan, log_path, caught)
            stop = caught if isinstance(caught, RunInterrupted) else stopped_in(self.ctx, caught)
            message = report_interrupted(
                self.ctx,
                stop,
                f"`dhash rollback --env {self.ctx.env.name} --reason ...` resumes it",
            )
            return RollbackResult(
                self.ctx.run_id, self.ctx.env.name, False, plan, log_path, message,
                self.ctx.results, interrupted=True,
            )  # fmt: skip
        self.ctx.finish(True, {"version": self.facts.target_version})
        return RollbackResult(
            self.ctx.run_id, self.ctx.env.name, True, plan, log_path, None, self.ctx.results
        )

    def _failed(self, plan: Plan, log_path: Path | None, exc: DhashError) -> RollbackResult:
        restarted = self._serve_again_if_untouched()
        recovered: dict[str, Any] = {}
        if restarted is None:
            recovered = self._put_back_if_restored()
            restarted = recovered.get("service")
        self.ctx.finish(False, {"error": exc.message, "service": restarted, **recovered})
        where = recovered.get("preserved")
        self._notice(
            "failure",
            f"Rollback of {self.ctx.env.name} failed: {exc.message}"
            + (f"; {restarted}" if restarted else "")
            + (f"; kept: {', '.join(where)}" if where else ""),
            "CRITICAL",
            "rollback_failed",  # its own key: the start notice must not absorb it
        )
        return RollbackResult(
            self.ctx.run_id, self.ctx.env.name, False, plan, log_path, exc.message,
            self.ctx.results, exit_code=exc.exit_code,
        )  # fmt: skip

    def _serve_again_if_untouched(self) -> str | None:
        """After a failure between stopping the service and replacing the database, the live
        database is as the service left it: serve it again rather than stay down."""
        run = self.ctx.journal.run(self.ctx.run_id)
        stopped = run is not None and run.status_of(Phase.EXPORT_WRITES) is not None
        replaced = self.swapped or (
            self.resume is not None and self.resume.status_of(Phase.RESTORE) is not None
        )
        if not stopped or replaced or (run is not None and run.status_of(Phase.REAPPLY_WRITES)):
            return None
        try:
            if self.hosts is not None:
                self._hosts_again()
            else:
                self.ctx.target.start(progress=lambda m: self.ctx.say(f"    {m}"))
        except DhashError as exc:
            self.ctx.say(f"    the service could not be started again: {exc.message}")
            return f"still stopped: {exc.message}"
        self.ctx.say("    the service serves again on its unchanged database")
        return "serving again on the unchanged database"

    def _put_back_if_restored(self) -> dict[str, Any]:
        """After a failure between swapping the backup in and switching releases, the live
        database is the half-fitted restore: put the database that served back, serve it again
        with the release that served, and say where everything was kept."""
        run = self.ctx.journal.run(self.ctx.run_id)
        if run is None or run.status_of(Phase.ACTIVATE) is not None:
            return {}
        # The database as it served is the snapshot of this rollback's *first* swap, journaled
        # before that swap: a resumed run restores again, and its own snapshot is then the
        # interrupted run's restore (the backup's rows, without the writes since).
        earlier = _served_snapshot(self.resume) if self.resume is not None else None
        snapshot = earlier or _served_snapshot(run) or self.snapshot
        swapped = self.swapped or run.status_of(Phase.RESTORE) is not None
        if not swapped or not snapshot:
            return {}
        say = self.ctx.say
        preserved = [str(self.rows_file)] if self.rows_file.is_file() else []
        try:
            back = put_back(self.ctx.env.database_url, str(snapshot))
        except DhashError as exc:
            say(f"    the database that served could not be put back: {exc.message}")
            return {
                "service": f"still stopped: {exc.message}",
                "preserved": [*preserved, str(snapshot)],
            }
        preserved.append(back.failed_restore)
        say(f"    put the database that served back in place ({back.database})")
        for path in preserved:
            say(f"    kept: {path}")
        service = self._serve_previous()
        return {"put_back": back.to_dict(), "service": service, "preserved": preserved}

    def _serve_previous(self) -> str:
        """Start the release that served before the rollback, on its own database again."""
        was = self.facts.current_version
        say = self.ctx.say
        try:
            if self.hosts is not None:
                self._hosts_again()
            elif was is not None and self.ctx.target.release(was) is not None:
                self._switch(was)
            else:
                self.ctx.target.start(progress=lambda m: say(f"    {m}"))
        except DhashError as exc:
            say(f"    the service could not be started again: {exc.message}")
            return f"database put back, service still stopped: {exc.message}"
        say(f"    {was or 'the current release'} serves again on the database it had")
        return f"the database that served was put back and {was or 'the release'} serves again"

    def _hosts_again(self) -> None:
        """Every host of the fleet back on the release it serves (its ``current`` did not
        move: only the stop touched it), each checked and put back; raises naming the ones
        that could not be."""
        assert self.hosts is not None
        serving = self.hosts.serving()
        failed = self.hosts.bring_back(plan_serve_again(serving))
        failed.update({n: "its release cannot be read" for n, v in serving.items() if v is None})
        if failed:
            raise CheckFailed("; ".join(f"{h}: {why}" for h, why in failed.items()))

    def _notice(
        self, kind: str, text: str, severity: str, phase: str, resolves: str | None = None
    ) -> dict[str, Any]:
        return notify(
            self.ctx,
            kind,
            text,
            severity=severity,
            version=self.facts.target_version,
            initiator=self.request.initiator,
            reason=self.facts.reason,
            trigger=self.facts.trigger,
            phase=phase,
            resolves=resolves,
        )

    def _lock(self, _step: Step, detail: dict[str, Any]) -> None:
        lock = self.ctx.lock
        detail.update(
            holder="the parent run" if lock is not None and self.ctx.parent else "this run"
        )

    def _notify_start(self, _step: Step, detail: dict[str, Any]) -> None:
        detail.update(self._notice("rollback", rollback_headline(self.facts), "ERROR", "rollback"))

    def _export(self, _step: Step, detail: dict[str, Any]) -> None:
        if self.facts.backup is None:
            raise CheckFailed("a data restore is needed but no backup is available")
        exported_before = (
            self.resume is not None and self.resume.status_of(Phase.EXPORT_WRITES) == "done"
        )
        if self.hosts is not None:  # every time: a resumed run makes sure again (idempotent)
            assert self.choice.fleet is not None
            self.ctx.say("    draining and stopping every host: no write may land between "
                         "export and restore")  # fmt: skip
            self.hosts.stop_all(self.choice.fleet.stop)
            detail["hosts"] = list(self.choice.fleet.stop)
        if exported_before and self.rows_file.is_file():
            detail.update(path=str(self.rows_file), reused=True)
            return
        if self.hosts is None:
            self.ctx.say("    stopping the service: no write may land between export and restore")
            self.ctx.target.stop()
        exported = export_rows(self.ctx.env.database_url, self.rows_file)
        detail.update(exported.to_dict())

    def _restore(self, _step: Step, detail: dict[str, Any]) -> None:
        assert self.facts.backup is not None
        run = self.ctx.journal.run(self.ctx.run_id)
        first = run is None or _served_snapshot(run) is None

        def keep(where: str) -> None:
            # Before the swap, fsynced: a run killed between the swap and this phase's done
            # record still tells its resumed run which database served (only the first swap's).
            if first:
                self.ctx.record(Phase.RESTORE, "started", {SERVED_SNAPSHOT: where})

        result = restore_backup(
            Path(self.facts.backup),
            self.ctx.env,
            fault_point=self.request.fault_point,
            on_snapshot=keep,
        )
        self.swapped = True
        self.snapshot = result.snapshot
        detail["backup"] = self.facts.backup
        restored = database_revision(self.ctx.env.database_url)
        detail["restored_revision"] = restored
        summary = getattr(result, "to_dict", None)
        if callable(summary):
            detail["result"] = summary()
        detail["revision"] = self._fit_schema(restored)

    def _fit_schema(self, restored: str | None) -> str | None:
        """Bring a restored schema to the target release's head, so the re-applied rows and the
        release both fit: up with the target's migrations when it knows the restored revision,
        else down with the newer release's."""
        wanted = self.facts.target_revision
        target, newest = self.choice.target, self.choice.current
        if wanted is None or restored == wanted or target is None:
            return restored
        url, base = self.ctx.env.database_url, self.ctx.base
        if restored is None or restored in release_revisions(target):
            self.ctx.say(f"    upgrading the restored schema {restored} -> {wanted}")
            migrate_with(target, self.ctx.env, base, None)
        elif newest is not None:
            self.ctx.say(f"    downgrading the restored schema {restored} -> {wanted}")
            migrate_with(newest, self.ctx.env, base, wanted)
        return database_revision(url)

    def _reapply(self, _step: Step, detail: dict[str, Any]) -> None:
        applied = reapply_rows(self.ctx.env.database_url, self.rows_file)
        detail.update(applied.to_dict())
        self.ctx.say(
            f"    re-applied {applied.total_inserted} rows written and "
            f"{applied.total_updated} rows updated since the backup"
        )
        for table, what in applied.not_carried().items():
            self.ctx.say(f"    WARNING: NOT carried over in {table}: {what}")
        if applied.not_carried():
            self.ctx.say(f"    the live rows as they were: {self.rows_file}")

    def _activate(self, _step: Step, detail: dict[str, Any]) -> None:
        version = self.facts.target_version
        if version is None:
            raise CheckFailed("no release to activate")
        if self.hosts is not None:
            self._activate_hosts(detail)
            return
        result = self._switch(version)
        detail.update(instance=result.instance, previous=result.previous, steered=result.steered)

    def _switch(self, version: str) -> Activation:
        """The target on ``version``; on a fleet, the hosts going back to a release they
        served wait the longer readiness of a switch back (``hosts_going_back``)."""
        say = self.ctx.say
        target = self.ctx.target
        if isinstance(target, FleetTarget):
            read = FleetHostSteps(target, lambda *_a: None, lambda _m: None).facts(None)
            back = hosts_going_back(read, version, self.choice.served)
            return target.activate(version, progress=lambda m: say(f"    {m}"), back=back)
        return target.activate(version, progress=lambda m: say(f"    {m}"))

    def _activate_hosts(self, detail: dict[str, Any]) -> None:
        """The fleet's hosts back on the restored database, batch by batch (the plan's)."""
        assert self.hosts is not None and self.choice.fleet is not None
        plan = self.choice.fleet
        failed = self.hosts.bring_back(plan)
        steps = plan.steps
        detail.update(
            instance=",".join(s.host for s in steps if s.host not in failed),
            previous=self.facts.current_version,
            hosts={s.host: {"action": s.action, "version": s.version} for s in steps},
            already_back=list(plan.back),
        )
        if failed:
            named = "; ".join(f"{h}: {why}" for h, why in failed.items())
            raise CheckFailed(f"not every host is back on the restored database ({named})")

    def _downgrade(self, _step: Step, detail: dict[str, Any]) -> None:
        newest = self.choice.current
        if newest is None:
            raise CheckFailed("the release holding the newer migrations is not installed")
        revision = self.facts.target_revision
        migrate_with(newest, self.ctx.env, self.ctx.base, revision or "base")
        detail.update(revision=database_revision(self.ctx.env.database_url))

    def _health(self, _step: Step, detail: dict[str, Any]) -> None:
        health_phase(self.ctx.env, detail)

    def _smoke(self, _step: Step, detail: dict[str, Any]) -> None:
        smoke_phase(
            self.ctx.env,
            detail,
            timeout=self.request.smoke_timeout,
            post_rollback=True,
            log_path=self.ctx.base / "postrollback-smoketests.log",
        )

    def _notify_result(self, _step: Step, detail: dict[str, Any]) -> None:
        reapplied = self.ctx.results.get(Phase.REAPPLY_WRITES, {})
        carried = reapplied.get("total_inserted")
        extra = ""
        if carried is not None:
            updated = sum(reapplied.get("updated", {}).values())
            extra = f"; {carried} rows written and {updated} updated since the backup kept"
        lost = reapplied.get("not_carried") or {}
        severity = "WARN"
        if lost:
            what = "; ".join(f"{table}: {why}" for table, why in lost.items())
            extra += f"; NOT carried over: {what} (the live rows: {self.rows_file})"
            severity = "ERROR"
        text = f"Rolled {self.ctx.env.name} back to {self.facts.target_version}{extra}"
        # "rolled_back", not "complete": that one reads "Deployment succeeded". It resolves the
        # alerts of the deploy that put the release rolled back from in service (issue 18).
        undone = (
            _deploy_that_made(self.ctx.journal, self.facts.current_version)
            if self.facts.current_version
            else None
        )
        resolves = undone.deploy_id if undone is not None else None
        detail.update(self._notice("rollback", text, severity, "rolled_back", resolves))

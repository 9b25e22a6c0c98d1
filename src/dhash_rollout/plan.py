"""Pure planning of deploys and rollbacks: facts in, ordered steps out, no I/O.

The executor (``deploy.py``, ``rollback.py``) gathers facts, asks this module what to do, and
runs exactly the planned steps; ``--dry-run`` prints the same plan and runs none. Keeping the
decisions here makes them testable as plain data (pyinfra's plan/execute split).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

# Installing a release is inert (nothing serving changes), and the new release carries the new
# migrations, so it is installed before the schema is migrated with its code.
DEPLOY_PHASES: tuple[str, ...] = (
    "lock",
    "preflight",
    "notify_start",
    "backup",
    "install",
    "migrate",
    "activate",
    "health",
    "smoke",
    "monitor",
    "notify_result",
)
ROLLBACK_PHASES: tuple[str, ...] = (
    "lock",
    "notify_start",
    "export_writes",
    "restore",
    "reapply_writes",
    "activate",
    "downgrade",
    "health",
    "smoke",
    "notify_result",
)
# Phases whose effect outlives the process: a resumed run does not repeat them once done.
ONCE_PER_RUN: frozenset[str] = frozenset({"notify_start", "backup"})


@dataclass(frozen=True)
class Step:
    phase: str
    action: str  # what the step does (or would do), in words
    run: bool = True
    reason: str | None = None  # why it is skipped, or a note on why it runs
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "action": self.action,
            "run": self.run,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Plan:
    kind: Literal["deploy", "rollback"]
    env: str
    version: str | None
    steps: tuple[Step, ...]
    warnings: tuple[str, ...] = ()

    def step(self, phase: str) -> Step:
        return next(s for s in self.steps if s.phase == phase)

    @property
    def phases_to_run(self) -> tuple[str, ...]:
        return tuple(s.phase for s in self.steps if s.run)

    def refused(self, why: str) -> Plan:
        """The plan of a run refused before it starts: every step is skipped, for that reason."""
        steps = tuple(replace(s, run=False, reason=f"refused: {why}") for s in self.steps)
        return replace(self, steps=steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "env": self.env,
            "version": self.version,
            "steps": [s.to_dict() for s in self.steps],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class BackupFact:
    path: str
    age_seconds: float


@dataclass(frozen=True)
class DeployFacts:
    env: str
    url: str
    root: str
    version: str
    source: str  # "installed release" or where it is built from
    release_installed: bool
    current_version: str | None
    schema_revision: str | None
    latest_backup: BackupFact | None  # youngest verified backup of this environment
    backup_max_age_seconds: float
    channels: tuple[str, ...]
    deps: str = "full"
    monitor_available: bool = False
    no_monitor: bool = False
    smoke_timeout: float = 600.0
    resumed_from: str | None = None  # the interrupted run this one continues
    resumed_done: frozenset[str] = frozenset()
    lock_holder: str | None = None
    database_exists: bool = True
    auth_state: Literal["configured", "generate", "missing"] = "configured"  # API token


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def plan_deploy(facts: DeployFacts) -> Plan:
    """Every deploy phase in order, each with what it will do or why it is skipped."""
    v = facts.version
    channels = ", ".join(facts.channels) or "none"
    steps: list[Step] = []

    def add(
        phase: str, action: str, run: bool = True, reason: str | None = None, **kw: Any
    ) -> None:
        if run and facts.resumed_from and phase in ONCE_PER_RUN and phase in facts.resumed_done:
            run, reason = False, f"already done by the interrupted run {facts.resumed_from}"
        steps.append(Step(phase, action, run, reason, dict(kw)))

    lock_note = f"held now by {facts.lock_holder}" if facts.lock_holder else None
    add("lock", f"hold the {facts.env} deploy lock ({facts.root}/deploy.lock)", True, lock_note)
    warnings: list[str] = []
    if facts.auth_state == "missing":
        warnings.append(
            f"{facts.env} names no API token (api_token in dhash-environments.toml): "
            "the preflight phase will stop the deploy"
        )
    add("preflight", f"run the preflight checklist for {facts.env}")
    add("notify_start", f"notify deploy start of {v} to {channels}")
    backup = facts.latest_backup
    if not facts.database_exists:
        add("backup", "create and verify a backup", False, "there is no database yet")
    elif backup is not None and backup.age_seconds < facts.backup_max_age_seconds:
        add(
            "backup",
            "create and verify a backup",
            False,
            f"verified backup {backup.path} is {_minutes(backup.age_seconds)} old "
            f"(younger than {_minutes(facts.backup_max_age_seconds)})",
            path=backup.path,
        )
    else:
        why = (
            f"latest verified backup is {_minutes(backup.age_seconds)} old"
            if backup
            else "no verified backup of this environment"
        )
        add("backup", f"create and verify a backup of {facts.env}", True, why)
    if facts.release_installed:
        add("install", f"install release {v}", False, f"release {v} is already installed")
    else:
        add(
            "install",
            f"build and install release {v} from {facts.source} ({facts.deps} dependencies)",
        )
    add(
        "migrate",
        f"upgrade the schema to the head of release {v} with its own migrations "
        f"(now at {facts.schema_revision or 'an empty database'})",
    )
    if facts.auth_state == "generate":
        warnings.append(f"{facts.env} names no API token: activate generates one for it")
    if facts.current_version == v:
        add("activate", f"{v} is already current: make sure its process serves", True)
    else:
        was = facts.current_version or "nothing"
        add(
            "activate",
            f"start {v} beside {was} on {facts.url}, wait for its /ready, "
            f"then stop {was} gracefully",
        )
    add("health", f"check {facts.url}/health and /ready answer OK")
    add("smoke", f"run the smoke tests against {facts.url} (timeout {facts.smoke_timeout:.0f} s)")
    if facts.no_monitor:
        add("monitor", "watch the quality gates", False, "--no-monitor")
    elif not facts.monitor_available:
        add("monitor", "watch the quality gates", False, "the monitor is not available yet")
    else:
        add("monitor", "watch the quality gates for the monitoring window")
    add("notify_result", f"notify the deploy result to {channels}")
    return Plan("deploy", facts.env, v, tuple(steps), tuple(warnings))


@dataclass(frozen=True)
class RollbackFacts:
    env: str
    url: str
    current_version: str | None
    target_version: str | None  # the previous release, or the one named with --to-release
    current_revision: str | None  # the database's schema revision now
    target_revision: str | None  # the head revision of the target release's migrations
    downgrade_reversible: bool  # every revision between the two has a working downgrade
    database_ok: bool
    backup: str | None  # the backup named with --backup or bound to the deploy being undone
    backup_requested: bool  # --backup was given: restore it even if the schema could go down
    channels: tuple[str, ...] = ()
    reason: str = ""
    trigger: str = "manual"
    others_serving: bool = False  # a release besides the current one serves (a cut-off switch)
    newest_version: str | None = None  # whose migrations take the schema down (default: current)


def _restore_reason(facts: RollbackFacts, schema_differs: bool) -> str | None:
    """Why the data must be restored from a backup, or None when switching back suffices."""
    if facts.backup_requested:
        return "a backup was named"
    if not facts.database_ok:
        return "the database is damaged"
    if schema_differs and not facts.downgrade_reversible:
        return (
            f"the migrations from {facts.target_revision} to {facts.current_revision} "
            "cannot be downgraded"
        )
    return None


def plan_rollback(facts: RollbackFacts) -> Plan:
    """App switch, schema downgrade or data restore (keeping later writes), then smoke."""
    channels = ", ".join(facts.channels) or "none"
    target = facts.target_version
    steps: list[Step] = [
        Step("lock", f"hold the {facts.env} deploy lock"),
        Step(
            "notify_start",
            f"notify rollback start to {channels} (reason: {facts.reason}, {facts.trigger})",
        ),
    ]
    schema_differs = (
        facts.target_revision is not None and facts.current_revision != facts.target_revision
    )
    restore_why = _restore_reason(facts, schema_differs)
    restore = restore_why is not None
    warnings: list[str] = []
    if restore and facts.backup is None:
        warnings.append(f"a data restore is needed ({restore_why}) but no backup is available")
    if restore:
        steps += [
            Step(
                "export_writes",
                "stop the service, then export the rows written since the backup",
                reason=restore_why,
            ),
            Step("restore", f"restore {facts.backup}", reason=restore_why),
            Step(
                "reapply_writes",
                "re-apply the exported rows on top of the restored database",
            ),
        ]
    else:
        for phase, action in (
            ("export_writes", "export the rows written since the backup"),
            ("restore", "restore a backup"),
            ("reapply_writes", "re-apply the exported rows"),
        ):
            steps.append(Step(phase, action, False, "no data restore is needed"))
    if target is None:
        warnings.append("there is no previous release to roll back to")
        steps.append(Step("activate", "switch to the previous release", False, "none exists"))
    elif target == facts.current_version and facts.others_serving:
        steps.append(Step("activate", f"make {target} the only serving release"))
    elif target == facts.current_version and not restore:
        steps.append(Step("activate", f"{target} is already current", False, "nothing to switch"))
    elif restore and target == facts.current_version:  # the restore stopped it
        steps.append(Step("activate", f"start {target} again on the restored database"))
    else:
        was = facts.current_version or "nothing"
        steps.append(Step("activate", f"start {target} beside {was}, wait for /ready, stop {was}"))
    if restore:
        steps.append(
            Step("downgrade", "downgrade the schema", False, "the restored backup sets the schema")
        )
    elif schema_differs:
        steps.append(
            Step(
                "downgrade",
                f"downgrade the schema from {facts.current_revision} to {facts.target_revision} "
                f"with the migrations of {facts.newest_version or facts.current_version}",
            )
        )
    else:
        steps.append(Step("downgrade", "downgrade the schema", False, "the schema already matches"))
    steps += [
        Step("health", f"check {facts.url}/health and /ready answer OK"),
        Step("smoke", f"run the post-rollback smoke tests against {facts.url}"),
        Step("notify_result", f"notify the rollback result to {channels}"),
    ]
    return Plan("rollback", facts.env, target, tuple(steps), tuple(warnings))


def render_plan(plan: Plan) -> str:
    """The plan as the text ``--dry-run`` prints and writes to ``deploy-dryrun.log``."""
    width = max(len(p) for p in (*DEPLOY_PHASES, *ROLLBACK_PHASES))
    target = plan.version or "(no target)"
    lines = [f"{plan.kind} {plan.env} {target}: plan (nothing is executed)"]
    for number, step in enumerate(plan.steps, 1):
        verb = "RUN " if step.run else "SKIP"
        line = f"{number:>3}. {step.phase:<{width}}  {verb}  {step.action}"
        if step.reason:
            line += f"  [{step.reason}]"
        lines.append(line)
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines) + "\n"

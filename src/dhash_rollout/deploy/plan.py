"""The deploy's plan, a pure function of the facts the executor gathered (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dhash_rollout.runs.plan import Phase, Plan, Step

# Installing a release is inert (nothing serving changes), and the new release carries the new
# migrations, so it is installed before the schema is migrated with its code.
DEPLOY_PHASES: tuple[Phase, ...] = (
    Phase.LOCK,
    Phase.PREFLIGHT,
    Phase.NOTIFY_START,
    Phase.BACKUP,
    Phase.INSTALL,
    Phase.MIGRATE,
    Phase.ACTIVATE,
    Phase.HEALTH,
    Phase.SMOKE,
    Phase.MONITOR,
    Phase.NOTIFY_RESULT,
)
# Phases whose effect outlives the process: a resumed run does not repeat them once done.
ONCE_PER_RUN: frozenset[Phase] = frozenset({Phase.NOTIFY_START, Phase.BACKUP})


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
        phase: Phase, action: str, run: bool = True, reason: str | None = None, **kw: Any
    ) -> None:
        if run and facts.resumed_from and phase in ONCE_PER_RUN and phase in facts.resumed_done:
            run, reason = False, f"already done by the interrupted run {facts.resumed_from}"
        steps.append(Step(phase, action, run, reason, dict(kw)))

    lock_note = f"held now by {facts.lock_holder}" if facts.lock_holder else None
    add(Phase.LOCK, f"hold the {facts.env} deploy lock ({facts.root}/deploy.lock)", True, lock_note)
    warnings: list[str] = []
    if facts.auth_state == "missing":
        warnings.append(
            f"{facts.env} names no API token (api_token in dhash-environments.toml): "
            "the preflight phase will stop the deploy"
        )
    add(Phase.PREFLIGHT, f"run the preflight checklist for {facts.env}")
    add(Phase.NOTIFY_START, f"notify deploy start of {v} to {channels}")
    backup = facts.latest_backup
    if not facts.database_exists:
        add(Phase.BACKUP, "create and verify a backup", False, "there is no database yet")
    elif backup is not None and backup.age_seconds < facts.backup_max_age_seconds:
        add(
            Phase.BACKUP,
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
        add(Phase.BACKUP, f"create and verify a backup of {facts.env}", True, why)
    if facts.release_installed:
        add(Phase.INSTALL, f"install release {v}", False, f"release {v} is already installed")
    else:
        add(
            Phase.INSTALL,
            f"build and install release {v} from {facts.source} ({facts.deps} dependencies)",
        )
    add(
        Phase.MIGRATE,
        f"upgrade the schema to the head of release {v} with its own migrations "
        f"(now at {facts.schema_revision or 'an empty database'})",
    )
    if facts.auth_state == "generate":
        warnings.append(f"{facts.env} names no API token: activate generates one for it")
    if facts.current_version == v:
        add(Phase.ACTIVATE, f"{v} is already current: make sure its process serves", True)
    else:
        was = facts.current_version or "nothing"
        add(
            Phase.ACTIVATE,
            f"start {v} beside {was} on {facts.url}, wait for its /ready, "
            f"then stop {was} gracefully",
        )
    add(Phase.HEALTH, f"check {facts.url}/health and /ready answer OK")
    add(
        Phase.SMOKE,
        f"run the smoke tests against {facts.url} (timeout {facts.smoke_timeout:.0f} s)",
    )
    if facts.no_monitor:
        add(Phase.MONITOR, "watch the quality gates", False, "--no-monitor")
    elif not facts.monitor_available:
        add(Phase.MONITOR, "watch the quality gates", False, "the monitor is not available yet")
    else:
        add(Phase.MONITOR, "watch the quality gates for the monitoring window")
    add(Phase.NOTIFY_RESULT, f"notify the deploy result to {channels}")
    return Plan("deploy", facts.env, v, tuple(steps), tuple(warnings))

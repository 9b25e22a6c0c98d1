"""The rollback decision, pure functions of gathered facts (no I/O), in two steps:

1. :func:`choose_target`: which release to go back to, which backup to restore if one is
   needed, and whose migrations take the schema down;
2. :func:`plan_rollback`: once the schema facts of that choice are read, app switch, schema
   downgrade or data restore (keeping later writes), then health and smoke.

When a restore is needed, :func:`pick_backup` checks *before any outage* that the restored
schema can be brought to the target release's (issue 12: a backup newer than an irreversible
migration was swapped in, its downgrade failed, and the service stayed down on it).
"""

from __future__ import annotations

from dataclasses import dataclass

from dhash_rollout.runs.plan import Phase, Plan, Step

ROLLBACK_PHASES: tuple[Phase, ...] = (
    Phase.LOCK,
    Phase.NOTIFY_START,
    Phase.EXPORT_WRITES,
    Phase.RESTORE,
    Phase.REAPPLY_WRITES,
    Phase.ACTIVATE,
    Phase.DOWNGRADE,
    Phase.HEALTH,
    Phase.SMOKE,
    Phase.NOTIFY_RESULT,
)


@dataclass(frozen=True)
class DeployFootprint:
    """A deploy run as the decision needs it (from its journal header and phases)."""

    version: str | None
    from_version: str | None
    backup: str | None  # the backup its backup phase made, if that file is still there


@dataclass(frozen=True)
class TargetFacts:
    current_version: str | None
    installed: frozenset[str]
    to_release: str | None = None  # --to-release, already checked to be installed
    backup_named: str | None = None  # --backup, already resolved to a file
    interrupted: DeployFootprint | None = None  # an unfinished deploy this rollback undoes
    made_current: DeployFootprint | None = None  # the deploy that put the current release in
    database_ok: bool = True
    latest_backup: str | None = None  # the youngest verified backup of the environment


@dataclass(frozen=True)
class TargetChoice:
    target_version: str | None
    backup: str | None
    newest_version: str | None  # the release holding the newest migrations


@dataclass(frozen=True)
class BackupCandidate:
    """A backup as the choice needs it: where it is and the schema revision it holds."""

    path: str
    revision: str | None
    state: str = "verified"  # verified | unverified (as last recorded; failed ones never come)


@dataclass(frozen=True)
class SchemaReach:
    """Where the releases' migrations can take a restored schema, for the target's head."""

    target_revision: str | None
    target_known: frozenset[str]  # revisions the target release's migrations upgrade from
    downgradable: frozenset[str]  # revisions the newest release can take down to the target


@dataclass(frozen=True)
class BackupPick:
    backup: str | None
    refusal: str | None = None  # why no backup can be restored (the rollback is refused)
    note: str | None = None  # why another backup than the preferred one


def backup_misfit(revision: str | None, reach: SchemaReach) -> str | None:
    """Why a backup holding ``revision`` cannot serve the target release, or None when its
    schema is the target's, the target's migrations upgrade it, or a reversible downgrade
    takes it there."""
    wanted = reach.target_revision
    if wanted is None or revision is None or revision == wanted:
        return None
    if revision in reach.target_known or revision in reach.downgradable:
        return None
    return (
        f"it holds schema {revision}, newer than the target's {wanted}, and the migrations "
        f"between them cannot be downgraded"
    )


def pick_backup(
    preferred: BackupCandidate | None,
    candidates: tuple[BackupCandidate, ...],
    reach: SchemaReach,
    *,
    named: bool,
) -> BackupPick:
    """The backup to restore: the preferred one when its schema fits the target; else (unless
    the operator named it) the newest candidate that fits; else a refusal saying why.

    ``candidates``: the environment's backups, newest first."""
    fitting = [c for c in candidates if backup_misfit(c.revision, reach) is None]
    if preferred is None:
        if not candidates:
            return BackupPick(None)
        if not fitting:
            return BackupPick(None, _no_fit(candidates, reach))
        return BackupPick(fitting[0].path)
    why = backup_misfit(preferred.revision, reach)
    if why is None:
        return BackupPick(preferred.path)
    others = [c for c in fitting if c.path != preferred.path]
    if named:
        hint = f"; {others[0].path} fits (--backup it)" if others else ""
        return BackupPick(None, f"the backup {preferred.path} cannot be restored: {why}{hint}")
    if not others:
        return BackupPick(None, _no_fit(candidates or (preferred,), reach))
    return BackupPick(others[0].path, note=f"not {preferred.path}: {why}")


def _no_fit(candidates: tuple[BackupCandidate, ...], reach: SchemaReach) -> str:
    held = ", ".join(sorted({c.revision or "empty" for c in candidates}))
    return (
        f"no backup can be restored under the target's schema {reach.target_revision}: "
        f"the backups hold {held}, and the migrations from there cannot be downgraded"
    )


def choose_target(facts: TargetFacts) -> TargetChoice:
    """The release to go back to: the named one, else the one the interrupted deploy replaced,
    else the one the deploy of the current release replaced; with no such release but a named
    backup or a damaged database, the current one (its data is restored under it). The
    backup: the named one, else the undone deploy's own, else the youngest verified one."""

    def installed(version: str | None) -> str | None:
        return version if version is not None and version in facts.installed else None

    current = facts.current_version
    undone = facts.interrupted or (facts.made_current if current is not None else None)
    wanted: str | None = None
    if facts.to_release is not None:
        wanted = facts.to_release
    elif undone is not None:
        wanted = installed(undone.from_version)
    if wanted is None and (facts.backup_named or not facts.database_ok) and current is not None:
        wanted = current
    bound = undone.backup if undone is not None else None
    backup = facts.backup_named or bound or facts.latest_backup
    # An interrupted deploy may have migrated before it switched: its release holds the
    # newest migrations, whatever ``current`` says.
    interrupted = installed(facts.interrupted.version) if facts.interrupted else None
    return TargetChoice(wanted, backup, interrupted or current or wanted)


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
    backup_refusal: str | None = None  # pick_backup found no backup that fits (refused)
    backup_note: str | None = None  # pick_backup replaced the preferred backup, and why


def restore_reason(facts: RollbackFacts, schema_differs: bool | None = None) -> str | None:
    """Why the data must be restored from a backup, or None when switching back suffices."""
    if schema_differs is None:
        schema_differs = (
            facts.target_revision is not None and facts.current_revision != facts.target_revision
        )
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


def _restore_warning(facts: RollbackFacts, restore_why: str | None) -> str | None:
    if restore_why is None:
        return None
    if facts.backup_refusal is not None:
        return f"refused before any outage: {facts.backup_refusal}"
    if facts.backup is None:
        return f"a data restore is needed ({restore_why}) but no backup is available"
    return None


def plan_rollback(facts: RollbackFacts) -> Plan:
    """App switch, schema downgrade or data restore (keeping later writes), then smoke."""
    channels = ", ".join(facts.channels) or "none"
    target = facts.target_version
    steps: list[Step] = [
        Step(Phase.LOCK, f"hold the {facts.env} deploy lock"),
        Step(
            Phase.NOTIFY_START,
            f"notify rollback start to {channels} (reason: {facts.reason}, {facts.trigger})",
        ),
    ]
    schema_differs = (
        facts.target_revision is not None and facts.current_revision != facts.target_revision
    )
    restore_why = restore_reason(facts, schema_differs)
    restore = restore_why is not None
    warnings: list[str] = [w for w in (_restore_warning(facts, restore_why),) if w]
    if restore:
        steps += [
            Step(
                Phase.EXPORT_WRITES,
                "stop the service, then export the rows written since the backup",
                reason=restore_why,
            ),
            Step(
                Phase.RESTORE,
                f"restore {facts.backup}"
                + (f" ({facts.backup_note})" if facts.backup_note else ""),
                reason=restore_why,
            ),
            Step(
                Phase.REAPPLY_WRITES,
                "re-apply the exported rows on top of the restored database",
            ),
        ]
    else:
        for phase, action in (
            (Phase.EXPORT_WRITES, "export the rows written since the backup"),
            (Phase.RESTORE, "restore a backup"),
            (Phase.REAPPLY_WRITES, "re-apply the exported rows"),
        ):
            steps.append(Step(phase, action, False, "no data restore is needed"))
    if target is None:
        warnings.append("there is no previous release to roll back to")
        steps.append(Step(Phase.ACTIVATE, "switch to the previous release", False, "none exists"))
    elif target == facts.current_version and facts.others_serving:
        steps.append(Step(Phase.ACTIVATE, f"make {target} the only serving release"))
    elif target == facts.current_version and not restore:
        steps.append(
            Step(Phase.ACTIVATE, f"{target} is already current", False, "nothing to switch")
        )
    elif restore and target == facts.current_version:  # the restore stopped it
        steps.append(Step(Phase.ACTIVATE, f"start {target} again on the restored database"))
    else:
        was = facts.current_version or "nothing"
        steps.append(
            Step(Phase.ACTIVATE, f"start {target} beside {was}, wait for /ready, stop {was}")
        )
    if restore:
        steps.append(
            Step(
                Phase.DOWNGRADE,
                "downgrade the schema",
                False,
                "the restored backup sets the schema",
            )
        )
    elif schema_differs:
        steps.append(
            Step(
                Phase.DOWNGRADE,
                f"downgrade the schema from {facts.current_revision} to {facts.target_revision} "
                f"with the migrations of {facts.newest_version or facts.current_version}",
            )
        )
    else:
        steps.append(
            Step(Phase.DOWNGRADE, "downgrade the schema", False, "the schema already matches")
        )
    steps += [
        Step(Phase.HEALTH, f"check {facts.url}/health and /ready answer OK"),
        Step(Phase.SMOKE, f"run the post-rollback smoke tests against {facts.url}"),
        Step(Phase.NOTIFY_RESULT, f"notify the rollback result to {channels}"),
    ]
    return Plan("rollback", facts.env, target, tuple(steps), tuple(warnings))


def rollback_headline(facts: RollbackFacts) -> str:
    """The start notice's line. "from X to X" read as if nothing would happen (issue 12): when
    the release stays, say what the rollback does to it instead."""
    env, was, to = facts.env, facts.current_version, facts.target_version
    if to is None or was != to:
        return f"Rolling {env} back from {was or 'nothing'} to {to or 'nothing'}"
    if restore_reason(facts) is not None:
        return (
            f"Rolling {env} back: restoring its data from {facts.backup or 'a backup'} under {to}"
        )
    if facts.others_serving:
        return f"Rolling {env} back: stopping every release but {to}"
    return f"Rolling {env} back: taking the schema down to {facts.target_revision} under {to}"

"""What a deploy that stopped half-way left behind, and how to put it back.

Both the deploy (a phase failed) and the rollback (it supersedes an interrupted deploy) undo a
deploy here, so there is one undo and neither package calls the other. Only what the run
touched is undone: the journal says whether ``activate`` and ``migrate`` started.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from dhash_rollout.environments import Environment
from dhash_rollout.runs.context import RunContext, deploy_run_context
from dhash_rollout.runs.journal import Journal, RunState
from dhash_rollout.runs.plan import Phase, Step
from dhash_rollout.runs.schema import database_revision, migrate_with
from dhash_rollout.targets import DeployTarget
from dhash_service.errors import CheckFailed, ConfigError, DhashError

Say = Callable[[str], None]


@dataclass(frozen=True)
class Leftover:
    """A deploy's footprint, read from its journal (header parameters and phase states)."""

    version: str
    from_version: str | None
    from_revision: str | None
    touched_serving: bool
    touched_schema: bool

    @classmethod
    def of(cls, params: Mapping[str, Any], run: RunState | None) -> Leftover:
        def started(phase: Phase) -> bool:
            return run is not None and run.status_of(phase) is not None

        from_version, from_revision = params.get("from_version"), params.get("from_revision")
        return cls(
            version=str(params.get("version")),
            from_version=str(from_version) if from_version else None,
            from_revision=str(from_revision) if from_revision else None,
            touched_serving=started(Phase.ACTIVATE),
            touched_schema=started(Phase.MIGRATE),
        )


def undo_deploy(ctx: RunContext, left: Leftover) -> dict[str, Any]:
    """Take the environment back to what it was before the deploy.

    The serving release goes back first (zero-downtime switch), then the schema goes back down
    with the new release's migrations, the only ones that know its revisions.
    """
    target, env, say = ctx.target, ctx.env, ctx.say
    steps: list[str] = []
    with ctx.phase(Step(Phase.UNDO, "put the environment back as it was before the deploy")) as d:
        if left.touched_serving:
            serving = {p.release for p in target.status().serving}
            current = target.current()
            was = left.from_version
            if was and (serving != {was} or current is None or current.version != was):
                say(f"    switching back to {was}")
                target.activate(was, progress=lambda m: say(f"    {m}"))
                steps.append(f"switched back to {was}")
            elif not was and (serving or current is not None):
                target.deactivate()
                steps.append("stopped the new release and unset current (there was none before)")
        new_release = target.release(left.version)
        revision_now = database_revision(env.database_url)
        if left.touched_schema and new_release is not None and left.from_revision != revision_now:
            if left.from_revision:
                say(f"    downgrading the schema {revision_now} -> {left.from_revision}")
                migrate_with(new_release, env, ctx.base, left.from_revision)
                steps.append(f"schema {revision_now} -> {left.from_revision}")
            else:
                steps.append(f"schema left at {revision_now} (the database was new)")
        d.update(steps=steps)
    return {"steps": steps, "summary": "; ".join(steps) or "nothing had changed"}


def open_canary(run: RunState, env_name: str) -> str:
    """Why a deploy or rollback is refused while a canary run is open in the journal: its
    candidate still serves beside stable in the idle slot (interrupted, or held inconclusive)."""
    version = run.params.get("version", "?")
    return (
        f"the canary of {version} ({run.deploy_id}) is still open in {env_name}: "
        f"`dhash canary start --env {env_name} --version {version}` resumes it, "
        f"`dhash canary abort --env {env_name}` (or promote) ends it"
    )


def recover_interrupted(  # noqa: PLR0917 - the interrupted run and where it ran
    run: RunState,
    env: Environment,
    target: DeployTarget,
    journal: Journal,
    base: Path,
    say: Say,
    dirs: tuple[Path, Path],
) -> None:
    """Undo an interrupted deploy that will not be resumed, so the environment is fully old
    (``dirs``: the backups and logs directories)."""
    if run.kind == "canary":
        raise CheckFailed(open_canary(run, env.name))
    if run.kind != "deploy":
        raise ConfigError(
            f"the rollback {run.deploy_id} was interrupted: run `dhash rollback` again to finish it"
        )
    with deploy_run_context(
        env, target, journal, run.deploy_id, base=base, dirs=dirs, say=say
    ) as ctx:
        try:
            undo = undo_deploy(ctx, Leftover.of(run.params, run))
        except DhashError as exc:
            ctx.finish(False, {"error": f"interrupted; undo failed: {exc.message}"})
            raise
        ctx.finish(False, {"error": "interrupted and superseded", "undo": undo})


Trigger = Literal["manual", "automatic"]
TRIGGERS: tuple[Trigger, ...] = ("manual", "automatic")


@dataclass(frozen=True)
class RollbackOutcome:
    run_id: str | None  # None: nothing needed rolling back, or it was refused before it began
    ok: bool
    error: str | None = None
    summary: str = ""  # one line for the deploy's failure notice


class RunsRollback(Protocol):
    """The rollback as a deploy runs it under its own lock (``rollback.execute``), injected by
    the command layer so that the deploy package does not import the rollback package."""

    def __call__(self, ctx: RunContext, *, trigger: Trigger, reason: str) -> RollbackOutcome: ...

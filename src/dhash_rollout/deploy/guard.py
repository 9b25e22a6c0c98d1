"""Resume a deploy's guard: the phases after its switch, for ``dhash monitor`` started by hand.

A deploy whose controller died (or was stopped) after switching is still owed its guard while
its window is open. Re-running ``dhash deploy`` resumes the whole run; :func:`resume_guard`
resumes only what is left after the switch (health and smoke if they had not finished, then the
monitor over the same window, from its ledger, and the result notice) under the environment's
lock and the deploy's run id, with the deploy's own handling of the verdict: FAILED rolls back
once (``rollback.execute`` inside this lock, trigger=automatic, reason = the gate), a failed
rollback is CRITICAL, and the run is finished either way, so nothing loops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from dhash_rollout.deploy.plan import plan_deploy
from dhash_rollout.deploy.run import DeployRequest, DeployResult, _DeployRunner, gather_facts
from dhash_rollout.environments import load_environment
from dhash_rollout.runs.context import deploy_run_context
from dhash_rollout.runs.journal import Journal, RunState
from dhash_rollout.runs.locking import hold_lock
from dhash_rollout.runs.monitoring import DeployMonitor
from dhash_rollout.runs.paths import lock_path
from dhash_rollout.runs.plan import Phase
from dhash_rollout.runs.recovery import RunsRollback
from dhash_rollout.targets import get_target
from dhash_service.errors import CheckFailed

AFTER_SWITCH = (Phase.HEALTH, Phase.SMOKE, Phase.MONITOR, Phase.NOTIFY_RESULT)


def resume_guard(
    request: DeployRequest,
    run_id: str,
    say: Callable[[str], None] | None = None,
    *,
    monitor: DeployMonitor,
    rollback: RunsRollback,
) -> DeployResult:
    """Finish the unfinished deploy ``run_id`` from its switch on. ``Locked`` (exit 3) when a
    live process (the deploy itself) holds the environment; ``CheckFailed`` when the run is no
    longer waiting for its guard (it finished, or never switched)."""
    progress = say or (lambda _m: None)
    env = load_environment(request.env, request.base)
    target = get_target(env)
    dirs = request.settings.work_dirs(request.base)
    journal = Journal.for_root(env.root)
    with hold_lock(lock_path(env), "monitor") as held:
        run = journal.run(run_id)  # read under the lock: the deploy may have just finished
        if run is None or run.finished or run.status_of(Phase.ACTIVATE) != "done":
            raise CheckFailed(f"the deploy {run_id} is not waiting for its guard any more")
        version = str(run.params["version"])
        request = replace(request, version=version, source=None, no_monitor=False)
        with deploy_run_context(
            env, target, journal, run_id, base=request.base, dirs=dirs, say=progress, lock=held,
            log_path=request.log_path,
        ) as ctx:  # fmt: skip
            ctx.record(Phase.LOCK, "done", {"resumed_by": "dhash monitor", "holder": held.holder})
            facts = gather_facts(request, env, target, run, monitor_available=True)
            plan = plan_deploy(facts)
            todo = _left(run)
            plan = replace(plan, steps=tuple(s for s in plan.steps if s.phase in todo))
            progress(f"resuming the guard of {run_id} ({version}): {', '.join(todo)}")
            runner = _DeployRunner(ctx, request, facts, dict(run.params), None)
            runner.monitor, runner.rollback = monitor, rollback
            return runner.run(plan, ctx.log_path)


def _left(run: RunState) -> tuple[Phase, ...]:
    """The phases after the switch that did not finish (the monitor and the result always)."""
    return tuple(
        p
        for p in AFTER_SWITCH
        if p in (Phase.MONITOR, Phase.NOTIFY_RESULT) or run.status_of(p) != "done"
    )

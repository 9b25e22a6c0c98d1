"""The last release change of an environment, for ``release status`` and ``check daily``: a
deploy, or a canary that was promoted (its switch is the deploy's, and the deploy's monitor
watches its window), so a promotion after the last deploy is what ``last deploy:`` describes,
by the same rule (:func:`dhash_rollout.runs.verification.describe`). An aborted canary changed
nothing. Below the canary and the checks, since both read it.
"""

from __future__ import annotations

from dataclasses import replace

from dhash_rollout.environments import Environment
from dhash_rollout.runs.journal import Journal, RunState
from dhash_rollout.runs.plan import Phase
from dhash_rollout.runs.verification import Verification, describe, lock_held


def changed_release(run: RunState) -> bool:
    """A deploy, or a canary that reached its switch (promoted, or killed in it)."""
    if run.kind == "deploy":
        return True
    return run.kind == "canary" and run.status_of(Phase.ACTIVATE) is not None


def last_change(runs: list[RunState]) -> RunState | None:
    """The last run (in journal order) that changed the release."""
    return next((run for run in reversed(runs) if changed_release(run)), None)


def describe_change(run: RunState | None, *, monitor_alive: bool) -> Verification:
    """:func:`describe`, naming a promoted canary as such (``canary of 2.0.0, promoted``)."""
    if run is None or run.kind != "canary":
        return describe(run, monitor_alive=monitor_alive)
    version = run.params.get("version") or run.detail_of(Phase.INSTALL).get("version") or "?"
    named = replace(run, params={**run.params, "version": version})
    seen = describe(named, monitor_alive=monitor_alive)
    deploy_name = f"deploy of {version} ({run.deploy_id})"
    line = seen.line.replace(deploy_name, f"canary of {version}, promoted ({run.deploy_id})", 1)
    return Verification(seen.state, line)


def last_change_verification(env: Environment) -> Verification:
    """The environment's last deploy or promoted canary, as :func:`describe` sees it."""
    run = last_change(Journal.for_root(env.root).runs())
    alive = run is not None and not run.finished and lock_held(env)
    return describe_change(run, monitor_alive=alive)

"""Was the last deploy verified by its monitoring window? One line for ``release status`` and
``check daily``.

A deploy is *verified* only when its monitor watched the whole window and every gate passed.
A window cut short (the controller died and nobody resumed it before the window ended, or it
is still open with no live monitor holding the lock) is said to be so, never verified; so is a
deploy made with ``--no-monitor``. :func:`describe` is the pure rule over the journal's view of
the run; :func:`last_deploy_verification` reads the journal and asks the lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dhash_rollout.environments import Environment
from dhash_rollout.runs.journal import Journal, RunState
from dhash_rollout.runs.locking import lock_holder
from dhash_rollout.runs.monitoring import CUT_SHORT
from dhash_rollout.runs.paths import lock_path
from dhash_rollout.runs.plan import Phase

State = Literal[
    "verified", "inconclusive", "failed", "unmonitored", "watching", "interrupted", "none"
]
PROBLEMS: frozenset[State] = frozenset({"interrupted"})  # what `check daily` fails on


@dataclass(frozen=True)
class Verification:
    state: State
    line: str

    @property
    def verified(self) -> bool:
        return self.state == "verified"


def _verdict(detail: dict[str, Any]) -> tuple[str | None, str]:
    """The monitor's verdict and reason: the phase's own, else its last ``monitor.verdict``."""
    if detail.get("verdict"):
        return str(detail["verdict"]), str(detail.get("reason", ""))
    event = detail.get("monitor.verdict")
    if isinstance(event, dict) and event.get("verdict"):
        return str(event["verdict"]), str(event.get("reason", ""))
    return None, ""


def describe(run: RunState | None, *, monitor_alive: bool) -> Verification:
    """The rule, over the run as the journal folds it; ``monitor_alive``: a live process holds
    the environment's lock (a deploy in its window, or ``dhash monitor`` guarding it)."""
    if run is None:
        return Verification("none", "no deploy in the journal")
    name = f"deploy of {run.params.get('version', '?')} ({run.deploy_id})"
    status = run.status_of(Phase.MONITOR)
    detail = run.detail_of(Phase.MONITOR)
    verdict, reason = _verdict(detail)
    if status == "skipped":
        why = detail.get("reason") or "skipped"
        return Verification("unmonitored", f"{name}: not monitored ({why}) — not verified")
    if verdict == "inconclusive" and reason.startswith(CUT_SHORT):
        return Verification("interrupted", f"{name}: {reason}")
    if verdict == "passed":
        polls = detail.get("polls")
        return Verification("verified", f"{name}: verified, quality gates passed ({polls} polls)")
    if verdict == "failed":
        return Verification("failed", f"{name}: quality gates failed ({reason})")
    if verdict == "inconclusive":
        return Verification("inconclusive", f"{name}: monitoring inconclusive ({reason})")
    switched = run.status_of(Phase.ACTIVATE) == "done"
    if not run.finished and (status == "started" or switched):
        if monitor_alive:
            return Verification("watching", f"{name}: monitoring in progress")
        resume = f"dhash monitor --env {run.params.get('env', 'ENV')}"
        return Verification("interrupted", f"{name}: {CUT_SHORT} (resume: {resume})")
    if not run.finished:
        where = run.interrupted_phase or "a phase"
        alive = "in progress" if monitor_alive else f"interrupted in {where}"
        return Verification("none", f"{name}: {alive} — not verified")
    return Verification("none", f"{name}: {run.outcome or 'unfinished'} — not verified")


def lock_held(env: Environment) -> bool:
    """Whether a live run holds the environment's lock (a look: nothing is taken or written)."""
    return lock_holder(lock_path(env)) is not None


def last_deploy_verification(env: Environment) -> Verification:
    """The environment's last deploy, as :func:`describe` sees it."""
    journal = Journal.for_root(env.root)
    run = journal.last_run("deploy")
    alive = run is not None and not run.finished and lock_held(env)
    return describe(run, monitor_alive=alive)

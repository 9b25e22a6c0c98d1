"""Plans as data: the phases of a run, the ordered steps a planner returns, and their text.

The planners (:mod:`dhash_rollout.deploy.plan`, :mod:`dhash_rollout.rollback.decision`) are
pure: facts in, a :class:`Plan` out. The executor runs exactly the planned steps and
``--dry-run`` prints the same plan and runs none (pyinfra's plan/execute split). A phase is a
:class:`Phase` member in the plan, the executor's handler table and the journal alike, so a
typo is caught by the type checker instead of a ``KeyError`` mid-run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal


class Phase(StrEnum):
    """Every phase a deploy or a rollback journals (the values are the journal's names)."""

    LOCK = "lock"
    PREFLIGHT = "preflight"
    NOTIFY_START = "notify_start"
    BACKUP = "backup"
    INSTALL = "install"
    MIGRATE = "migrate"
    ACTIVATE = "activate"
    HEALTH = "health"
    SMOKE = "smoke"
    MONITOR = "monitor"
    NOTIFY_RESULT = "notify_result"
    EXPORT_WRITES = "export_writes"
    RESTORE = "restore"
    REAPPLY_WRITES = "reapply_writes"
    DOWNGRADE = "downgrade"
    UNDO = "undo"  # a failed deploy puts back what it changed
    AUTO_ROLLBACK = "auto_rollback"  # the deploy ran a rollback under its own lock
    WAVES = "waves"  # a fleet deploy: the hosts switched in waves (deploy/fleet_run.py)
    CONTRACT = "migrate_contract"  # a fleet deploy's contract migrations, after the last wave


@dataclass(frozen=True)
class Step:
    phase: Phase
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

    def step(self, phase: Phase) -> Step:
        return next(s for s in self.steps if s.phase == phase)

    @property
    def phases_to_run(self) -> tuple[Phase, ...]:
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


def render_plan(plan: Plan) -> str:
    """The plan as the text ``--dry-run`` prints and writes to ``deploy-dryrun.log``."""
    width = max(len(p) for p in Phase)
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

"""One deploy or rollback in flight: the journaled phase runner every journal write goes through."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dhash_rollout.environments import Environment
from dhash_rollout.runs.journal import RUN_PHASE, Journal, Status
from dhash_rollout.runs.locking import HeldLock
from dhash_rollout.runs.plan import Phase, Plan, Step
from dhash_rollout.runs.runlog import open_run_log
from dhash_rollout.targets import DeployTarget
from dhash_service.errors import DhashError

Progress = Callable[[str], None]
Handler = Callable[[Step, dict[str, Any]], None]


@dataclass
class RunContext:
    """One deploy or rollback in flight: where it journals, logs and reports progress."""

    kind: str
    env: Environment
    target: DeployTarget
    journal: Journal
    run_id: str
    base: Path
    log_dir: Path
    backup_dir: Path
    logger: Any
    say: Progress
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: HeldLock | None = None  # the environment's lock this run holds
    parent: str | None = None  # the run this one runs inside (an automatic rollback's deploy)
    stop: threading.Event = field(default_factory=threading.Event)  # SIGTERM/SIGINT asked
    stop_signal: str | None = None  # which signal asked it (runs/interrupt.py)
    log_path: Path | None = None  # the run's JSON-lines log (runs/runlog.py)

    def child(self, kind: str, run_id: str) -> RunContext:
        """A run inside this one (same lock, journal, log and stop flag), e.g. the automatic
        rollback of a deploy whose monitor failed."""
        return replace(self, kind=kind, run_id=run_id, results={}, parent=self.run_id)

    def record(self, phase: Phase | str, status: Status, detail: Mapping[str, Any]) -> None:
        """A journal entry of this run outside the phase runner (the lock it took)."""
        self.journal.append(self.run_id, phase, status, detail)

    def supersede(self, other: str) -> None:
        """Close an interrupted run that this one replaces, so it is not resumed."""
        self.journal.append(other, RUN_PHASE, "failed", {"error": f"superseded by {self.run_id}"})

    def start(self, params: Mapping[str, Any]) -> None:
        header = {"kind": self.kind, **params}
        if self.parent is not None:
            header["parent"] = self.parent
        self.journal.append(self.run_id, RUN_PHASE, "started", header)
        self.logger.info(f"{self.kind}_started", request_id=self.run_id, **params)

    def finish(self, ok: bool, detail: dict[str, Any]) -> None:
        status: Status = "done" if ok else "failed"
        self.journal.append(self.run_id, RUN_PHASE, status, detail)
        log = self.logger.info if ok else self.logger.error
        log(f"{self.kind}_{status}", request_id=self.run_id, **detail)

    def skip(self, step: Step) -> None:
        self.journal.append(self.run_id, step.phase, "skipped", {"reason": step.reason})
        self.logger.info("phase_skipped", request_id=self.run_id, phase=step.phase)
        self.say(f"  - {step.phase}: skipped ({step.reason})")

    @contextlib.contextmanager
    def phase(self, step: Step) -> Iterator[dict[str, Any]]:
        """Journal ``started`` before the body and ``done``/``failed`` after it."""
        self.journal.append(self.run_id, step.phase, "started", {"action": step.action})
        self.logger.info("phase_started", request_id=self.run_id, phase=step.phase)
        self.say(f"  > {step.phase}: {step.action}")
        detail: dict[str, Any] = {}
        began = time.monotonic()
        try:
            yield detail
        except DhashError as exc:
            detail.update(error=exc.message, seconds=round(time.monotonic() - began, 3))
            self.journal.append(self.run_id, step.phase, "failed", detail)
            self.logger.error("phase_failed", request_id=self.run_id, phase=step.phase, **detail)
            self.say(f"  x {step.phase}: {exc.message}")
            raise
        detail["seconds"] = round(time.monotonic() - began, 3)
        self.results[step.phase] = detail
        self.journal.append(self.run_id, step.phase, "done", detail)
        self.logger.info("phase_done", request_id=self.run_id, phase=step.phase, **detail)
        self.say(f"  ✓ {step.phase} ({detail['seconds']:.1f} s)")


@contextlib.contextmanager
def deploy_run_context(
    env: Environment,
    target: DeployTarget,
    journal: Journal,
    run_id: str,
    *,
    base: Path,
    dirs: tuple[Path, Path],
    say: Progress,
    lock: HeldLock | None = None,
    log_path: Path | None = None,
    kind: str = "deploy",
) -> Iterator[RunContext]:
    """A deploy's (or rollback's) run with its log open: the one opening every deploy path
    shares (the deploy, its resumed guard, the fleet's waves, the undo of an interrupted run),
    so they journal and log alike. ``dirs``: the backups and logs directories
    (``ToolkitSettings.work_dirs``); ``log_path``: an explicit log file (``--log-file``)."""
    backup_dir, log_dir = dirs
    path, handle, logger = open_run_log(log_dir, kind, env.name, log_path)
    with handle:
        yield RunContext(
            kind=kind, env=env, target=target, journal=journal, run_id=run_id, base=base,
            log_dir=log_dir, backup_dir=backup_dir, logger=logger, say=say, lock=lock,
            log_path=path,
        )  # fmt: skip


class RunInterrupted(BaseException):
    """The run stops on a signal (see ``runs/interrupt.py``). A ``BaseException``: no phase's
    error handling (which would undo or fail the run) may take it for a failure."""

    def __init__(self, signal_name: str, phase: str | None, *, at_once: bool) -> None:
        super().__init__(f"{signal_name} at {phase or 'the start'}")
        self.signal_name = signal_name
        self.phase = phase
        self.at_once = at_once


def run_steps(ctx: RunContext, plan: Plan, handlers: Mapping[Phase, Handler]) -> None:
    """Run the plan's steps in order; the first failure propagates (after being journaled).
    A stop asked by a signal ends the run at the next phase boundary (:class:`RunInterrupted`)."""
    for step in plan.steps:
        if ctx.stop.is_set():
            raise RunInterrupted(ctx.stop_signal or "a stop signal", step.phase, at_once=False)
        if not step.run:
            ctx.skip(step)
            continue
        with ctx.phase(step) as detail:
            handlers[step.phase](step, detail)

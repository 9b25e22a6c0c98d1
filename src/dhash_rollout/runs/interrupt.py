"""SIGTERM/SIGINT during a deploy or a rollback: never a silent exit (issue 12 item 8).

The first signal asks the run to stop at the next phase boundary: the phase in flight (a
migration in a child process, a switch, a restore's swap) finishes, since cutting it would leave
more to undo than stopping between phases. A second signal stops at once, like a kill, except
that the run still says where it stopped. Either way the run stays open in the journal (a re-run
resumes it), an ``interrupted`` record names the phase and the signal, and the operator is told,
on the console and the environment's channels, which command comes next.

The monitor phase has its own handling of the same stop flag (``runs/events.stop_on_signals``:
its window ends as INTERRUPTED), so the first signal reaches it unchanged.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from dhash_rollout.runs.context import RunContext, RunInterrupted
from dhash_rollout.runs.notices import notify
from dhash_service.errors import DhashError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_INTERRUPTED = 130  # the shell's 128 + SIGINT, for both signals
INTERRUPTED_RECORD = "interrupted"
__all__ = [
    "EXIT_INTERRUPTED",
    "RunInterrupted",
    "interruptible",
    "report_interrupted",
    "stopped_in",
]


def _write_stderr(text: str) -> None:
    """From a signal handler: a raw write (the buffered console may be mid-write)."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "replace"))


@contextlib.contextmanager
def interruptible(ctx: RunContext) -> Iterator[None]:
    """While inside, the first SIGTERM/SIGINT sets ``ctx.stop`` (the run stops at the next phase
    boundary: ``run_steps``), the second raises :class:`RunInterrupted` at once. Main
    thread only (elsewhere signals cannot be caught)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def asked(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if ctx.stop.is_set():
            raise RunInterrupted(name, _running_phase(ctx), at_once=True)
        ctx.stop.set()
        ctx.stop_signal = name
        _write_stderr(
            f"dhash: {name}: the {ctx.kind} stops after the phase in flight "
            f"(send {name} again to stop at once)\n"
        )

    previous = {sig: signal.signal(sig, asked) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stopped_in(ctx: RunContext, error: DhashError) -> RunInterrupted:
    """A phase that failed while a stop was asked failed *because* of it (the terminal's
    Ctrl-C reaches the phase's child processes too): an interruption of that phase."""
    phase = _running_phase(ctx) or _failed_phase(ctx)
    ctx.logger.info("phase_stopped_by_signal", request_id=ctx.run_id, error=error.message)
    return RunInterrupted(ctx.stop_signal or "a stop signal", phase, at_once=True)


def _failed_phase(ctx: RunContext) -> str | None:
    state = ctx.journal.run(ctx.run_id)
    if state is None:
        return None
    failed = [name for name, p in state.phases.items() if p.status == "failed"]
    return failed[-1] if failed else None


def _running_phase(ctx: RunContext) -> str | None:
    state = ctx.journal.run(ctx.run_id)
    return state.interrupted_phase if state else None


def report_interrupted(ctx: RunContext, stop: RunInterrupted, next_command: str) -> str:
    """Journal, print and notify where the run stopped and what to run next; the message."""
    phase = stop.phase or "the start"
    where = (
        f"during {phase} (it did not finish)"
        if stop.at_once
        else f"before {phase} (the phases before it finished)"
    )
    message = (
        f"{ctx.kind} of {ctx.env.name} interrupted at {phase} by {stop.signal_name}, {where}; "
        f"next: {next_command}"
    )
    ctx.record(
        INTERRUPTED_RECORD,
        "done",
        {"signal": stop.signal_name, "phase": phase, "at_once": stop.at_once, "next": next_command},
    )
    ctx.logger.warning(f"{ctx.kind}_interrupted", request_id=ctx.run_id, phase=phase)
    ctx.say(f"  ! {message}")
    notify(
        ctx,
        "failure",
        message,
        severity="ERROR",
        phase=f"interrupted-{phase}",
    )
    return message

"""The run's side of the monitor seam: what the monitor records goes to the run's journal and
log, what it announces to the environment's channels, and a stop asked by SIGTERM/SIGINT
reaches it as :meth:`RunEvents.stop_requested`."""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from types import FrameType

from dhash_rollout.notify.model import Severity
from dhash_rollout.runs.context import RunContext
from dhash_rollout.runs.notices import notify
from dhash_rollout.runs.plan import Phase

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunEvents:
    """:class:`~dhash_rollout.runs.monitoring.MonitorEvents` backed by a run context."""

    def __init__(self, ctx: RunContext, phase: Phase = Phase.MONITOR) -> None:
        self.ctx = ctx
        self.phase = phase
        self._numbers = itertools.count(1)

    def record(self, event: str, data: Mapping[str, object]) -> None:
        self.ctx.record(self.phase, "started", {"event": event, event: dict(data)})
        self.ctx.logger.info(f"monitor_{event}", request_id=self.ctx.run_id, **dict(data))

    def notify(self, severity: Severity, title: str, message: str) -> None:
        notify(
            self.ctx,
            "gate",
            f"{title}: {message}",
            severity=severity.name,
            phase=f"{self.phase}-{next(self._numbers)}",  # each notice its own delivery key
        )

    def stop_requested(self) -> bool:
        return self.ctx.stop.is_set()


@contextlib.contextmanager
def stop_on_signals(
    stop: threading.Event, on_signal: Callable[[str], None] | None = None
) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop`` instead of killing the run, while the body runs (main thread
    only: elsewhere signals cannot be caught, and the body runs unguarded). ``on_signal`` is
    told the signal's name (the run's interruption record names it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def asked(signum: int, _frame: FrameType | None) -> None:
        if on_signal is not None:
            on_signal(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, asked) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

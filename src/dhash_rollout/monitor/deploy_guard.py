"""The deploy's monitor phase: :class:`GateMonitor` over the new release from its switch.

The command layer hands this to the deploy (``commands/guard.deploy_monitor``) as its
:class:`~dhash_rollout.runs.monitoring.DeployMonitor`. It adds to the gate monitor what the
deploy's notices and the on-call rota need and nothing else: a one-line summary of every gate
(the INFO/WARN/ERROR notice carries it with the report's path), and the escalation of
unacknowledged alerts run on its polls while it is alive (``dhash notify escalate``'s logic, at
most every ``escalate_every_s`` of the clock). It never rolls back: the deploy acts on its
verdict under the lock it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from dhash_rollout.monitor.gates_config import GateName
from dhash_rollout.monitor.runner import GateMonitor, SourceFactory, scrape_source
from dhash_rollout.runs.monitoring import (
    Clock,
    GateEvidence,
    MonitorEvents,
    MonitorRequest,
    MonitorResult,
)

ESCALATE_EVERY_S = 30.0  # cron runs `dhash notify escalate` every minute; the monitor: twice
Escalate = Callable[[float], object]

_UNITS = {
    GateName.HEALTH_FAILURES.value: "",
    GateName.EXTRACTION_FAILURE_RATE.value: "%",
    GateName.P95_HASH_TIME.value: " ms",
    GateName.LOW_CONFIDENCE_QUEUE.value: "",
    GateName.PROXY_ERROR_RATE.value: "%",
}


class DeployGuard:
    """A :class:`~dhash_rollout.runs.monitoring.DeployMonitor`: the gates over real metrics."""

    def __init__(
        self,
        *,
        source: SourceFactory = scrape_source,
        gates_file: Path | None = None,
        view: str = "auto",
        out: TextIO | None = None,
        escalate: Escalate | None = None,
        escalate_every_s: float = ESCALATE_EVERY_S,
    ) -> None:
        self.source = source
        self.gates_file = gates_file
        self.view = view
        self.out = out
        self.escalate = escalate
        self.escalate_every_s = escalate_every_s

    def watch(self, request: MonitorRequest, events: MonitorEvents, clock: Clock) -> MonitorResult:
        last: float | None = None

        def after_poll(at: float) -> None:
            nonlocal last
            if self.escalate is None or (last is not None and at - last < self.escalate_every_s):
                return
            last = at
            self.escalate(at)

        monitor = GateMonitor(
            source=self.source,
            gates_file=self.gates_file,
            view=self.view,
            out=self.out,
            on_poll=after_poll,
        )
        result = monitor.watch(request, events, clock)
        return replace(result, extra={**result.extra, "summary": gate_summary(result.evidence)})


def gate_summary(evidence: Iterable[GateEvidence]) -> str:
    """Every gate in one line: ``p95HashTime ok 41.2 ms (threshold 2000, 57 samples)``."""
    parts = []
    for ev in evidence:
        unit = _UNITS.get(ev.gate, "")
        value = "no data" if ev.value is None else f"{ev.value:.4g}{unit}"
        samples = f", {ev.samples} samples" if ev.samples else ""
        parts.append(f"{ev.gate} {ev.status} {value} (threshold {ev.threshold:g}{samples})")
    return "; ".join(parts)

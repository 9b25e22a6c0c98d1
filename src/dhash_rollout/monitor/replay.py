"""``dhash gates replay``: the recorded measurements of a ledger against other thresholds.

The guide's "tune quality gates from production telemetry": each poll's recorded raw value and
sample count go through the same :func:`gates.step` with the other file's thresholds, warn
levels, minimum samples, counting and no-data policy. Values over a window are taken as
recorded (a different ``timeWindow`` cannot be recomputed from a ledger), which the output says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dhash_rollout.monitor.gates import GateState, Status, conclude, recorded, step
from dhash_rollout.monitor.gates_config import GateName, GatesConfig
from dhash_rollout.monitor.ledger import read_rows
from dhash_rollout.runs.monitoring import Verdict


@dataclass(frozen=True)
class Firing:
    gate: GateName
    poll: int
    offset_s: float
    value: float | None
    threshold: float
    detail: str


@dataclass(frozen=True)
class Replay:
    environment: str
    polls: int
    fired: dict[GateName, Firing]
    warned: dict[GateName, int]  # gate -> first poll over its warn level
    verdict: Verdict
    reason: str


class ReplayError(ValueError):
    pass


def replay(ledger: Path, config: GatesConfig, config_path: Path) -> Replay:
    rows = read_rows(ledger)
    start = next((r for r in rows if r.get("kind") == "start"), None)
    if start is None:
        raise ReplayError(f"{ledger}: not a monitor ledger (no start line)")
    environment = str(start["environment"])
    gates = config.for_environment(environment, config_path)
    polls = [r for r in rows if r.get("kind") == "poll"]
    scale = float(start.get("time_scale", 1.0))
    duration = float(start.get("duration_s", 3600.0))
    states = {name: GateState() for name in GateName}
    fired: dict[GateName, Firing] = {}
    warned: dict[GateName, int] = {}
    for number, poll in enumerate(polls, start=1):
        for item in poll["evaluations"]:
            name = GateName(item["gate"])
            gate = gates.get(name)
            if gate is None:  # e.g. proxyErrorRate, recorded on a fleet, not in this file
                continue
            measured = recorded(item)
            window = gate.time_window * 60 / scale if gate.time_window else duration
            states[name], ev = step(
                name,
                gate,
                states[name],
                measured,
                at=float(item["at"]),
                counting_window_s=window,
                error_limit=config.monitoring.consecutive_error_limit,
            )
            if ev.newly_warned and name not in warned:
                warned[name] = number
            if ev.status is Status.FAIL and name not in fired:
                fired[name] = Firing(
                    name, number, float(poll["offset"]), ev.value, ev.threshold, ev.detail
                )
    # The gates the run evaluated (its start line names them): a proxy gate in the file
    # was never measured by a run without a proxy, and is not "no data" for it.
    evaluated = set(start.get("gates") or [g.value for g in GateName])
    judged = [(n, g) for n, g in gates.items() if n.value in evaluated]
    conclusion = conclude(judged, states, inconclusive_fails=config.monitoring.inconclusive_fails)
    return Replay(environment, len(polls), fired, warned, conclusion.verdict, conclusion.reason)

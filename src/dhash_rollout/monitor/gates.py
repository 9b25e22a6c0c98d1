"""Gate evaluation: one poll's measurement in, the gate's new state and its evaluation out.

Pure, so the rules are tested with case tables and ``dhash gates replay`` re-runs them on a
ledger. The rules (docs/monitoring.md):

* a value *breaches* when it is above the threshold; a warn level crossed (value > warn) gives
  one WARN per gate per deploy, not one per poll;
* one breaching poll is noise; the gate fails when the breach is sustained: ``sustainPolls``
  (default 2) breaching polls in a row (``counting: consecutive``) or within the gate's time
  window (``counting: window``). ``healthFailures`` counts consecutive non-OK checks itself, so
  its threshold is the sustain rule (fails at threshold + 1 in a row);
* fewer samples than ``minSamples`` is no data; the no-data policy decides: ``fail`` counts it as
  a breach, ``inconclusive`` and ``ignore`` leave the breach count alone;
* a source error is never a pass: more consecutive errors than the limit (default 4, as Argo's
  ``consecutiveErrorLimit``) fail the gate, and an error at the end is inconclusive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from dhash_rollout.monitor.gates_config import DEFAULT_SUSTAIN_POLLS, Gate, GateName
from dhash_rollout.runs.monitoring import Verdict


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    BREACH = "breach"  # above the threshold, not (yet) sustained
    FAIL = "fail"
    NO_DATA = "no-data"
    ERROR = "error"


@dataclass(frozen=True)
class Measurement:
    """What a source saw for one gate at one poll. ``value`` None means no data."""

    value: float | None
    samples: int = 0
    error: str | None = None
    window_s: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class GateState:
    polls: int = 0
    breaches_in_row: int = 0
    breach_times: tuple[float, ...] = ()
    errors_in_row: int = 0
    non_ok_run: int = 0  # healthFailures: consecutive non-OK checks so far
    warned: bool = False
    failed: bool = False
    last: Status | None = None
    last_value: float | None = None


@dataclass(frozen=True)
class Evaluation:
    gate: GateName
    at: float
    poll: int
    value: float | None  # the gate's value (for healthFailures: the consecutive non-OK count)
    raw: float | None  # what the source measured (healthFailures: 1 non-OK, 0 OK)
    samples: int
    window_s: float | None
    threshold: float
    warn: float | None
    status: Status
    detail: str = ""
    newly_warned: bool = False

    def to_row(self) -> dict[str, object]:
        return {
            "gate": self.gate.value,
            "at": self.at,
            "poll": self.poll,
            "value": self.value,
            "raw": self.raw,
            "samples": self.samples,
            "window_s": self.window_s,
            "threshold": self.threshold,
            "warn": self.warn,
            "status": self.status.value,
            "detail": self.detail,
            "newly_warned": self.newly_warned,
        }


def sustain_polls(name: GateName, gate: Gate) -> int:
    if gate.sustain_polls is not None:
        return gate.sustain_polls
    return 1 if name is GateName.HEALTH_FAILURES else DEFAULT_SUSTAIN_POLLS


@dataclass(frozen=True)
class _Poll:
    """What every evaluation of one poll shares."""

    name: GateName
    gate: Gate
    at: float
    poll: int
    measured: Measurement

    def evaluation(
        self, value: float | None, status: Status, detail: str, newly_warned: bool = False
    ) -> Evaluation:
        return Evaluation(
            gate=self.name,
            at=self.at,
            poll=self.poll,
            value=value,
            raw=self.measured.value,
            samples=self.measured.samples,
            window_s=self.measured.window_s,
            threshold=self.gate.threshold,
            warn=self.gate.warn,
            status=status,
            detail=detail,
            newly_warned=newly_warned,
        )


def step(
    name: GateName,
    gate: Gate,
    state: GateState,
    measured: Measurement,
    *,
    at: float,
    counting_window_s: float,
    error_limit: int,
) -> tuple[GateState, Evaluation]:
    """Fold one measurement into the gate's state. ``counting_window_s`` is the (scaled) span
    over which ``counting: window`` counts breaching polls."""
    here = _Poll(name, gate, at, state.polls + 1, measured)
    if measured.error is not None:
        errors = state.errors_in_row + 1
        failed = errors > error_limit
        status = Status.FAIL if failed else Status.ERROR
        detail = f"source error {errors} in a row (limit {error_limit}): {measured.error}"
        new = replace(
            state,
            polls=here.poll,
            errors_in_row=errors,
            failed=state.failed or failed,
            last=status,
            last_value=None,
        )
        return new, here.evaluation(None, status, detail)
    state = replace(state, errors_in_row=0)
    value = measured.value
    if name is GateName.HEALTH_FAILURES and value is not None:
        run = state.non_ok_run + 1 if value > 0 else 0
        state = replace(state, non_ok_run=run)
        value = float(run)
    if value is None or measured.samples < gate.min_samples:
        detail = measured.detail or (
            "no data"
            if value is None
            else f"{measured.samples} samples < minSamples {gate.min_samples}"
        )
        if gate.no_data != "fail":
            new = replace(state, polls=here.poll, last=Status.NO_DATA, last_value=None)
            return new, here.evaluation(None, Status.NO_DATA, detail)
        return _breach(here, state, None, f"{detail} (noData: fail)", counting_window_s)
    if value > gate.threshold:
        return _breach(here, state, value, measured.detail, counting_window_s)
    crossed = gate.warn is not None and value > gate.warn
    status = Status.WARN if crossed else Status.OK
    new = replace(
        state,
        polls=here.poll,
        breaches_in_row=0,
        warned=state.warned or crossed,
        last=status,
        last_value=value,
    )
    return new, here.evaluation(value, status, measured.detail, crossed and not state.warned)


def _breach(
    here: _Poll, state: GateState, value: float | None, detail: str, counting_window_s: float
) -> tuple[GateState, Evaluation]:
    gate = here.gate
    in_row = state.breaches_in_row + 1
    times = (*state.breach_times, here.at)
    if gate.counting == "window":
        times = tuple(t for t in times if t >= here.at - counting_window_s - 1e-9)
        count = len(times)
    else:
        count = in_row
    needed = sustain_polls(here.name, gate)
    failed = count >= needed
    status = Status.FAIL if failed else Status.BREACH
    how = "in a row" if gate.counting == "consecutive" else "within the window"
    text = f"breach {count}/{needed} {how}" + (f"; {detail}" if detail else "")
    new = replace(
        state,
        polls=here.poll,
        breaches_in_row=in_row,
        breach_times=times,
        warned=state.warned or gate.warn is not None,
        failed=state.failed or failed,
        last=status,
        last_value=value,
    )
    return new, here.evaluation(value, status, text, gate.warn is not None and not state.warned)


@dataclass(frozen=True)
class Conclusion:
    verdict: Verdict
    reason: str
    failed_gate: GateName | None = None
    no_data: tuple[GateName, ...] = field(default=())


def conclude(
    gates: Sequence[tuple[GateName, Gate]],
    states: Mapping[GateName, GateState],
    *,
    inconclusive_fails: bool = False,
) -> Conclusion:
    """The verdict at the end of the window (a failure mid-window is returned at once)."""
    for name, _gate in gates:
        if states[name].failed:
            return Conclusion(Verdict.FAILED, f"{name.value} failed", name)
    unknown: list[GateName] = []
    for name, gate in gates:
        last = states[name].last
        undecided = last is Status.NO_DATA and gate.no_data == "inconclusive"
        if last is Status.ERROR or last is None or undecided:
            unknown.append(name)
        elif last is Status.BREACH and states[name].last_value is None:  # noData: fail, last
            return Conclusion(Verdict.FAILED, f"{name.value}: no data at the end", name)
    if unknown:
        names = ", ".join(n.value for n in unknown)
        verdict = Verdict.FAILED if inconclusive_fails else Verdict.INCONCLUSIVE
        return Conclusion(verdict, f"no data at the end for {names}", None, tuple(unknown))
    return Conclusion(Verdict.PASSED, "every gate passed over the window")


@dataclass(frozen=True)
class ProxyWindow:
    """What a fleet's proxy counted over a gate's window: the increases of its exporter's
    counters for the backend, and the 5xx each server answered. HAProxy counts a 503 it
    makes itself (no server up, every connection attempt refused) as a backend 5xx *and* a
    connection error (measured on 2.6: 12 such requests, 12 + 12), and a refused connection
    it retried or redispatched to another server as neither a 5xx nor a client's error."""

    responses: Mapping[str, float]  # "1xx" .. "5xx", "other"
    connection_errors: float = 0.0
    response_errors: float = 0.0
    retries: float = 0.0
    redispatches: float = 0.0
    server_5xx: Mapping[str, float] = field(default_factory=dict)


def proxy_error_rate(window: ProxyWindow | None, window_s: float) -> Measurement:
    """``proxyErrorRate``: 100 * 5xx / responses through the proxy, what the fleet's clients
    got (the servers' own 500s and the proxy's 503s alike). Connection errors, retries and
    redispatches are said beside it, not added: an unrecovered one is already a 5xx, a
    recovered one reached no client."""
    total = sum(window.responses.values()) if window is not None else 0.0
    if window is None or total <= 0:
        return Measurement(
            None, samples=0, window_s=window_s, detail="no responses through the proxy"
        )
    errors = window.responses.get("5xx", 0.0)
    by_server = ", ".join(
        f"{name} {_fmt(n)}" for name, n in sorted(window.server_5xx.items()) if n > 0
    )
    detail = f"{_fmt(errors)} 5xx of {_fmt(total)} responses" + (
        f" ({by_server})" if by_server else ""
    )
    detail += (
        f"; connection errors {_fmt(window.connection_errors)}, response errors "
        f"{_fmt(window.response_errors)}, retries {_fmt(window.retries)}, redispatches "
        f"{_fmt(window.redispatches)}"
    )
    return Measurement(
        100.0 * errors / total, samples=round(total), window_s=window_s, detail=detail
    )


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def recorded(row: Mapping[str, Any]) -> Measurement:
    """The measurement behind a ledger evaluation row (resume and replay fold these again)."""
    status, detail = row.get("status"), str(row.get("detail") or "")
    was_error = status == "error" or (status == "fail" and detail.startswith("source error"))
    return Measurement(
        row.get("raw"),
        samples=int(row.get("samples") or 0),
        error=detail if was_error else None,
        window_s=row.get("window_s"),
    )

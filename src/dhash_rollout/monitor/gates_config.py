"""``quality-gates-config.json``: the typed model, validated on load, one clear line per problem.

The four gates are the guide's; each names how its value is measured (see ``gates``). A fifth,
``proxyErrorRate``, is optional: a fleet's gate reads it from its HAProxy's own exporter
(``monitor/proxy_source.py``), and a run whose source has no proxy does not evaluate it. Unknown
gates or keys, a zero or negative window, a warn level above its threshold and a missing
environment are refused, each with one line (``dhash gates check``), never half-applied.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dhash_service.errors import DhashError


class GateName(StrEnum):
    HEALTH_FAILURES = "healthFailures"
    EXTRACTION_FAILURE_RATE = "extractionFailureRate"
    P95_HASH_TIME = "p95HashTime"
    LOW_CONFIDENCE_QUEUE = "lowConfidenceQueue"
    PROXY_ERROR_RATE = "proxyErrorRate"


WINDOW_GATES = frozenset(
    {GateName.EXTRACTION_FAILURE_RATE, GateName.P95_HASH_TIME, GateName.PROXY_ERROR_RATE}
)
# Gates only some sources can measure (the proxy's): absent from a file, or from a run whose
# source cannot read them, they are not evaluated at all (never "no data").
PROXY_GATES = frozenset({GateName.PROXY_ERROR_RATE})
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4  # as Argo Rollouts' consecutiveErrorLimit
DEFAULT_SUSTAIN_POLLS = 2  # one bad poll is noise; the second in a row is a sustained breach

Counting = Literal["consecutive", "window"]
NoDataPolicy = Literal["fail", "inconclusive", "ignore"]


class GatesConfigError(DhashError):
    """The gates file is unreadable or invalid; ``lines`` holds one problem each."""

    exit_code = 2

    def __init__(self, path: Path, lines: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(lines))
        self.path = path
        self.lines = lines


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PollStep(_Strict):
    until_minute: Annotated[float, Field(gt=0, alias="untilMinute")]
    interval_seconds: Annotated[float, Field(gt=0, alias="intervalSeconds")]


class Monitoring(_Strict):
    duration_minutes: Annotated[float, Field(gt=0, alias="durationMinutes")] = 60
    poll_schedule: Annotated[list[PollStep], Field(min_length=1, alias="pollSchedule")]
    consecutive_error_limit: Annotated[int, Field(ge=0, alias="consecutiveErrorLimit")] = (
        DEFAULT_CONSECUTIVE_ERROR_LIMIT
    )
    inconclusive_fails: Annotated[bool, Field(alias="inconclusiveFails")] = False

    @model_validator(mode="after")
    def _schedule_covers_the_window(self) -> Monitoring:
        ends = [step.until_minute for step in self.poll_schedule]
        if ends != sorted(ends) or len(set(ends)) != len(ends):
            raise ValueError("pollSchedule's untilMinute values must increase")
        if ends[-1] < self.duration_minutes:
            raise ValueError(
                f"pollSchedule ends at minute {ends[-1]:g}, before durationMinutes "
                f"{self.duration_minutes:g}"
            )
        return self


class Gate(_Strict):
    threshold: float
    warn: float | None = None
    time_window: Annotated[float | None, Field(alias="timeWindow")] = None  # minutes
    min_samples: Annotated[int, Field(ge=0, alias="minSamples")] = 0
    counting: Counting = "consecutive"
    no_data: Annotated[NoDataPolicy, Field(alias="noData")] = "inconclusive"
    sustain_polls: Annotated[int | None, Field(ge=1, alias="sustainPolls")] = None
    description: str = ""

    @model_validator(mode="after")
    def _levels(self) -> Gate:
        if self.time_window is not None and self.time_window <= 0:
            raise ValueError(f"timeWindow must be > 0 minutes, got {self.time_window:g}")
        if self.warn is not None and self.warn > self.threshold:
            raise ValueError(f"warn {self.warn:g} is above threshold {self.threshold:g}")
        return self


class EnvironmentGates(_Strict):
    health_failures: Annotated[Gate, Field(alias=GateName.HEALTH_FAILURES.value)]
    extraction_failure_rate: Annotated[Gate, Field(alias=GateName.EXTRACTION_FAILURE_RATE.value)]
    p95_hash_time: Annotated[Gate, Field(alias=GateName.P95_HASH_TIME.value)]
    low_confidence_queue: Annotated[Gate, Field(alias=GateName.LOW_CONFIDENCE_QUEUE.value)]
    proxy_error_rate: Annotated[Gate | None, Field(alias=GateName.PROXY_ERROR_RATE.value)] = None

    @model_validator(mode="after")
    def _windows(self) -> EnvironmentGates:
        for name in sorted(WINDOW_GATES):
            gate = self.get(name)
            if gate is not None and gate.time_window is None:
                raise ValueError(f"{name.value}: timeWindow is required (minutes)")
        return self

    def get(self, name: GateName) -> Gate | None:
        """The gate, or None for an optional one the file does not set."""
        gate: Gate | None = getattr(self, _FIELD[name])
        return gate

    def gate(self, name: GateName) -> Gate:
        gate = self.get(name)
        if gate is None:
            raise KeyError(f"{name.value} is not configured")
        return gate

    def items(self, *, proxy: bool = True) -> list[tuple[GateName, Gate]]:
        """The configured gates; ``proxy=False`` leaves out those read from a proxy."""
        return [
            (name, gate)
            for name in GateName
            if (gate := self.get(name)) is not None and (proxy or name not in PROXY_GATES)
        ]


_FIELD = {
    GateName.HEALTH_FAILURES: "health_failures",
    GateName.EXTRACTION_FAILURE_RATE: "extraction_failure_rate",
    GateName.P95_HASH_TIME: "p95_hash_time",
    GateName.LOW_CONFIDENCE_QUEUE: "low_confidence_queue",
    GateName.PROXY_ERROR_RATE: "proxy_error_rate",
}


class GatesConfig(_Strict):
    version: Literal[1] = 1
    monitoring: Monitoring
    environments: Annotated[dict[str, EnvironmentGates], Field(min_length=1)]

    def for_environment(self, name: str, path: Path) -> EnvironmentGates:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise GatesConfigError(
                path, [f"environments.{name}: missing (the file has {known})"]
            ) from None


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _lines(exc: ValidationError) -> list[str]:
    lines = []
    for problem in exc.errors():
        loc = problem["loc"]
        message = str(problem["msg"]).removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            what = "gate" if len(loc) == 3 and loc[0] == "environments" else "key"
            message = f"unknown {what}"
        lines.append(f"{_where(loc)}: {message}")
    return lines


def parse_gates_config(text: str, path: Path) -> GatesConfig:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GatesConfigError(path, [f"not JSON: {exc.msg} at line {exc.lineno}"]) from None
    try:
        return GatesConfig.model_validate(data)
    except ValidationError as exc:
        raise GatesConfigError(path, _lines(exc)) from None


def load_gates_config(path: Path, *, environment: str | None = None) -> GatesConfig:
    """The validated file; with ``environment``, also refuse a file that does not name it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GatesConfigError(path, [f"cannot read: {exc.strerror or exc}"]) from None
    config = parse_gates_config(text, path)
    if environment is not None:
        config.for_environment(environment, path)
    return config

"""Fault injection: really bad releases for the rollout monitor's tests and the demo.

A monitor is only proven by releases that are truly bad, so these faults act on the real code
paths (hashing sleeps, extractions fail, ``/health`` answers 503, decisions go to review) and the
metrics then report what really happened. Every fault is off by default and refused when
``DHASH_ENV`` is ``production`` unless ``DHASH_FAULT_ALLOW_PRODUCTION`` forces it
(docs/configuration.md, docs/monitoring.md).

The failure share is deterministic (every item whose running count crosses a multiple of
``1 / share`` fails), so a test sees exactly the share it asked for, per worker process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from dhash_service.errors import CorruptInput

if TYPE_CHECKING:
    from dhash_service.matching import Decision


class FaultSettings(Protocol):
    """The fault group of the service's settings (a protocol: config imports this module)."""

    @property
    def fault_hash_latency_seconds(self) -> float: ...
    @property
    def fault_extraction_failure_share(self) -> float: ...
    @property
    def fault_health_failing(self) -> bool: ...
    @property
    def fault_low_confidence(self) -> bool: ...
    def model_dump(self) -> dict[str, Any]: ...


PRODUCTION = "production"


@dataclass(frozen=True)
class FaultPlan:
    hash_latency_seconds: float = 0.0
    extraction_failure_share: float = 0.0
    health_failing: bool = False
    low_confidence: bool = False

    @property
    def active(self) -> bool:
        return self != FaultPlan()


def refuse_in_production(values: Mapping[str, object], *, allow: bool) -> None:
    """Raise ``ValueError`` (a settings error) for a fault switched on in production."""
    plan = _plan_from(values)
    if plan.active and str(values.get("env", "")).lower() == PRODUCTION and not allow:
        raise ValueError(
            "fault injection (DHASH_FAULT_*) is refused in production; "
            "set DHASH_FAULT_ALLOW_PRODUCTION=true to force it"
        )


def _plan_from(values: Mapping[str, object]) -> FaultPlan:
    def number(key: str) -> float:
        value = values.get(key, 0.0)
        return float(value) if isinstance(value, int | float) else 0.0

    return FaultPlan(
        hash_latency_seconds=number("fault_hash_latency_seconds"),
        extraction_failure_share=number("fault_extraction_failure_share"),
        health_failing=bool(values.get("fault_health_failing", False)),
        low_confidence=bool(values.get("fault_low_confidence", False)),
    )


class _Faults:
    """The process's plan and the item counter behind the deterministic failure share."""

    def __init__(self) -> None:
        self.plan = FaultPlan()
        self._lock = threading.Lock()
        self._items = 0

    def configure(self, settings: FaultSettings) -> None:
        self.plan = _plan_from(settings.model_dump())
        with self._lock:
            self._items = 0

    def next_item_fails(self) -> bool:
        share = self.plan.extraction_failure_share
        if share <= 0:
            return False
        with self._lock:
            self._items += 1
            n = self._items
        return int(n * share) > int((n - 1) * share)


_FAULTS = _Faults()


def configure(settings: FaultSettings) -> None:
    """Called once per app (each worker): the faults of this release's settings."""
    _FAULTS.configure(settings)


def current() -> FaultPlan:
    return _FAULTS.plan


def while_hashing(what: str) -> None:
    """Inside an item's hash: the added latency, then the failing share (as a corrupt item)."""
    plan = _FAULTS.plan
    if plan.hash_latency_seconds > 0:
        time.sleep(plan.hash_latency_seconds)
    if _FAULTS.next_item_fails():
        raise CorruptInput(f"{what}: injected extraction failure (DHASH_FAULT_*)")


def health_failing() -> bool:
    return _FAULTS.plan.health_failing


def decided(decision: Decision) -> Decision:
    """A decision, sent to review as low-information when that fault is on."""
    if not _FAULTS.plan.low_confidence or decision.kind == "review":
        return decision
    return replace(decision, kind="review", reason="low_information")

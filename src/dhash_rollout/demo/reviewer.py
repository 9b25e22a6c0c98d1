"""The demo's reviewer: a person clearing the low-confidence queue through the API while the new
release serves, and the check that each decision survived the rollback.

It waits until ``/health`` reports release B, then confirms one pending item and rejects the
next (``POST /v1/review/{id}``), as a reviewer would during a deploy; the decisions the API
acknowledged are what the end checks: after the rollback to A, each must still be resolved the
same way (``GET /v1/review?status=...``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from dhash_service.client import DhashClient
from dhash_service.errors import DhashError

Action = Literal["confirm", "reject"]
STATUS_OF: dict[Action, Literal["confirmed", "rejected"]] = {
    "confirm": "confirmed",
    "reject": "rejected",
}
ACTIONS: tuple[Action, ...] = ("confirm", "reject")
REVIEWER = "demo-reviewer"
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Decision:
    item_id: int
    action: Action
    at: float  # epoch seconds, when the API acknowledged it
    version: str  # the release that served /health just before


@dataclass
class ReviewerLog:
    decisions: list[Decision] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Reviewer:
    """``with Reviewer(url, token, version=B):`` decides once B serves (in its own thread)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        version: str,
        timeout: float = 300,
        on_decision: Callable[[Decision], None] = lambda _d: None,
    ) -> None:
        self.base_url = base_url
        self.on_decision = on_decision
        self.token = token
        self.version = version
        self.timeout = timeout
        self.log = ReviewerLog()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        with DhashClient(self.base_url, token=self.token, timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    serving = client.health().version
                except DhashError:
                    serving = None  # between processes: the load generator counts those
                if serving == self.version:
                    self._decide(client, serving)
                    return
                self._stop.wait(POLL_SECONDS)

    def _decide(self, client: DhashClient, serving: str) -> None:
        try:
            pending = client.review_items(status="pending", limit=len(ACTIONS))
        except DhashError as err:
            self.log.errors.append(f"listing the queue: {err.message}")
            return
        for item, action in zip(pending, ACTIONS, strict=False):
            try:
                client.resolve_review(item.id, action, reviewer=REVIEWER)
            except DhashError as err:
                self.log.errors.append(f"{action} item {item.id}: {err.message}")
                continue
            decision = Decision(item.id, action, time.time(), serving)
            self.log.decisions.append(decision)
            self.on_decision(decision)

    def __enter__(self) -> Reviewer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def missing_decisions(client: DhashClient, decisions: list[Decision]) -> list[Decision]:
    """The decisions no longer recorded as made (item gone, or resolved otherwise)."""
    found: dict[str, set[int]] = {}
    for status in set(STATUS_OF.values()):
        found[status] = {item.id for item in client.review_items(status=status, limit=1000)}
    return [d for d in decisions if d.item_id not in found[STATUS_OF[d.action]]]

"""The one health probe of a deployed service, used by deploy and rollback (``health`` phase),
the smoke tests and the daily runbook: ``/health`` says ``ok``, and ``/ready`` answers 200 when
asked. Each attempt opens new connections, so a switch that left a dead keep-alive connection
behind is not mistaken for a dead service."""

from __future__ import annotations

import time
from dataclasses import dataclass

from dhash_rollout.environments import Environment, api_token
from dhash_service.api.models import Health
from dhash_service.client import DhashClient
from dhash_service.errors import CheckFailed, DhashError

RETRY_SECONDS = 0.5


@dataclass(frozen=True)
class HealthAnswer:
    health: Health
    ready: bool | None  # None: /ready was not asked
    attempts: int

    def summary(self) -> str:
        return f"ok, version {self.health.version}, pid {self.health.pid}"

    def to_dict(self) -> dict[str, object]:
        return self.health.model_dump()


def _attempt(url: str, token: str | None, require_ready: bool, timeout: float) -> HealthAnswer:
    with DhashClient(url, token=token, timeout=timeout) as client:
        health = client.health()
        if health.status != "ok":
            raise CheckFailed(f"/health says {health.status!r}")
        if not require_ready:
            return HealthAnswer(health, None, 1)
        ready = client.ready()
        if not ready.ready:
            failing = {k: v for k, v in ready.checks.items() if v != "ok"}
            raise CheckFailed(f"/ready: HTTP {ready.status_code} {failing or ready.checks}")
        return HealthAnswer(health, True, 1)


def probe_health(
    url: str,
    *,
    token: str | None = None,
    require_ready: bool = True,
    within: float = 0.0,
    request_timeout: float = 5.0,
) -> HealthAnswer:
    """The service's health, retried for ``within`` seconds; :class:`CheckFailed` saying the
    last problem when it never answers healthy. ``within=0``: one attempt, whose error is
    raised as it is (``Unavailable`` for a service that cannot be reached)."""
    deadline = time.monotonic() + within
    attempts = 0
    while True:
        attempts += 1
        try:
            answer = _attempt(url, token, require_ready, request_timeout)
        except DhashError as exc:
            if within <= 0:
                raise
            last = exc.message
        else:
            return HealthAnswer(answer.health, answer.ready, attempts)
        if time.monotonic() + RETRY_SECONDS > deadline:
            raise CheckFailed(f"{url} is not healthy: {last}")
        time.sleep(RETRY_SECONDS)


def health_phase(env: Environment, detail: dict[str, object], within: float = 30.0) -> None:
    """The ``health`` phase of a deploy or a rollback: the service answers healthy and ready
    within ``within`` seconds; its ``/health`` answer goes into the journal ``detail``."""
    detail["health"] = probe_health(env.url, token=api_token(env), within=within).to_dict()


def served_version(env: Environment, timeout: float = 5.0) -> str | None:
    """The version ``/health`` names (recorded in the smoke and logging logs, so a preflight
    can tell which release they tested), or None when it does not answer."""
    import httpx

    try:
        body = httpx.get(f"{env.url}/health", timeout=timeout).json()
    except (httpx.HTTPError, ValueError):
        return None
    version = body.get("version") if isinstance(body, dict) else None
    return str(version) if version else None

"""One HTTP POST of a JSON payload to a webhook, classified for the retry loop.

The URL is the credential, so no error built here ever contains it: messages name the
channel, the status and a short (redacted) response body, never ``str(request.url)``.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from dhash_service import __version__

from .redaction import redact
from .retry import DeliveryError, RetryPolicy, parse_retry_after

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_BODY_SNIPPET_CHARS = 200


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_url(url: str) -> str | None:
    """Why ``url`` cannot be used as a webhook, or None. Plain http only on loopback."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "is not a valid URL"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and is_loopback(host):
        return None
    return "must be an https:// URL (plain http is allowed only on loopback)"


@dataclass(frozen=True)
class WebhookChannel:
    """What Slack, Teams and Discord share: one JSON POST to a URL that is the credential
    (so it is the secret to redact). Subclasses give the name and render the vendor payload."""

    url: str = field(repr=False)
    policy: RetryPolicy
    name: str = "webhook"

    def deliver(self, payload: dict[str, Any], seconds_left: float) -> str:
        return post_json(self.name, self.url, payload, self.policy, seconds_left)

    def secret_values(self) -> tuple[str, ...]:
        return (self.url,)


def post_json(
    channel: str,
    url: str,
    payload: dict[str, Any],
    policy: RetryPolicy,
    seconds_left: float,
) -> str:
    """POST ``payload``; return a short success detail or raise :class:`DeliveryError`."""
    read = min(policy.read_timeout_seconds, seconds_left)
    timeout = httpx.Timeout(
        connect=min(policy.connect_timeout_seconds, seconds_left), read=read, write=read, pool=read
    )
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": f"dhash-notify/{__version__}",
    }
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.post(url, content=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise DeliveryError(f"{channel}: {_phase(exc)} timed out", retryable=True) from None
    except httpx.TransportError as exc:
        raise DeliveryError(
            f"{channel}: {type(exc).__name__}: {redact(str(exc))}", retryable=True
        ) from None
    status = response.status_code
    if 200 <= status < 300:
        return f"HTTP {status}"
    snippet = redact(" ".join(response.text[:_BODY_SNIPPET_CHARS].split()))
    message = f"{channel}: HTTP {status} {response.reason_phrase}".rstrip()
    if snippet:
        message += f": {snippet}"
    raise DeliveryError(
        message,
        retryable=status in _RETRYABLE_STATUS,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        status=status,
    )


def _phase(exc: httpx.TimeoutException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect"
    if isinstance(exc, httpx.ReadTimeout):
        return "read"
    if isinstance(exc, httpx.WriteTimeout):
        return "write"
    return "request"

"""The small protocol every remote channel implements: render a payload, try one delivery."""

from __future__ import annotations

from typing import Any, Protocol

from .model import Event


class Channel(Protocol):
    """A destination. ``deliver`` makes ONE attempt; retries belong to the caller."""

    @property
    def name(self) -> str:
        """The channel's name as used in ``--channels`` and reports."""
        ...

    def render(self, event: Event) -> dict[str, Any]:
        """The exact payload that would be sent (what ``--dry-run`` shows)."""
        ...

    def deliver(self, payload: dict[str, Any], seconds_left: float) -> str:
        """Send ``payload`` once within ``seconds_left``; return a short detail such as
        ``"HTTP 200"`` or raise :class:`~dhash_rollout.notify.retry.DeliveryError`."""
        ...

    def secret_values(self) -> tuple[str, ...]:
        """Credentials this channel holds, so they can be redacted from every log line."""
        ...

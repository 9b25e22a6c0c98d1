"""Multi-channel notifications (Slack, Teams, Discord, e-mail, file): never lost, never blocking.

Usage from the rollout code::

    from dhash_rollout.notify import Event, Severity, notifier_from_settings

    notifier = notifier_from_settings("production")
    report = notifier.send(Event(kind="rollback", env="production", message="...",
                                 severity=Severity.ERROR, reason="p95 over budget"))

``send`` never raises for delivery failures and returns within the configured budget; what did
not get through is in the outbox for ``dhash notify flush`` and in the notification log.
"""

from .factory import notifier_from_settings
from .model import KINDS, Event, Severity
from .notifier import ChannelOutcome, DeliveryReport, FlushReport, Notifier, Status
from .retry import RetryPolicy

__all__ = [
    "KINDS",
    "ChannelOutcome",
    "DeliveryReport",
    "Event",
    "FlushReport",
    "Notifier",
    "RetryPolicy",
    "Severity",
    "Status",
    "notifier_from_settings",
]

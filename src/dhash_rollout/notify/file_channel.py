"""The "file" channel: the notification itself as a line of the notification log.

It needs no network and no credentials, so it is every environment's default and the place a
message still lands when every webhook is down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .file_log import NotificationLog
from .model import Event


@dataclass(frozen=True)
class FileChannel:
    log: NotificationLog
    name: str = "file"

    def render(self, event: Event) -> dict[str, Any]:
        return self.log.record(event, self.name, "sent")

    def deliver(self, payload: dict[str, Any], seconds_left: float) -> str:
        return str(self.log.append(payload))

    def secret_values(self) -> tuple[str, ...]:
        return ()

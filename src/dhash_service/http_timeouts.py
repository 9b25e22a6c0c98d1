"""uvicorn's h11 protocol with a header deadline: a connection gets its request's headers in
within ``DHASH_HEADER_TIMEOUT_SECONDS`` of opening (or of its previous response), or is closed.

uvicorn's ``timeout_keep_alive`` only covers a connection that sends nothing at all: any byte
resets it, so 400 connections trickling a header one byte at a time were held for a minute. The
deadline here is not reset by data; it is disarmed only when h11 has a complete request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def header_deadline_protocol(seconds: float) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass with this header deadline (uvicorn's ``http=`` accepts one)."""

    class HeaderDeadlineProtocol(H11Protocol):
        header_timeout = seconds

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None
            self._armed_for: object = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._armed_for = self.cycle
            self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            idle = self.cycle is None or self.cycle.response_complete
            if idle and self.cycle is self._armed_for and not self.transport.is_closing():
                self.transport.close()  # no complete request arrived in time

        def handle_events(self) -> None:
            super().handle_events()
            if self._header_timer is not None and self.cycle is not self._armed_for:
                self._disarm()  # a request's headers are in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this keep-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol

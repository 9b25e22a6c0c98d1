"""Limits on every request body, enforced before any route reads it.

Pure ASGI, inside the request-context middleware, so refusals are logged and counted like any
answer:

* ``Content-Length`` together with ``Transfer-Encoding`` is refused with 400: a proxy and this
  server could disagree about where the body ends (request smuggling, RFC 9112 section 6.1);
* a body that is not an upload (``UPLOAD_PATHS``) may be at most ``DHASH_MAX_JSON_BYTES``; past it
  the answer is 413, counted while the body streams (uploads have their own, larger limit);
* a body must arrive within ``DHASH_BODY_READ_TIMEOUT_SECONDS`` plus its length at
  ``MIN_BODY_RATE``; a stalled or trickled body is answered 408 and the connection closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dhash_service.api.errors import REQUEST_ID_KEY, error_response
from dhash_service.errors import InputError, InputTooLarge

UPLOAD_PATHS = frozenset({"/v1/images", "/v1/hash"})
# After the first read timeout a body must keep coming at least this fast (like Apache's
# mod_reqtimeout MinRate): 64 MiB at 64 KiB/s is 17 minutes, a byte every 0.3 s is cut off.
MIN_BODY_RATE = 64 * 1024


class RequestTimeout(InputError):
    http_status = 408
    code = "request_timeout"


class AmbiguousLength(InputError):
    http_status = 400
    code = "ambiguous_length"


class BodyLimitsMiddleware:
    def __init__(self, app: ASGIApp, *, max_json_bytes: int, read_timeout: float) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names = {name.lower() for name, _ in scope.get("headers", ())}
        try:
            if b"content-length" in names and b"transfer-encoding" in names:
                raise AmbiguousLength(
                    "a request may not carry both Content-Length and Transfer-Encoding"
                )
            if scope.get("path") in UPLOAD_PATHS:
                body_receive = self._timed(receive)  # the upload route counts its own limit
            else:
                body_receive = await self._buffered(scope, receive)
        except InputError as err:
            request_id = scope.get("state", {}).get(REQUEST_ID_KEY)
            await error_response(err, request_id)(scope, receive, send)
            return
        await self.app(scope, body_receive, send)

    def _deadline(self) -> Callable[[int], float]:
        """When the body must have arrived up to ``received`` bytes: the read timeout, plus the
        time those bytes take at ``MIN_BODY_RATE`` (a body trickled a byte at a time runs out)."""
        started = time.monotonic()
        return lambda received: started + self.read_timeout + received / MIN_BODY_RATE

    async def _receive_within(self, receive: Receive, deadline: float) -> Message:
        with anyio.move_on_after(max(deadline - time.monotonic(), 0.0)) as waited:
            message = await receive()
        if waited.cancelled_caught:
            raise RequestTimeout(
                f"the request body did not arrive in time (it stalled, or came slower than "
                f"{MIN_BODY_RATE // 1024} KiB/s after the first {self.read_timeout:g} s)",
                detail={
                    "body_read_timeout_seconds": self.read_timeout,
                    "min_bytes_per_second": MIN_BODY_RATE,
                },
            )
        return message

    def _timed(self, receive: Receive) -> Receive:
        complete = False
        received = 0
        deadline = self._deadline()

        async def timed_receive() -> Message:
            nonlocal complete, received
            if complete:  # the body is in: what is left is waiting for a disconnect
                return await receive()
            message = await self._receive_within(receive, deadline(received))
            received += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return timed_receive

    async def _buffered(self, scope: Scope, receive: Receive) -> Receive:
        """Read a small body whole (bounded in size and time), then replay it to the app."""
        limit = self.max_json_bytes
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        received = 0
        deadline = self._deadline()
        while True:
            message = await self._receive_within(receive, deadline(received))
            if message["type"] != "http.request":
                return _replay([message], receive)
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                body: Message = {"type": "http.request", "body": b"".join(chunks)}
                return _replay([body], receive)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay_receive() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay_receive


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> InputTooLarge:
    return InputTooLarge(
        f"request body is larger than the limit of {limit} bytes",
        detail={"max_json_bytes": limit},
    )

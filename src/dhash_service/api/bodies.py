"""Limits on every request body, enforced before any route reads it.

Pure ASGI, inside the request-context middleware, so refusals are logged and counted like any
answer:

* ``Content-Length`` together with ``Transfer-Encoding`` is refused with 400: a proxy and this
  server could disagree about where the body ends (request smuggling, RFC 9112 section 6.1);
* a body that is not an upload (``UPLOAD_PATHS``) may be at most ``DHASH_MAX_JSON_BYTES``; past it
  the answer is 413, counted while the body streams (uploads have their own, larger limit);
* each piece of a body must arrive within ``DHASH_BODY_READ_TIMEOUT_SECONDS``; a stalled or
  trickled body is answered 408 and the connection closed.
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dhash_service.api.errors import REQUEST_ID_KEY, error_response
from dhash_service.errors import InputError, InputTooLarge

UPLOAD_PATHS = frozenset({"/v1/images", "/v1/hash"})


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

    async def _receive_within(self, receive: Receive) -> Message:
        with anyio.move_on_after(self.read_timeout) as waited:
            message = await receive()
        if waited.cancelled_caught:
            raise RequestTimeout(
                f"the request body stalled for more than {self.read_timeout:g} s",
                detail={"body_read_timeout_seconds": self.read_timeout},
            )
        return message

    def _timed(self, receive: Receive) -> Receive:
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:  # the body is in: what is left is waiting for a disconnect
                return await receive()
            message = await self._receive_within(receive)
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
        while True:
            message = await self._receive_within(receive)
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

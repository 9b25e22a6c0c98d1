"""The HTTP/1.1 connection: uvicorn's httptools protocol (the llhttp parser, in C) with the
bounds a connection needs before any request reaches the app.

* **Header deadline.** A connection gets its request's headers in within
  ``DHASH_HEADER_TIMEOUT_SECONDS`` of opening (or of its previous response), or is closed.
  uvicorn's ``timeout_keep_alive`` only covers a connection that sends nothing at all: any byte
  resets it, so 400 connections trickling a header one byte at a time were held for a minute.
  The deadline here is not reset by data; it is disarmed only when the headers are complete.
* **Header size.** The URL and the header names and values together may be at most
  :data:`MAX_HEADER_BYTES` (h11's limit, which this protocol replaced); past it the answer is
  431 and the connection is closed. Each header is counted as the parser completes it, and
  httptools keeps an unfinished one in memory, so the bytes of a request whose headers are not
  complete are counted as they arrive too: a connection holds at most the limit plus one read.
* **Malformed requests** are answered 400 with the service's JSON error body naming what the
  parser refused (uvicorn answers a plain "Invalid HTTP request received."). llhttp is strict:
  ``Content-Length`` with ``Transfer-Encoding`` (request smuggling, RFC 9112 section 6.1) is
  refused here as ``ambiguous_length``, the code ``BodyLimitsMiddleware`` gives it behind any
  other server; so are a repeated ``Content-Length``, bad header tokens and a bad
  ``Transfer-Encoding``.

Why httptools rather than uvicorn's pure-Python h11: the worker CPU of every request (the
parse of an upload's body above all), measured in bench/RESULTS.md ("HTTP stack").
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dhash_service.api.bodies import AmbiguousLength
from dhash_service.api.errors import error_body
from dhash_service.errors import DhashError, InputError
from dhash_service.logs import get_logger

log = get_logger(__name__)

MAX_HEADER_BYTES = 16 * 1024
# llhttp's reason for a request that carries both lengths.
_BOTH_LENGTHS = "Transfer-Encoding can't be present with Content-Length"


class MalformedRequest(InputError):
    http_status = 400
    code = "malformed_request"


class HeaderTooLarge(InputError):
    http_status = 431
    code = "header_too_large"


def refusal(reason: str) -> DhashError:
    """The error a parser refusal is answered with (``reason``: llhttp's message)."""
    if reason == _BOTH_LENGTHS:
        return AmbiguousLength("a request may not carry both Content-Length and Transfer-Encoding")
    return MalformedRequest(f"malformed HTTP request: {reason}")


def bounded_protocol(
    header_timeout: float, max_header_bytes: int = MAX_HEADER_BYTES
) -> type[HttpToolsProtocol]:
    """An ``HttpToolsProtocol`` subclass with these bounds (uvicorn's ``http=`` accepts one)."""

    class BoundedHttpProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None
            self._armed_for: object = None
            self._awaiting_headers = True
            self._header_bytes = 0  # raw bytes read while the headers are not complete
            self._header_fields = 0  # URL, names and values the parser has completed
            self._requests = 0  # header blocks completed on this connection

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._armed_for = self.cycle
            self._header_timer = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            idle = self.cycle is None or self.cycle.response_complete
            if idle and self.cycle is self._armed_for and not self.transport.is_closing():
                self.transport.close()  # no complete request arrived in time

        def data_received(self, data: bytes) -> None:
            # uvicorn's data_received, with the parser's reason kept and the header bytes counted
            waiting, requests = self._awaiting_headers, self._requests
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raised = exc.__context__  # what a callback of ours raised (HeaderTooLarge)
                self._refuse(raised if isinstance(raised, DhashError) else refusal(str(exc)))
                return
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return
            if waiting and self._requests == requests:  # all of this read was (unfinished) headers
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes:
                    self._refuse(self._too_large())

        def _too_large(self) -> HeaderTooLarge:
            return HeaderTooLarge(
                f"the URL and headers are larger than {max_header_bytes} bytes",
                detail={"max_header_bytes": max_header_bytes},
            )

        def _count(self, size: int) -> None:
            self._header_fields += size
            if self._header_fields > max_header_bytes:
                raise self._too_large()  # feed_data raises it as HttpParserCallbackError

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_fields = 0

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            self._count(len(url))

        def on_header(self, name: bytes, value: bytes) -> None:
            super().on_header(name, value)
            self._count(len(name) + len(value))

        def on_headers_complete(self) -> None:
            self._requests += 1
            self._awaiting_headers = False
            self._header_bytes = 0
            self._disarm()  # a request's headers are in
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._awaiting_headers = True  # what comes next is the next request's

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this keep-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self._refuse(MalformedRequest(msg))

        def _refuse(self, err: DhashError) -> None:
            """Answer ``err`` in the service's JSON shape and close: the parser cannot go on."""
            self._disarm()
            log.warning(
                "request.refused",
                status=err.http_status,
                error=err.code,
                message=err.message,
                client=(self.client or (None,))[0],
            )
            body = json.dumps(error_body(err, None)).encode()
            head = (
                f"HTTP/1.1 {err.http_status} {_REASONS.get(err.http_status, 'Error')}\r\n"
                "content-type: application/json\r\n"
                f"content-length: {len(body)}\r\n"
                "connection: close\r\n\r\n"
            )
            self.transport.write(head.encode("ascii") + body)
            self.transport.close()

    return BoundedHttpProtocol


_REASONS = {400: "Bad Request", 431: "Request Header Fields Too Large"}

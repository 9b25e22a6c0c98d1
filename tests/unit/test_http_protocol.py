"""The connection bounds of ``dhash_service.http_protocol``, fed byte strings in process: the
split of a request into reads is chosen here, which a socket test cannot do."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from dhash_service.http_protocol import MAX_HEADER_BYTES, bounded_protocol, refusal


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1234), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Echo:
    """An ASGI app that reads the whole body and answers its length."""

    def __init__(self, delay: float = 0.0) -> None:
        self.bodies: list[int] = []
        self.delay = delay

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.bodies.append(size)
        await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


def serve(
    reads: list[bytes], *, header_timeout: float = 5.0, settle: float = 0.0, delay: float = 0.0
) -> tuple[FakeTransport, Echo]:
    """Feed ``reads`` to one connection, one ``data_received`` each, and let the app run
    (answering after ``delay``)."""
    app = Echo(delay)

    async def run() -> FakeTransport:
        config = uvicorn.Config(app, loop="asyncio", log_config=None, access_log=False)
        config.load()
        protocol = bounded_protocol(header_timeout)(config, ServerState(), {})
        transport = FakeTransport()
        protocol.connection_made(transport)
        for data in reads:
            if transport.closed:
                break
            protocol.data_received(data)
            await asyncio.sleep(0)
        await asyncio.sleep(settle or 0.05)
        return transport

    return asyncio.run(run()), app


def post(body: bytes) -> bytes:
    return b"POST /v1/hash HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def test_a_whole_request_in_one_read_is_not_counted_as_header_bytes() -> None:
    body = b"x" * (8 * MAX_HEADER_BYTES)
    transport, app = serve([post(body)])
    assert transport.written.startswith(b"HTTP/1.1 200"), transport.written[:200]
    assert app.bodies == [len(body)]


def test_headers_within_the_limit_pass_when_they_arrive_in_pieces() -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES - 500)
    request = head + b"\r\n\r\n"
    transport, _ = serve([request[i : i + 1000] for i in range(0, len(request), 1000)])
    assert transport.written.startswith(b"HTTP/1.1 200"), transport.written[:200]


@pytest.mark.parametrize("complete", [True, False], ids=["complete", "unfinished"])
def test_headers_past_the_limit_are_431_and_the_connection_closed(complete: bool) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 100)
    request = head + (b"\r\n\r\n" if complete else b"")
    transport, app = serve([request[i : i + 4096] for i in range(0, len(request), 4096)])
    assert transport.written.startswith(b"HTTP/1.1 431"), transport.written[:200]
    assert b'"header_too_large"' in transport.written and transport.closed
    assert app.bodies == []


def test_many_headers_each_small_count_together() -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 100) for n in range(MAX_HEADER_BYTES // 100))
    transport, _ = serve([b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"])
    assert transport.written.startswith(b"HTTP/1.1 431"), transport.written[:200]


@pytest.mark.parametrize(
    ("reason", "code", "status"),
    [
        ("Transfer-Encoding can't be present with Content-Length", "ambiguous_length", 400),
        ("Duplicate Content-Length", "malformed_request", 400),
        ("Invalid header token", "malformed_request", 400),
    ],
)
def test_a_parser_refusal_keeps_its_reason(reason: str, code: str, status: int) -> None:
    err = refusal(reason)
    assert (err.code, err.http_status) == (code, status)
    assert code == "ambiguous_length" or reason in err.message


def test_both_lengths_are_refused_by_the_parser_as_ambiguous_length() -> None:
    request = (
        b"POST /v1/review/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    transport, app = serve([request])
    assert transport.written.startswith(b"HTTP/1.1 400"), transport.written[:200]
    assert b'"ambiguous_length"' in transport.written and transport.closed
    assert app.bodies == []


def test_the_header_deadline_closes_a_connection_that_keeps_trickling() -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n"
    transport, _ = serve([head], header_timeout=0.05, settle=0.2)
    assert transport.closed and transport.written == b""


def test_a_request_whose_headers_came_in_time_is_answered_however_long_the_app_takes() -> None:
    transport, _ = serve([post(b"abc")], header_timeout=0.05, settle=0.3, delay=0.15)
    assert transport.written.startswith(b"HTTP/1.1 200"), transport.written[:200]
    # re-armed for the next request on the keep-alive connection, which never came
    assert transport.closed

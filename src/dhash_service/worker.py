"""One `dhash serve` worker process: its own SO_REUSEPORT listener, the app, and a drain on SIGTERM.

Each worker binds its *own* listening socket to the shared port. The kernel then spreads new
connections evenly over the workers (by connection hash); with one socket shared by all, the
worker whose event loop wakes first accepts a whole burst and keeps those keep-alive connections,
and the others idle (measured: 85% / 15% of requests over 32 connections).

A worker listens only once it can serve: the app starts (lifespan), then the worker waits until
the schema fits and the index is loaded, and only then does uvicorn call ``listen()``. Until that
moment the socket is bound but not in the port's SO_REUSEPORT group, so the kernel never hands a
connection to a worker that would have to answer 503 (during a deploy the old instance, or this
instance's other workers, take them all). A worker that cannot get ready (database down) logs why
every ``WAITING_LOG_SECONDS`` and keeps trying; SIGTERM while waiting exits without listening.

SIGTERM does not stop the worker at once: ``/ready`` turns 503 while it keeps serving for
``DHASH_SHUTDOWN_DRAIN_SECONDS``, then uvicorn's graceful shutdown stops accepting and gives the
requests in flight the rest of ``DHASH_SHUTDOWN_GRACE_SECONDS``; a second before it ends, the
extractions still queued or running are abandoned and answered 503, so every request the worker
accepted gets an answer. A second SIGTERM skips the rest
of the drain; SIGINT (Ctrl-C in a terminal) shuts down without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from dhash_service.api.app import create_app
from dhash_service.api.deps import app_context
from dhash_service.api.lifecycle import Lifecycle
from dhash_service.config import Settings
from dhash_service.errors import ConfigError, DhashError
from dhash_service.http_protocol import bounded_protocol
from dhash_service.logs import configure_logging, get_logger

log = get_logger(__name__)

# How long a connection accepted right before the listener closed gets to send its request.
ACCEPTED_REQUEST_WAIT_SECONDS = 0.25
# Before the graceful shutdown's timeout, queued and running extractions are abandoned (503), so
# every accepted request is answered with this much time left to write the answers.
ABANDON_MARGIN_SECONDS = 1.0
# Time a worker needs after its graceful shutdown to stop the service and exit.
EXIT_MARGIN_SECONDS = 0.5
READY_POLL_SECONDS = 0.05
WAITING_LOG_SECONDS = 10.0


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound with ``SO_REUSEPORT`` (and ``SO_REUSEADDR``); not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the listener
    # says TCP, and without it every keep-alive response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _StartedLifespan:
    """Stands in for the app's lifespan, already started, while uvicorn creates the listener."""

    def __init__(self, started: Any) -> None:
        self.state = started.state
        self.should_exit = False

    async def startup(self) -> None:
        return None


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but it listens only when ready and SIGTERM drains first (module doc)."""

    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Lifecycle,
        drain_seconds: float,
        ready: Callable[[], bool] = lambda: True,
        abandon: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_seconds = drain_seconds
        self.ready = ready
        self.abandon = abandon
        self._drain_timer: threading.Timer | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        app_lifespan = self.lifespan
        await app_lifespan.startup()
        if app_lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        if not await self._until_ready():  # told to stop before it could serve: never listen
            self.should_exit = True
            if self._drain_timer is not None:
                self._drain_timer.cancel()
            await app_lifespan.shutdown()
            log.info("worker.stopped_before_ready")
            return
        self.lifespan = _StartedLifespan(app_lifespan)
        try:
            await super().startup(sockets)  # creates the servers: listen() happens here
        finally:
            self.lifespan = app_lifespan

    async def _until_ready(self) -> bool:
        """Wait until ``ready()``; False when asked to stop first."""
        started = last_log = time.monotonic()
        if not self.ready():
            log.info("worker.waiting_until_ready", effect="not listening until the index is loaded")
        while not self.ready():
            if self.should_exit or self.lifecycle.draining:
                return False
            if time.monotonic() - last_log >= WAITING_LOG_SECONDS:
                last_log = time.monotonic()
                log.warning("worker.not_ready_yet", waited_seconds=round(last_log - started, 1))
            await asyncio.sleep(READY_POLL_SECONDS)
        log.info("worker.listening", waited_seconds=round(time.monotonic() - started, 2))
        return True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, then let connections accepted just before deliver their request.

        uvicorn closes every connection without a request in progress right after it stops
        listening, so a client whose connection was accepted a moment earlier (its request still
        in flight) sees "disconnected without a response". Waiting briefly turns those into
        in-flight requests, which the graceful shutdown then finishes."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        grace = self.config.timeout_graceful_shutdown
        abandoning = None
        if self.abandon is not None and grace is not None:
            abandoning = asyncio.get_running_loop().call_later(
                max(grace - ABANDON_MARGIN_SECONDS, 0.0), self.abandon
            )
        await asyncio.sleep(ACCEPTED_REQUEST_WAIT_SECONDS)
        try:
            await super().shutdown(sockets)  # closing again is a no-op
        finally:
            if abandoning is not None:
                abandoning.cancel()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self.lifecycle.draining and self.drain_seconds > 0:
            self.lifecycle.begin_drain()
            log.info("shutdown.draining", drain_seconds=self.drain_seconds)
            self._drain_timer = threading.Timer(self.drain_seconds, self._stop, args=(sig,))
            self._drain_timer.daemon = True
            self._drain_timer.start()
            return
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self.lifecycle.begin_drain()
        super().handle_exit(sig, frame)

    def _stop(self, sig: int) -> None:
        super().handle_exit(sig, None)


FAILURE_DIR_ENV = "DHASH_WORKER_FAILURE_DIR"


def report_start_failure(exc: BaseException) -> None:
    """Leave the exception for the supervising parent, which names it in its own error (the
    operator's console and the deploy notice), not "see the log lines above" (issue 12)."""
    directory = os.environ.get(FAILURE_DIR_ENV)
    if not directory:
        return
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    with contextlib.suppress(OSError):
        Path(directory, f"start-failure-{os.getpid()}.txt").write_text(text, encoding="utf-8")


def run_worker(host: str, port: int) -> None:
    """Process entry point (spawned by ``dhash_service.server``); settings come from the env."""
    try:
        settings = Settings()
        configure_logging(settings.log_level)
        lifecycle = Lifecycle()
        app = create_app(settings, lifecycle=lifecycle)
        sock = bind_socket(host, port)
    except Exception as exc:  # the supervisor stops, rather than restart this in a loop
        log.error("worker.start_failed", error=str(exc), exc_info=not isinstance(exc, DhashError))
        report_start_failure(exc)
        sys.exit(STARTUP_FAILURE)
    grace = settings.shutdown_grace_seconds
    drain = settings.shutdown_drain_seconds
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,  # our middleware writes one JSON line per request
        server_header=False,
        http=bounded_protocol(settings.header_timeout_seconds),
        loop="asyncio",  # explicit: "auto" would switch to uvloop whenever it is installed
        timeout_keep_alive=5,
        # annotated int, used as asyncio.wait_for's float timeout
        # What is left of the grace after the drain, the wait for just-accepted requests and the
        # time the process needs to stop, so the worker exits before the supervisor must kill it.
        timeout_graceful_shutdown=max(  # type: ignore[arg-type]
            grace - drain - ACCEPTED_REQUEST_WAIT_SECONDS - EXIT_MARGIN_SECONDS, 0.1
        ),
    )
    ctx = app_context(app)
    service = ctx.service
    DrainingServer(
        config,
        lifecycle,
        drain,
        ready=lambda: service.serving,
        abandon=ctx.admission.abandon_all,
    ).run(sockets=[sock])

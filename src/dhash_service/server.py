"""Run the API: a supervising parent and N uvicorn worker processes on one pre-bound socket.

* The socket is bound with ``SO_REUSEPORT``, so during a deploy a second instance can bind the same
  port and both accept until the old one leaves: the kernel spreads new connections over them.
* The parent is uvicorn's own ``Multiprocess`` supervisor (restarts a worker that dies, pings the
  hung ones), used even for one worker so that every run behaves the same way.
* prometheus_client's multiprocess mode is always on, in a fresh temporary directory per run, so
  ``/metrics`` is exact whichever worker answers and counts survive a worker restart.
* SIGTERM (to the parent, which passes it to every worker) drains: ``/ready`` answers 503 at once
  while the worker keeps serving for ``DHASH_SHUTDOWN_DRAIN_SECONDS``; then it stops accepting and
  in-flight requests get the rest of ``DHASH_SHUTDOWN_GRACE_SECONDS`` to finish. A worker still
  alive after the grace period is killed, so the whole run ends within it.

Workers read their settings from the environment they inherit (``Settings()``), like any
``dhash`` command; only host, port and worker count are taken from the command line.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from dhash_service.api.app import create_app, extraction_slots
from dhash_service.api.lifecycle import Lifecycle
from dhash_service.config import Settings
from dhash_service.errors import ConfigError, DhashError
from dhash_service.logs import configure_logging, get_logger
from dhash_service.service import DhashService

log = get_logger(__name__)

WORKER_APP = "dhash_service.server:worker_app"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKERS_ENV = "DHASH_WORKERS"
# After the grace period a worker gets this long to die from SIGKILL before we stop waiting.
KILL_WAIT_SECONDS = 5.0


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound with ``SO_REUSEPORT`` (and ``SO_REUSEADDR``), inheritable by workers."""
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
    sock.set_inheritable(True)
    return sock


def _drain_on_sigterm(lifecycle: Lifecycle, drain_seconds: float) -> None:
    """Make SIGTERM mark the worker draining, then hand over to uvicorn's own shutdown.

    Called while uvicorn serves (its handler is installed), in the worker's main thread. A second
    SIGTERM skips the rest of the drain.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    uvicorn_exit = signal.getsignal(signal.SIGTERM)
    if not callable(uvicorn_exit):
        return
    exit_handler = uvicorn_exit
    timers: list[threading.Timer] = []

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        if lifecycle.draining:
            for timer in timers:
                timer.cancel()
            exit_handler(sig, frame)
            return
        lifecycle.begin_drain()
        log.info("shutdown.draining", drain_seconds=drain_seconds, pid=os.getpid())
        timer = threading.Timer(drain_seconds, exit_handler, args=(sig, None))
        timer.daemon = True
        timers.append(timer)
        timer.start()

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_app() -> FastAPI:
    """uvicorn app factory, run in each worker process.

    A worker that cannot build its app exits with uvicorn's start-up failure code, which makes
    the supervisor stop instead of restarting it in a loop.
    """
    try:
        settings = Settings()
        configure_logging(settings.log_level)
        lifecycle = Lifecycle()
        app = create_app(settings, lifecycle=lifecycle)
    except Exception as exc:
        log.error("worker.start_failed", error=str(exc), exc_info=not isinstance(exc, DhashError))
        sys.exit(STARTUP_FAILURE)
    _drain_on_sigterm(lifecycle, settings.shutdown_drain_seconds)
    return app


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, but it stops waiting for workers when the grace period is over."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], grace: float) -> None:
        super().__init__(config, sockets)
        self.grace = grace

    def _release_socket(self) -> None:
        """Drop the parent's copy of the listener: it then leaves the port when the workers do.

        With ``SO_REUSEPORT`` the kernel keeps sending connections to any open listener; one kept
        open by the parent but accepted by no one would strand them until the parent exits.
        """
        for sock in self.sockets:
            sock.close()

    def handle_term(self) -> None:
        self._release_socket()
        super().handle_term()

    def handle_int(self) -> None:
        self._release_socket()
        super().handle_int()

    def join_all(self) -> None:
        deadline = time.monotonic() + self.grace
        for worker in self.processes:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                log.error("shutdown.worker_killed", pid=worker.pid, grace_seconds=self.grace)
                worker.process.kill()
                worker.process.join(KILL_WAIT_SECONDS)

    @property
    def startup_failed(self) -> bool:
        return any(worker.exitcode == STARTUP_FAILURE for worker in self.processes)


def _timeouts(settings: Settings) -> tuple[float, float]:
    grace = settings.shutdown_grace_seconds
    drain = settings.shutdown_drain_seconds
    if grace <= 0 or drain < 0 or drain >= grace:
        raise ConfigError(
            "need 0 <= DHASH_SHUTDOWN_DRAIN_SECONDS < DHASH_SHUTDOWN_GRACE_SECONDS, got "
            f"drain={drain} grace={grace}"
        )
    return grace, drain


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; raises ``DhashError`` when the workers cannot start."""
    host = host or settings.host
    port = settings.port if port is None else port
    workers = workers or settings.workers
    if workers < 1:
        raise ConfigError(f"need at least one worker, got {workers}")
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be 0..65535, got {port}")
    grace, drain = _timeouts(settings)
    configure_logging(settings.log_level)
    DhashService(settings)  # refuses bad settings here, not in a restart loop of workers
    extraction_slots(settings)
    sock = bind_socket(host, port)
    metrics_dir = tempfile.mkdtemp(prefix="dhash-metrics-")
    previous = {name: os.environ.get(name) for name in (MULTIPROC_ENV, WORKERS_ENV)}
    os.environ[MULTIPROC_ENV] = metrics_dir  # before any worker imports prometheus_client
    os.environ[WORKERS_ENV] = str(workers)  # so each worker knows its share of the CPUs
    try:
        config = uvicorn.Config(
            WORKER_APP,
            factory=True,
            host=host,
            port=sock.getsockname()[1],
            workers=workers,
            log_config=None,
            access_log=False,  # our middleware writes one JSON line per request
            server_header=False,
            # annotated int, used as asyncio.wait_for's float timeout
            timeout_graceful_shutdown=max(grace - drain, 0.1),  # type: ignore[arg-type]
        )
        supervisor = _Supervisor(config, [sock], grace)
        log.info(
            "service.listening",
            host=host,
            port=sock.getsockname()[1],
            workers=workers,
            pid=os.getpid(),
        )
        supervisor.run()
        if supervisor.startup_failed:
            raise DhashError("a worker failed to start; see the log lines above")
        log.info("service.exited", pid=os.getpid())
    finally:
        sock.close()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(metrics_dir, ignore_errors=True)

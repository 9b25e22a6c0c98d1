"""Run the API: a supervising parent and N worker processes, each listening on the shared port.

* Every socket is bound with ``SO_REUSEPORT``: each worker has its own listener on the port (the
  kernel spreads connections evenly over them, see ``dhash_service.worker``), and during a deploy
  a second instance can bind the same port too; both accept until the old one leaves. The parent
  binds first, without listening, to refuse a taken port at once and to fix an ephemeral port.
* The parent restarts a worker that dies; one that cannot start (bad settings, app that fails to
  build or to start up) stops the whole run with an error instead of a restart loop.
* prometheus_client's multiprocess mode is always on, in a fresh temporary directory per run, so
  ``/metrics`` is exact whichever worker answers and counts survive a worker restart.
* SIGTERM to the parent is passed to every worker, which drains (``/ready`` 503 while still
  serving), stops accepting and lets in-flight requests finish; a worker still alive when
  ``DHASH_SHUTDOWN_GRACE_SECONDS`` is over is killed, so the run ends within it, and the run
  then exits non-zero (``DhashError``) to say it had to kill.

Workers read their settings from the environment they inherit (``Settings()``), like any
``dhash`` command; only host, port and worker count are taken from the command line.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from uvicorn.config import STARTUP_FAILURE

from dhash_service.api.app import extraction_slots
from dhash_service.config import Settings
from dhash_service.errors import ConfigError, DhashError
from dhash_service.logs import configure_logging, get_logger
from dhash_service.service import DhashService
from dhash_service.worker import FAILURE_DIR_ENV, bind_socket, run_worker

log = get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKERS_ENV = "DHASH_WORKERS"
POLL_SECONDS = 0.2
# After the grace period a worker gets this long to die from SIGKILL before we stop waiting.
KILL_WAIT_SECONDS = 5.0


class _Supervisor:
    """Starts the workers, replaces the ones that die, and stops them all on SIGTERM or SIGINT."""

    def __init__(self, host: str, port: int, workers: int, grace: float) -> None:
        self.host = host
        self.port = port
        self.count = workers
        self.grace = grace
        self.workers: list[BaseProcess] = []
        self.startup_failed = False
        self.startup_error: str | None = None  # the failed worker's exception, in one line
        self.failure_dir: Path | None = None  # where workers leave it (worker.py)
        self.killed: list[int] = []  # workers still alive at the end of the grace period
        self._stop_signal: int | None = None
        self._spawn_context = multiprocessing.get_context("spawn")

    def _spawn(self) -> BaseProcess:
        worker = self._spawn_context.Process(
            target=run_worker, args=(self.host, self.port), name="dhash-worker"
        )
        worker.start()
        return worker

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        self._stop_signal = sig

    def run(self) -> None:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.workers = [self._spawn() for _ in range(self.count)]
            log.info("workers.started", pids=[w.pid for w in self.workers])
            while self._stop_signal is None:
                time.sleep(POLL_SECONDS)
                self._replace_dead()
            log.info("shutdown.requested", signal=signal.Signals(self._stop_signal).name)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _replace_dead(self) -> None:
        for index, worker in enumerate(self.workers):
            if worker.exitcode is None or self._stop_signal is not None:
                continue
            if worker.exitcode == STARTUP_FAILURE:
                log.error("worker.start_failed", pid=worker.pid)
                self.startup_failed = True
                self.startup_error = self._start_failure_of(worker.pid)
                self._stop_signal = signal.SIGTERM
                return
            replacement = self._spawn()
            log.warning(
                "worker.replaced", pid=worker.pid, exitcode=worker.exitcode, new=replacement.pid
            )
            self.workers[index] = replacement

    def _start_failure_of(self, pid: int | None) -> str | None:
        if self.failure_dir is None or pid is None:
            return None
        try:
            return (self.failure_dir / f"start-failure-{pid}.txt").read_text(encoding="utf-8")
        except OSError:
            return None

    def _stop_all(self) -> None:
        for worker in self.workers:
            if worker.exitcode is None and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.exitcode is None:
                log.error("shutdown.worker_killed", pid=worker.pid, grace_seconds=self.grace)
                self.killed.append(worker.pid or 0)
                worker.kill()
                worker.join(KILL_WAIT_SECONDS)


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
    grace, _ = _timeouts(settings)
    configure_logging(settings.log_level)
    DhashService(settings)  # refuses bad settings here, not in a restart loop of workers
    extraction_slots(settings)
    reservation = bind_socket(host, port)  # a taken port fails here; port 0 becomes a real one
    port = reservation.getsockname()[1]
    metrics_dir = tempfile.mkdtemp(prefix="dhash-metrics-")
    previous = {
        name: os.environ.get(name) for name in (MULTIPROC_ENV, WORKERS_ENV, FAILURE_DIR_ENV)
    }
    os.environ[MULTIPROC_ENV] = metrics_dir  # before any worker imports prometheus_client
    os.environ[WORKERS_ENV] = str(workers)  # so each worker knows its share of the CPUs
    try:
        supervisor = _Supervisor(host, port, workers, grace)
        supervisor.failure_dir = Path(metrics_dir)
        os.environ[FAILURE_DIR_ENV] = metrics_dir
        log.info("service.listening", host=host, port=port, workers=workers, pid=os.getpid())
        supervisor.run()
        if supervisor.startup_failed:
            why = supervisor.startup_error or "its error is in the log lines above"
            raise DhashError(f"a worker failed to start: {why}")
        if supervisor.killed:
            # The exit code says the stop was not clean: requests may have been cut off.
            raise DhashError(
                f"{len(supervisor.killed)} worker(s) did not stop within the "
                f"{grace:g} s grace period and were killed"
            )
        log.info("service.exited", pid=os.getpid())
    finally:
        reservation.close()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(metrics_dir, ignore_errors=True)

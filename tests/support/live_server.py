"""Real HTTP servers for the API tests: the app under uvicorn in a thread, or `dhash serve`.

Both listen on 127.0.0.1 only, on a port the kernel picked, and are stopped by the context
manager even when the test fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

REPO = Path(__file__).resolve().parents[2]
DHASH = str(Path(sys.executable).parent / "dhash")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_app(app: FastAPI, *, start_timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` (lifespan included) in a thread; yields its base URL."""
    # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (see dhash_service.server).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def wait_ready(base_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{base_url}/ready", timeout=5)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise RuntimeError(f"{base_url} not ready after {timeout}s: {last}")


def wait_for_process(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    log: Callable[[], str],
) -> None:
    """Until ``ready()`` holds (a refused connection counts as not yet); the process exiting or
    the deadline passing is an error carrying its log."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited {process.returncode}:\n{log()}")
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready:\n{log()}")
        time.sleep(0.1)


@dataclass
class ServeProcess:
    """A `dhash serve` run: its process, URL and what it wrote to stderr."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)


def serve_env(settings: Mapping[str, str], tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHASH_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update({"DHASH_DATA_DIR": str(tmp / "data"), "DHASH_LOG_DIR": str(tmp / "logs")})
    env.update(settings)
    return env


def _pids_answering(url: str, tries: int = 20) -> set[int]:
    """Worker pids seen on fresh connections (a worker listens only once it is ready)."""
    pids = set()
    for _ in range(tries):
        answer = httpx.get(f"{url}/health", timeout=5, headers={"Connection": "close"})
        pids.add(int(answer.json()["pid"]))
    return pids


@contextmanager
def dhash_serve(
    settings: Mapping[str, str],
    tmp: Path,
    *,
    workers: int = 1,
    port: int | None = None,
    ready_timeout: float = 60.0,
    name: str = "serve",
) -> Iterator[ServeProcess]:
    """Start `dhash serve` with ``DHASH_*`` ``settings``; wait until ``/ready`` (and, with several
    workers, until each of them listens); stop it after."""
    port = port or free_port()
    log_path = tmp / f"{name}.log"
    env = serve_env(settings, tmp)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [DHASH, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = ServeProcess(process, port, log_path, env)
    try:
        wait_for_process(
            process,
            lambda: (
                httpx.get(f"{run.url}/ready", timeout=5).status_code == 200
                and (workers == 1 or len(_pids_answering(run.url)) >= workers)
            ),
            timeout=ready_timeout,
            what="dhash serve",
            log=run.log_text,
        )
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

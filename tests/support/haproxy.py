"""A real HAProxy (Debian's package) on 127.0.0.1 in front of small real HTTP backends.

``running_haproxy`` writes the project's generated config (one frontend, one backend whose
servers are health checked on ``/ready`` every 100 ms, a runtime API socket at admin level in the
test's temporary directory, the Prometheus exporter on a loopback port of its own); the process
is killed and waited for on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dhash_rollout.environments import ProxySettings
from dhash_rollout.targets.fleet.haproxy_config import CheckTiming, Server, render_config

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Backend:
    """A tiny HTTP server: ``/ready`` answers 200 while ``ready`` is set, any other path its
    name with ``status`` (200, or e.g. 500 for a host that fails every request)."""

    name: str
    ready: threading.Event = field(default_factory=threading.Event)
    hits: int = 0
    status: int = 200
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])


def _handler(backend: Backend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/ready":
                status = 200 if backend.ready.is_set() else 503
                body = b"ready" if status == 200 else b"not ready"
            else:
                backend.hits += 1
                status, body = backend.status, backend.name.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(ConnectionError):  # HAProxy's check hangs up early
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def backends(*names: str) -> Iterator[list[Backend]]:
    made: list[Backend] = []
    try:
        for name in names:
            backend = Backend(name)
            backend.ready.set()
            backend.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(backend))
            backend.server.daemon_threads = True
            threading.Thread(target=backend.server.serve_forever, daemon=True).start()
            made.append(backend)
        yield made
    finally:
        for backend in made:
            if backend.server is not None:
                backend.server.shutdown()
                backend.server.server_close()


@dataclass(frozen=True)
class Proxy:
    runtime_api: str
    url: str
    backend: str
    process: subprocess.Popen[bytes]
    metrics_address: str  # HAProxy's own Prometheus exporter (its stats frontend)

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_address}/metrics"


def config_text(
    socket_path: Path,
    port: int,
    servers: list[tuple[str, str, int]],
    backend: str = "dhash",
    check_timeout: str | None = None,
    *,
    metrics_port: int | None = None,
) -> str:
    """The project's generated haproxy.cfg (targets/fleet/haproxy_config.py) with test-speed
    checks: every 100 ms, and without ``check_timeout`` a check must answer within that (a
    real service on a busy box needs one)."""
    proxy = ProxySettings(
        runtime_api=str(socket_path),
        backend=backend,
        metrics_address=f"127.0.0.1:{metrics_port}" if metrics_port else None,
    )
    return render_config(
        proxy,
        [Server(n, a, p) for n, a, p in servers],
        bind=f"127.0.0.1:{port}",
        checks=CheckTiming(inter="100ms", fall=2, rise=2, timeout=check_timeout),
    )


def _accepts(path: Path) -> bool:
    """True once a connection to the unix socket at ``path`` is accepted."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:  # not there yet, or bound but not listening (ECONNREFUSED)
        return False
    finally:
        probe.close()
    return True


@contextmanager
def running_haproxy(
    tmp: Path,
    servers: list[tuple[str, str, int]],
    backend: str = "dhash",
    check_timeout: str | None = None,
) -> Iterator[Proxy]:
    sock = tmp / "haproxy.sock"
    port, metrics_port = free_port(), free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(
        config_text(sock, port, servers, backend, check_timeout, metrics_port=metrics_port)
    )
    check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(cfg)], capture_output=True, check=False)
    assert check.returncode == 0, check.stderr.decode()
    log = tmp / "haproxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 10
        while not _accepts(sock):  # the file appears at bind(), before haproxy listens on it
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "haproxy did not open its runtime socket"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        yield Proxy(str(sock), url, backend, process, f"127.0.0.1:{metrics_port}")
    finally:
        process.kill()
        process.wait(timeout=10)

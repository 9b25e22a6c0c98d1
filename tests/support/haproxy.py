"""A real HAProxy (Debian's package) on 127.0.0.1 in front of small real HTTP backends.

``running_haproxy`` writes a config with one frontend, one backend whose servers are health
checked on ``/ready`` every 100 ms, and a runtime API socket at admin level in the test's
temporary directory; the process is killed and waited for on exit.
"""

from __future__ import annotations

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

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Backend:
    """A tiny HTTP server: ``/ready`` answers 200 while ``ready`` is set, ``/`` its name."""

    name: str
    ready: threading.Event = field(default_factory=threading.Event)
    hits: int = 0
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
                status, body = 200, backend.name.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
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


def config_text(
    socket_path: Path,
    port: int,
    servers: list[tuple[str, str, int]],
    backend: str = "dhash",
    check_timeout: str | None = None,
) -> str:
    lines = [
        "global",
        f"    stats socket {socket_path} mode 600 level admin",
        "    stats timeout 10s",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 10s",
        "    timeout server 10s",
        "    retries 2",
        "    option redispatch",
        "frontend web",
        f"    bind 127.0.0.1:{port}",
        f"    default_backend {backend}",
        f"backend {backend}",
        "    balance roundrobin",
        "    option httpchk GET /ready",
        "    default-server inter 100ms fall 2 rise 2",
    ]
    if check_timeout:  # else a check must answer within `inter` (a real service on a busy box)
        lines.append(f"    timeout check {check_timeout}")
    lines += [f"    server {n} {a}:{p} check weight 100" for n, a, p in servers]
    return "\n".join(lines) + "\n"


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
    port = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(config_text(sock, port, servers, backend, check_timeout))
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
        yield Proxy(str(sock), f"http://127.0.0.1:{port}", backend, process)
    finally:
        process.kill()
        process.wait(timeout=10)

"""HAProxy's runtime API: the fleet's drain, ready and weight, and what the proxy sees.

The runtime API is the stats socket bound at ``level admin`` (a unix socket, or ``ipv4@`` for
TCP). Each command here is one connection in non-interactive mode: the line is sent, HAProxy
answers and closes (HAProxy management guide, "Unix Socket commands"). The commands used:

- ``set server <backend>/<server> state ready|drain|maint``: ``drain`` keeps the server's
  current sessions but sends it no new ones; its health checks go on, so ``ready`` puts it
  back as soon as it is up;
- ``set server <backend>/<server> weight <n>``: the share of new connections (the canary's
  traffic share on a fleet);
- ``show stat``: the CSV of every proxy and server (``svname``, ``status``, ``weight``,
  ``scur`` current sessions, ``check_status``), read to wait for a drain to finish and for a
  server to be UP again, and by ``dhash release status``.

A command HAProxy refuses answers with a message (``No such server.``) where a successful
``set`` answers nothing; the message becomes a :class:`ProxyError` naming the command.
"""

from __future__ import annotations

import csv
import io
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from dhash_service.errors import DhashError

AdminState = Literal["ready", "drain", "maint"]


class ProxyError(DhashError):
    """The proxy could not be reached, or refused a command."""

    exit_code = 1


@dataclass(frozen=True)
class ServerStat:
    """One backend server as ``show stat`` reports it."""

    backend: str
    name: str
    status: str  # UP, DOWN, DRAIN, MAINT, NOLB, or a transition such as "UP 1/3"
    weight: int
    sessions: int  # scur: sessions open now
    total_sessions: int  # stot
    check_status: str  # L7OK, L4CON, ... (empty without checks)
    address: str

    @property
    def up(self) -> bool:
        return self.status == "UP"

    @property
    def draining(self) -> bool:
        return self.status == "DRAIN"

    @property
    def out_of_rotation(self) -> bool:
        """No new sessions go to it: drained, down, in maintenance (not UP, not going down)."""
        return self.status.split(" ")[0] not in ("UP", "NOLB")


def _int(value: str) -> int:
    return int(value) if value.strip().isdigit() else 0


class HAProxyRuntime:
    """A client of one HAProxy's runtime API at ``address`` (a socket path or tcp://h:p)."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep

    def _connect(self) -> socket.socket:
        if self.address.startswith("tcp://"):
            host, _, port = self.address.removeprefix("tcp://").rpartition(":")
            return socket.create_connection((host, int(port)), timeout=self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        return sock

    def command(self, line: str) -> str:
        """Send one command and return HAProxy's whole answer."""
        if "\n" in line or ";" in line:
            raise ProxyError(f"one runtime command at a time, got {line!r}")
        try:
            with self._connect() as sock:
                sock.sendall(line.encode() + b"\n")
                chunks: list[bytes] = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise ProxyError(
                f"cannot reach HAProxy's runtime API at {self.address} ({exc.strerror or exc}); "
                "is haproxy running with `stats socket ... level admin`?"
            ) from exc
        return b"".join(chunks).decode("utf-8", "replace")

    def _set(self, line: str) -> None:
        answer = self.command(line).strip()
        if answer:
            raise ProxyError(f"HAProxy refused `{line}`: {answer}")

    def set_state(self, backend: str, server: str, state: AdminState) -> None:
        self._set(f"set server {backend}/{server} state {state}")

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        if not 0 <= weight <= 256:
            raise ProxyError(f"an HAProxy weight is 0..256, not {weight}")
        self._set(f"set server {backend}/{server} weight {weight}")

    def stats(self) -> list[ServerStat]:
        """Every backend server of the proxy (``show stat`` rows of type 2)."""
        text = self.command("show stat")
        if not text.startswith("# "):
            raise ProxyError(f"unexpected answer to `show stat`: {text[:200]!r}")
        rows = csv.DictReader(io.StringIO(text[2:]))
        return [
            ServerStat(
                backend=row["pxname"],
                name=row["svname"],
                status=row["status"],
                weight=_int(row["weight"]),
                sessions=_int(row["scur"]),
                total_sessions=_int(row["stot"]),
                check_status=row.get("check_status", "") or "",
                address=row.get("addr", "") or "",
            )
            for row in rows
            if row.get("type") == "2"
        ]

    def servers(self, backend: str) -> list[ServerStat]:
        found = [s for s in self.stats() if s.backend == backend]
        if not found:
            raise ProxyError(f"HAProxy has no backend {backend!r} with servers")
        return found

    def server(self, backend: str, name: str) -> ServerStat:
        for stat in self.servers(backend):
            if stat.name == name:
                return stat
        raise ProxyError(f"HAProxy's backend {backend!r} has no server {name!r}")

    def wait_for(
        self, backend: str, name: str, done: Callable[[ServerStat], bool], *, what: str,
        timeout: float, interval: float = 0.05,
    ) -> ServerStat:  # fmt: skip
        """Poll ``show stat`` until ``done`` holds for the server, or fail after ``timeout``."""
        deadline = self._clock() + timeout
        while True:
            stat = self.server(backend, name)
            if done(stat):
                return stat
            if self._clock() >= deadline:
                raise ProxyError(
                    f"{backend}/{name} not {what} after {timeout:g} s "
                    f"(status {stat.status}, {stat.sessions} sessions, check {stat.check_status})"
                )
            self._sleep(interval)

    def drain(self, backend: str, name: str, timeout: float) -> ServerStat:
        """Stop new sessions to the server and wait until its open ones have ended. A server
        whose checks fail shows DOWN rather than DRAIN: it gets no new sessions either."""
        self.set_state(backend, name, "drain")
        return self.wait_for(
            backend, name, lambda s: s.out_of_rotation and s.sessions == 0, what="drained",
            timeout=timeout,
        )  # fmt: skip

    def ready(self, backend: str, name: str, timeout: float) -> ServerStat:
        """Put the server back in service and wait until its health check says UP."""
        self.set_state(backend, name, "ready")
        return self.wait_for(backend, name, lambda s: s.up, what="UP", timeout=timeout)

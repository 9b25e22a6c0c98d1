"""A real PostgreSQL server for the tests: installed with apt-get when missing, run on loopback.

``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` user and is
driven through ``runuser``; as any other user it simply belongs to that user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[2]


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        subprocess.run(["bash", str(REPO / "scripts/dev/system-deps.sh")], check=True)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found after installing postgresql")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    bin_dir: Path
    data_dir: Path
    port: int
    user: str

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def socket_url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        """The same database through the server's unix socket: reachable from a network
        namespace (tests/support/netns_hosts.py) that shares this machine's filesystem but not
        its loopback."""
        return f"{driver}://{self.user}@/{database}?host={self.data_dir.parent}&port={self.port}"

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={database}"

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected), as an outage would."""
        _pg_ctl(self.bin_dir, self.data_dir, "-m", "fast", "-w", "stop")

    def start(self) -> None:
        """Start it again on the same port and data (after ``stop``)."""
        _start(self.bin_dir, self.data_dir, self.port)


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _pg_ctl(bin_dir: Path, data: Path, *args: str) -> None:
    subprocess.run(
        _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), *args]),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _start(bin_dir: Path, data: Path, port: int) -> None:
    base = data.parent
    opts = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    _pg_ctl(bin_dir, data, "-o", opts, "-l", str(base / "server.log"), "-w", "-t", "60", "start")


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    bin_dir = _bin_dir()
    base = Path(tempfile.mkdtemp(prefix="dhash-pg-"))
    data = base / "data"
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    os.chmod(base, 0o755)
    port = _free_port()
    subprocess.run(
        _as_owner(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _start(bin_dir, data, port)
    server = PostgresServer(bin_dir=bin_dir, data_dir=data, port=port, user=user)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(server.dsn(), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        subprocess.run(
            _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(base, ignore_errors=True)

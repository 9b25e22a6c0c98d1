"""Helpers for the backup, restore and migration tests: real SQLite databases, real CLI runs.

Every backup a test makes goes through :func:`assert_restores`, which restores it into a fresh
database and compares every row with the source.
"""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from dhash_rollout.backup import restore_backup, verify_backup
from dhash_rollout.environments import Environment

REPO = Path(__file__).resolve().parents[2]
DHASH = str(Path(sys.executable).parent / "dhash")


def make_sqlite_db(path: Path, rows: int = 2000, *, wal: bool = True, revision: str = "r1") -> Path:
    """A small database shaped like ours: images with hashes, and an alembic_version row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE images (id INTEGER PRIMARY KEY, hash INTEGER NOT NULL, "
            "path TEXT NOT NULL, width INTEGER, score REAL, thumb BLOB)"
        )
        conn.execute("CREATE INDEX ix_images_hash ON images(hash)")
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        add_rows(conn, rows)
        conn.commit()
    finally:
        conn.close()
    return path


def add_rows(conn: sqlite3.Connection, rows: int, start: int = 0) -> None:
    conn.executemany(
        "INSERT INTO images (hash, path, width, score, thumb) VALUES (?, ?, ?, ?, ?)",
        [
            (
                (i * 0x9E3779B97F4A7C15) % (1 << 63),
                f"/library/{i // 100:04d}/image-{i:08d}-{'x' * (i % 40)}.jpg",
                i % 4096,
                i / 7.0,
                bytes([i % 256]) * (i % 17),
            )
            for i in range(start, start + rows)
        ],
    )


def sqlite_content(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables}
    finally:
        conn.close()


def sqlite_env(root: Path, name: str = "production") -> Environment:
    db = root / "shared" / "data" / "dhash.sqlite3"
    return Environment(
        name=name,
        root=root,
        port=18080,
        url="http://127.0.0.1:18080",
        database_url=f"sqlite:///{db}",
    )


def env_db(env: Environment) -> Path:
    return Path(env.database_url.removeprefix("sqlite:///"))


def assert_restores(
    backup: Path, expected: Mapping[str, list[tuple[object, ...]]], scratch: Path, env_name: str
) -> None:
    """Restore ``backup`` into a new database under ``scratch`` and compare every row."""
    verify_backup(backup, restore_test=True)
    target = sqlite_env(scratch, env_name)
    result = restore_backup(backup, target, compare_content=True, lock_dir=scratch / "locks")
    assert sqlite_content(env_db(target)) == expected
    assert sum(result.tables.values()) == sum(len(v) for v in expected.values())


def cli_env(**extra: str) -> dict[str, str]:
    """The parent's environment without any DHASH_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHASH_")}
    env.update(extra)
    return env


def write_environments(cwd: Path, databases: Mapping[str, str | None]) -> None:
    """``dhash-environments.toml`` in ``cwd``: each env's root is ``cwd/var/<env>`` and its
    database the given URL (None: the default SQLite file under that root)."""
    lines: list[str] = []
    for name, url in databases.items():
        lines += [f"[{name}]", f'root = "var/{name}"']
        lines += [f'database_url = "{url}"'] if url else []
        lines.append("")
    (cwd / "dhash-environments.toml").write_text("\n".join(lines), encoding="utf-8")


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DHASH, *args],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class PausedRun:
    """A real ``dhash`` subprocess stopped at a fault point, to be SIGKILLed there."""

    def __init__(self, *args: str, cwd: Path, point: str, timeout: float = 60) -> None:
        self.proc = subprocess.Popen(
            [DHASH, *args],
            cwd=cwd,
            env=cli_env(DHASH_BACKUP_FAULT=point),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stderr is not None
        stream = self.proc.stderr

        def pump() -> None:
            for line in stream:
                lines.put(line)
            lines.put("")

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            seen.append(line)
            if line.startswith(f"dhash-fault: paused at {point}"):
                return
            if line == "":
                self.proc.wait()
                self._pump.join(timeout=10)
                self.proc.stderr.close()
                raise AssertionError(f"ended before {point}: {''.join(seen)}")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL
        self._pump.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

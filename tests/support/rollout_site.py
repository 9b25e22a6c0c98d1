"""A deploy site for the rollout tests: a working directory with its environments file, driven
through the real ``dhash`` command line, and the checks that say "fully on release X".
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from dhash_rollout.environments import Environment, load_environment
from dhash_rollout.runs.journal import Journal, JournalRecord
from dhash_rollout.runs.schema import database_revision, release_head
from dhash_rollout.targets.local import LocalTarget
from tests.support.load import multipart, unique_png
from tests.support.release_builds import CHECKOUT, dhash_bin, dhash_env, write_environments

TOKEN = "rollout-test-token"


@dataclass
class Site:
    base: Path
    env_name: str = "production"

    @classmethod
    def create(cls, base: Path, **extra: object) -> Site:
        """A working directory laid out like the checkout, so the guide's ``./scripts/*.sh``
        run verbatim from it (their sources, the venv they resolve, the project files)."""
        base.mkdir(parents=True, exist_ok=True)
        for name in ("scripts", ".venv", "src", "requirements", "pyproject.toml", "README.md"):
            (base / name).symlink_to(CHECKOUT / name)
        write_environments(base, **{"api_token": TOKEN, **extra})
        return cls(base)

    def script(
        self, name: str, *args: str, timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        """``./scripts/<name> <args>`` from the site, as the guide runs it."""
        return subprocess.run(
            [f"./scripts/{name}", *args],
            cwd=self.base,
            env=dhash_env(self.base),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ingest(self, seed: int, token: str = TOKEN) -> list[int]:
        """Store one new image through the API; the ids the service acknowledged."""
        body, ctype = multipart(unique_png(seed), f"img-{seed}.png")
        response = httpx.post(
            f"{self.env.url}/v1/images",
            content=body,
            headers={"Content-Type": ctype, "Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return [int(item["image_id"]) for item in response.json()["items"]]

    @property
    def env(self) -> Environment:
        return load_environment(self.env_name, self.base)

    @property
    def target(self) -> LocalTarget:
        return LocalTarget(self.env)

    @property
    def journal(self) -> Journal:
        return Journal.for_root(self.env.root)

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [dhash_bin(), *args],
            cwd=self.base,
            env=dhash_env(self.base),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [dhash_bin(), *args],
            cwd=self.base,
            env=dhash_env(self.base),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def deploy(
        self, wheel: Path, *extra: str, monitor: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``dhash deploy`` of ``wheel``; unguarded (``--no-monitor``) unless ``monitor``: a
        CLI deploy otherwise watches its release for the whole (60-minute) window."""
        flags = () if monitor else ("--no-monitor",)
        return self.run("deploy", "--env", self.env_name, "--source", str(wheel), *flags, *extra)

    def wait_for_record(
        self,
        match: Callable[[JournalRecord], bool],
        proc: subprocess.Popen[str],
        timeout: float = 180,
        after: int = 0,
    ) -> JournalRecord | None:
        """Poll the journal (every 5 ms) for a record past line ``after`` that ``match``es."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = list(self.journal.records())[after:]
            for record in records:
                if match(record):
                    return record
            if proc.poll() is not None:
                return None
            time.sleep(0.005)
        raise AssertionError("timed out waiting for a journal record")

    def health(self) -> dict[str, object]:
        body = httpx.get(f"{self.env.url}/health", timeout=10).json()
        assert isinstance(body, dict)
        return body

    def image_ids(self) -> set[int]:
        """Every stored image id, read straight from the database."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.env.database_url)
        try:
            with engine.connect() as conn:
                return {int(r[0]) for r in conn.execute(text("SELECT id FROM images"))}
        finally:
            engine.dispose()

    def shutdown(self) -> None:
        self.target.shutdown()


def assert_fully_on(site: Site, version: str) -> None:
    """One process serving ``version``, ``current`` pointing at it, the schema at its head,
    and no unfinished run in the journal: nothing mixed."""
    status = site.target.status()
    running = [p for p in status.processes if p.state == "RUNNING"]
    assert [p.release for p in running] == [version], status
    assert [p for p in status.processes if p.state not in ("RUNNING", "ABSENT")] == [], status
    assert status.current == version
    assert os.readlink(site.env.root / "current") == f"releases/{version}"
    assert site.health()["version"] == version
    release = site.target.release(version)
    assert release is not None
    assert database_revision(site.env.database_url) == release_head(release)
    last = site.journal.last_run()
    assert last is not None and last.finished, last

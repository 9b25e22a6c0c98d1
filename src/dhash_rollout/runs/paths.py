"""Where a run keeps its files: the environment's lock and journal, the backups and logs dirs."""

from __future__ import annotations

from pathlib import Path

from dhash_rollout.environments import Environment
from dhash_rollout.runs.journal import Journal
from dhash_service.config import Settings

LOCK_NAME = "deploy.lock"  # one lock for deploys and rollbacks: they exclude each other


def lock_path(env: Environment) -> Path:
    return env.root / LOCK_NAME


def journal_for(env: Environment) -> Journal:
    return Journal.for_root(env.root)


def work_dirs(base: Path) -> tuple[Path, Path]:
    """The backups and logs directories (``backups/`` and ``logs/`` under the working dir)."""
    settings = Settings()
    return (base / settings.backup_dir).resolve(), (base / settings.log_dir).resolve()

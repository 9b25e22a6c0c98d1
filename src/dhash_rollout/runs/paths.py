"""Where a run keeps its files: the environment's lock and journal."""

from __future__ import annotations

from pathlib import Path

from dhash_rollout.environments import Environment
from dhash_rollout.runs.journal import Journal

LOCK_NAME = "deploy.lock"  # one lock for deploys and rollbacks: they exclude each other


def lock_path(env: Environment) -> Path:
    return env.root / LOCK_NAME


def journal_for(env: Environment) -> Journal:
    return Journal.for_root(env.root)

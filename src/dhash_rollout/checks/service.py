"""How the checks reach a deployed environment: its HTTP client and its service log files.

A deployed environment's service writes JSON lines to ``<root>/shared/logs/`` (the local target
captures each serving process's output there as ``<slot>.log``); ``service_log_dir`` in the
environment's table overrides the place. The process manager's own log (``supervisord.log``) is
not the service's and is not validated.
"""

from __future__ import annotations

from pathlib import Path

from dhash_rollout.environments import Environment, api_token
from dhash_service.client import DhashClient

PROCESS_MANAGER_LOGS = frozenset({"supervisord.log"})
SERVICE_LOG_SUFFIXES = frozenset({".log", ".jsonl"})


def service_client(env: Environment, *, timeout: float = 30.0) -> DhashClient:
    return DhashClient(env.url, token=api_token(env), timeout=timeout)


def service_log_dir(env: Environment) -> Path:
    configured = env.settings.service_log_dir
    if configured:
        return (env.root / str(configured)).resolve()
    return env.shared_dir / "logs"


def is_service_log(path: Path) -> bool:
    return path.suffix in SERVICE_LOG_SUFFIXES and path.name not in PROCESS_MANAGER_LOGS

"""Deployment environments (staging / production / canary) and where each one lives.

Read from ``dhash-environments.toml`` in the working directory (or the file named by
``DHASH_ENVIRONMENTS_FILE``); every environment the guide names has a local default so the
guide's commands run verbatim from a checkout::

    [production]
    url = "http://127.0.0.1:18080"
    database_url = "postgresql+psycopg://dhash@127.0.0.1:5432/dhash"
    root = "/srv/dhash/production"
    channels = ["slack", "email", "file"]
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dhash_service.errors import ConfigError

KNOWN = ("staging", "production", "canary")
_DEFAULT_PORTS = {"production": 18080, "staging": 18081, "canary": 18082}
DEFAULT_FILE = "dhash-environments.toml"


@dataclass(frozen=True)
class Environment:
    name: str
    root: Path
    port: int
    url: str
    database_url: str
    target: str = "local"
    channels: tuple[str, ...] = ("file",)
    api_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shared_dir(self) -> Path:
        return self.root / "shared"

    @property
    def data_dir(self) -> Path:
        return self.shared_dir / "data"


def _default(name: str, base: Path) -> Environment:
    port = _DEFAULT_PORTS.get(name, 18090)
    root = (base / "var" / name).resolve()
    return Environment(
        name=name,
        root=root,
        port=port,
        url=f"http://127.0.0.1:{port}",
        database_url=f"sqlite:///{root / 'shared' / 'data' / 'dhash.sqlite3'}",
    )


def environments_file(base: Path | None = None) -> Path:
    named = os.environ.get("DHASH_ENVIRONMENTS_FILE")
    return Path(named) if named else (base or Path.cwd()) / DEFAULT_FILE


def load_environment(name: str, base: Path | None = None) -> Environment:
    """The named environment: file values over local defaults. Unknown names are refused."""
    base = base or Path.cwd()
    path = environments_file(base)
    table: dict[str, Any] = {}
    if path.exists():
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
    if name not in KNOWN and name not in table:
        raise ConfigError(
            f"unknown environment {name!r}; known: {', '.join(sorted({*KNOWN, *table}))}"
        )
    env = _default(name, base)
    values = dict(table.get(name, {}))
    if not values:
        return env
    known_fields = {"root", "port", "url", "database_url", "target", "channels", "api_token"}
    updates: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in known_fields:
            continue
        if key == "root":
            updates[key] = (base / Path(raw)).resolve()
        elif key == "channels":
            updates[key] = tuple(raw)
        else:
            updates[key] = raw
    if "port" in updates and "url" not in updates:
        updates["url"] = f"http://127.0.0.1:{updates['port']}"
    if "root" in updates and "database_url" not in updates:
        updates["database_url"] = (
            f"sqlite:///{updates['root'] / 'shared' / 'data' / 'dhash.sqlite3'}"
        )
    extra = {k: v for k, v in values.items() if k not in known_fields}
    return replace(env, **updates, extra=extra)

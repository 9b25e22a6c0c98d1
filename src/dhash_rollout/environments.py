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
import secrets
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dhash_rollout.notify.escalation_config import parse_escalation
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

    @property
    def service_config_file(self) -> Path:
        """The service's own settings file (``DHASH_CONFIG_FILE`` of its processes)."""
        return self.shared_dir / "config" / "dhash.toml"

    @property
    def generated_token_file(self) -> Path:
        """Where a local, non-production environment keeps the API token made for it."""
        return self.shared_dir / "config" / "api-token"


# Production never gets a made-up credential: its token is named in the environments file.
STRICT_TOKEN_ENVIRONMENTS = frozenset({"production"})


def service_config_token(env: Environment) -> str | None:
    """The first of ``api_tokens`` in the service's settings file, if it names any."""
    try:
        table = tomllib.loads(env.service_config_file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    tokens = table.get("api_tokens")
    if isinstance(tokens, str):
        tokens = [t for t in tokens.split(",") if t.strip()]
    if isinstance(tokens, list) and tokens and isinstance(tokens[0], str):
        return tokens[0].strip() or None
    return None


def api_token(env: Environment) -> str | None:
    """The bearer token the service accepts and the toolkit's own requests (smoke, logging
    validation) carry: ``api_token`` of the environments file, else the first ``api_tokens``
    entry of the service's settings file, else the token generated for a local environment."""
    if env.api_token:
        return env.api_token
    configured = service_config_token(env)
    if configured:
        return configured
    try:
        return env.generated_token_file.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def provision_api_token(env: Environment) -> tuple[str | None, bool]:
    """The environment's token, generated on first use when none is configured; returns it and
    whether it was made now. Production is never given one: it must name its own."""
    found = api_token(env)
    if found or env.name in STRICT_TOKEN_ENVIRONMENTS:
        return found, False
    path = env.generated_token_file
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)  # never replaces a token another run made meanwhile
    except FileExistsError:
        return api_token(env), False
    finally:
        tmp.unlink(missing_ok=True)
    return token, True


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


# The type each setting must have (bool is excluded from the numbers: TOML true is not a port).
_TYPES: dict[str, tuple[type, ...]] = {
    "root": (str,),
    "port": (int,),
    "url": (str,),
    "database_url": (str,),
    "target": (str,),
    "api_token": (str,),
    "release_deps": (str,),
    "preflight": (str,),
    "service_log_dir": (str,),
    "workers": (int,),
    "shutdown_grace_seconds": (int, float),
    "ready_timeout_seconds": (int, float),
    "backup_max_age_seconds": (int, float),
}
_POSITIVE = {"port", "workers", "shutdown_grace_seconds", "ready_timeout_seconds"}


def _check_types(name: str, path: Path, values: dict[str, Any]) -> None:
    """Refuse a mistyped setting here, with its name, rather than deep inside a deploy."""
    for key, value in values.items():
        where = f"{path}: [{name}] {key}"
        if key == "channels":
            if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                raise ConfigError(f'{where} must be a list of channel names, e.g. ["file"]')
            continue
        kinds = _TYPES.get(key)
        if kinds is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kinds):
            names: dict[tuple[type, ...], str] = {(str,): "text", (int,): "an integer"}
            wanted = names.get(kinds, "a number")
            raise ConfigError(f"{where} must be {wanted}, not {value!r}")
        if key in _POSITIVE and isinstance(value, int | float) and value <= 0:
            raise ConfigError(f"{where} must be greater than 0")
    port = values.get("port")
    if isinstance(port, int) and port > 65535:
        raise ConfigError(f"{path}: [{name}] port must be at most 65535")
    if values.get("preflight") not in (None, "enforce", "warn"):
        raise ConfigError(f"{path}: [{name}] preflight must be enforce or warn")
    if "escalation" in values:  # the escalation matrix, refused here like any other setting
        parse_escalation(values["escalation"], f"{path}: [{name}] escalation")


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
    section = table.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    values = dict(section)
    _check_types(name, path, values)
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

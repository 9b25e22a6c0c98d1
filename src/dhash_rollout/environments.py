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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dhash_service.errors import ConfigError

KNOWN = ("staging", "production", "canary")
_DEFAULT_PORTS = {"production": 18080, "staging": 18081, "canary": 18082}
DEFAULT_FILE = "dhash-environments.toml"


class EnvironmentSettings(BaseModel):
    """One table of ``dhash-environments.toml``: every key the toolkit reads, typed. A key not
    named here is refused (a typo must not fall back to a default), and so is a value of the
    wrong type (TOML ``true`` is not a port). docs/deploy.md has one row per field."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    root: str | None = None
    port: int | None = Field(default=None, gt=0, le=65535)
    url: str | None = None
    database_url: str | None = None
    target: str | None = None
    channels: tuple[str, ...] | None = None
    api_token: str | None = None
    notify_min_severity: dict[str, str] = Field(default_factory=dict)
    release_deps: str = "full"
    workers: int = Field(default=1, gt=0)
    shutdown_grace_seconds: float | None = Field(default=None, gt=0)
    ready_timeout_seconds: float = Field(default=60.0, gt=0)
    backup_max_age_seconds: float = 3600.0
    preflight: Literal["enforce", "warn"] | None = None
    preflight_max_age_seconds: float = Field(default=86400.0, gt=0)
    service_log_dir: str | None = None
    # What a deploy does when its monitoring window ends inconclusive (gates without data):
    # succeed with a WARN notice naming them, or fail (and roll back) as a failed gate does.
    monitor_inconclusive: Literal["succeed", "fail"] = "succeed"
    # Reserved for the fleet and canary work: the hosts a remote target deploys to, and the
    # canary's own settings. Validated as their shape only; nothing reads them yet.
    hosts: tuple[str, ...] | None = None
    canary: dict[str, str | int | float | bool] | None = None
    # The escalation matrix: its shape is validated where it is read (notify/escalation_config.py,
    # a layer above this one), and by `dhash notify escalate` / `dhash notify status`.
    escalation: dict[str, Any] | None = None

    @field_validator("channels", "hosts", mode="before")
    @classmethod
    def _a_toml_array(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("shutdown_grace_seconds", "ready_timeout_seconds", "backup_max_age_seconds",
                     "preflight_max_age_seconds", mode="before")  # fmt: skip
    @classmethod
    def _a_number(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


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
    extra: dict[str, Any] = field(default_factory=dict)  # the table's other keys, as written
    settings: EnvironmentSettings = field(default_factory=EnvironmentSettings)

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


_WANTED = {
    "int_type": "an integer",
    "string_type": "text",
    "float_type": "a number",
    "dict_type": "a table",
}


def _problem(error: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """One pydantic error as the operator reads it: the key, what it must be, what it was."""
    loc = error["loc"]
    key = str(loc[0]) if loc else "?"
    value = values.get(key)
    kind = error["type"]
    if kind == "extra_forbidden":
        known = ", ".join(EnvironmentSettings.model_fields)
        return f"{key} is not a known setting (known: {known})"
    if key in ("channels", "hosts") and kind in ("tuple_type", "string_type"):
        noun = "channel" if key == "channels" else "host"
        return f'{key} must be a list of {noun} names, e.g. ["file"]'
    if kind == "greater_than":
        return f"{key} must be greater than {error['ctx']['gt']}"
    if kind == "less_than_equal":
        return f"{key} must be at most {error['ctx']['le']}"
    if kind == "literal_error":
        expected = str(error["ctx"]["expected"]).replace("'", "")
        return f"{key} must be {expected}"
    if kind in _WANTED and len(loc) == 1:
        return f"{key} must be {_WANTED[kind]}, not {value!r}"
    where = ".".join(str(part) for part in loc)
    return f"{where}: {error['msg']}"


def parse_settings(name: str, path: Path, values: Mapping[str, Any]) -> EnvironmentSettings:
    """The table ``[name]`` of ``path`` as typed settings, or ``ConfigError`` naming the key."""
    try:
        settings = EnvironmentSettings.model_validate(dict(values))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{path}: [{name}] {_problem(first, values)}") from None
    return settings


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
    settings = parse_settings(name, path, values)
    if not values:
        return replace(env, settings=settings)
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
    return replace(env, **updates, extra=extra, settings=settings)

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

import ipaddress
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dhash_service.errors import ConfigError

KNOWN = ("staging", "production", "canary")
_DEFAULT_PORTS = {"production": 18080, "staging": 18081, "canary": 18082}
DEFAULT_FILE = "dhash-environments.toml"


_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"  # an HAProxy server name and a journal key


class HostSettings(BaseModel):
    """One service host of a fleet (``[[<env>.hosts]]``): where the controller reaches it over
    SSH, where its releases live, and the name HAProxy's backend knows it by."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(pattern=_NAME)
    address: str = Field(min_length=1)
    ssh_user: str = "root"
    ssh_port: int = Field(default=22, gt=0, le=65535)
    ssh_key: str | None = None
    root: str = "/srv/dhash"
    port: int = Field(default=18080, gt=0, le=65535)  # the service's port on the host
    weight: int = Field(default=100, ge=0, le=256)  # its HAProxy weight when in service
    # The host's Python (3.11+) that installs releases there; with release_deps = "shared" the
    # release venvs layer on its packages (targets/fleet/agent.py).
    python: str = Field(default="/usr/bin/python3", min_length=1)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"


class ProxySettings(BaseModel):
    """The fleet's front proxy (``[<env>.proxy]``): HAProxy, driven through its runtime API
    (the stats socket at admin level) and read through ``show stat``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    kind: Literal["haproxy"] = "haproxy"
    # A unix socket path, or ``tcp://host:port`` for a socket bound with ``ipv4@``.
    runtime_api: str = Field(min_length=1)
    backend: str = Field(default="dhash", pattern=_NAME)
    url: str | None = None  # where clients (and the smoke test) reach the fleet
    drain_timeout_seconds: float = Field(default=30.0, gt=0)
    # HAProxy's own Prometheus exporter: ``host:port`` of a stats frontend of its own (the
    # generated haproxy.cfg binds it), read by the fleet's gate. Loopback only: the exporter
    # has no authentication and names every server's address (the controller runs beside the
    # proxy). None: the fleet's gates read the hosts alone.
    metrics_address: str | None = None

    @field_validator("metrics_address")
    @classmethod
    def _loopback(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8405)")
        try:
            loopback = ipaddress.IPv4Address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"{host!r} is not an IPv4 loopback address (127.0.0.0/8): the exporter has no "
                "authentication and names every server, bind it beside the controller"
            )
        return value

    @property
    def metrics_url(self) -> str | None:
        """Where the exporter answers (``/metrics`` on the stats frontend), or None."""
        if self.metrics_address is None:
            return None
        return f"http://{self.metrics_address}/metrics"


# A wave is a host count (``1``) or a share of the fleet (``"25%"``), as Ansible's ``serial``.
WaveSize = int | str


class WaveSettings(BaseModel):
    """How a fleet deploy is cut into waves (``[<env>.waves]``), read by the wave planner."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    sizes: tuple[WaveSize, ...] = (1, "25%", "100%")
    max_fail_percentage: float = Field(default=0.0, ge=0, le=100)
    parallel: int = Field(default=1, gt=0)  # hosts switched at once within a wave
    # The monitor's window between waves, on each host of the wave and on the fleet.
    gate_seconds: float = Field(default=300.0, gt=0)

    @field_validator("sizes", mode="before")
    @classmethod
    def _sizes(cls, value: object) -> object:
        if isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, tuple) or not value:
            raise ValueError('must be a non-empty list of sizes, e.g. [1, "25%", "100%"]')
        for size in value:
            if isinstance(size, bool) or not isinstance(size, int | str):
                raise ValueError(f"{size!r} is neither a host count nor a percentage")
            if isinstance(size, int) and size < 1:
                raise ValueError(f"a wave of {size} hosts is empty")
            if isinstance(size, str):
                digits = size.removesuffix("%")
                if not size.endswith("%") or not digits.isdigit() or not 0 < int(digits) <= 100:
                    raise ValueError(f"{size!r} is not a percentage between 1% and 100%")
        return value

    @field_validator("max_fail_percentage", "gate_seconds", mode="before")
    @classmethod
    def _a_number(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


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
    # A fleet (target = "fleet"): its service hosts, the proxy in front of them, the waves.
    hosts: tuple[HostSettings, ...] | None = None
    proxy: ProxySettings | None = None
    waves: WaveSettings | None = None
    # Reserved for the canary: its own settings. Validated as their shape only.
    canary: dict[str, str | int | float | bool] | None = None
    # The escalation matrix: its shape is validated where it is read (notify/escalation_config.py,
    # a layer above this one), and by `dhash notify escalate` / `dhash notify status`.
    escalation: dict[str, Any] | None = None

    @field_validator("channels", "hosts", mode="before")
    @classmethod
    def _a_toml_array(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _a_whole_fleet(self) -> EnvironmentSettings:
        if self.hosts is None:
            if self.proxy is not None or self.waves is not None:
                raise ValueError("proxy and waves describe a fleet: name its hosts too")
            if self.target == "fleet":
                raise ValueError('target "fleet" needs its hosts ([[<env>.hosts]] tables)')
            return self
        if not self.hosts:
            raise ValueError("hosts is empty: name at least one host")
        if self.target != "fleet":
            raise ValueError('hosts are deployed by target = "fleet"; set it')
        if self.proxy is None:
            raise ValueError("a fleet needs its proxy ([<env>.proxy] with runtime_api)")
        names = [h.name for h in self.hosts]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"host names must be unique: {', '.join(doubled)} named twice")
        places = [(h.address, h.port) for h in self.hosts]
        same = sorted({f"{a}:{p}" for a, p in places if places.count((a, p)) > 1})
        if same:
            raise ValueError(f"two hosts serve on one address: {', '.join(same)}")
        return self

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
    if kind == "extra_forbidden" and len(loc) > 1:
        where = ".".join(str(part) for part in loc)
        return f"{where} is not a known key of {_table_of(loc)}"
    if kind == "extra_forbidden":
        known = ", ".join(EnvironmentSettings.model_fields)
        return f"{key} is not a known setting (known: {known})"
    if key == "channels" and kind in ("tuple_type", "string_type"):
        return f'{key} must be a list of channel names, e.g. ["file"]'
    if key == "hosts" and len(loc) == 1 and kind in ("tuple_type", "string_type"):
        return "hosts must be a list of host tables ([[<env>.hosts]] with name and address)"
    if kind == "missing":
        where = ".".join(str(part) for part in loc)
        return f"{where} is required"
    if kind == "value_error":
        where = ".".join(str(part) for part in loc)
        message = str(error["msg"]).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    where = ".".join(str(part) for part in loc)
    if kind == "greater_than":
        return f"{where} must be greater than {error['ctx']['gt']}"
    if kind == "greater_than_equal":
        return f"{where} must be at least {error['ctx']['ge']}"
    if kind == "less_than_equal":
        return f"{where} must be at most {error['ctx']['le']}"
    if kind == "literal_error":
        expected = str(error["ctx"]["expected"]).replace("'", "")
        return f"{where} must be {expected}"
    if kind in _WANTED:
        shown = value if len(loc) == 1 else error.get("input")
        return f"{where} must be {_WANTED[kind]}, not {shown!r}"
    return f"{where}: {error['msg']}"


def _table_of(loc: tuple[Any, ...]) -> str:
    """The model a nested location points into, with its keys, for an unknown-key message."""
    tables: dict[str, type[BaseModel]] = {
        "hosts": HostSettings,
        "proxy": ProxySettings,
        "waves": WaveSettings,
    }
    model = tables.get(str(loc[0]), EnvironmentSettings)
    return f"{loc[0]} (known: {', '.join(model.model_fields)})"


def parse_settings(name: str, path: Path, values: Mapping[str, Any]) -> EnvironmentSettings:
    """The table ``[name]`` of ``path`` as typed settings, or ``ConfigError`` naming the key."""
    try:
        settings = EnvironmentSettings.model_validate(dict(values))
    except ValidationError as exc:
        errors = exc.errors()
        # An unknown key first: a typo also shows as the real key missing.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise ConfigError(f"{path}: [{name}] {_problem(first, values)}") from None
    return settings


def environments_file(base: Path | None = None) -> Path:
    named = os.environ.get("DHASH_ENVIRONMENTS_FILE")
    return Path(named) if named else (base or Path.cwd()) / DEFAULT_FILE


def _default_url(updates: Mapping[str, Any], settings: EnvironmentSettings) -> str | None:
    """Where clients reach the environment when no ``url`` is given: a fleet's proxy (its
    checks, a rollback's health and smoke, go through it), else the local port."""
    if settings.proxy is not None and settings.proxy.url:
        return settings.proxy.url
    if "port" in updates:
        return f"http://127.0.0.1:{updates['port']}"
    return None


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
    if "url" not in updates and (url := _default_url(updates, settings)) is not None:
        updates["url"] = url
    if "root" in updates and "database_url" not in updates:
        updates["database_url"] = (
            f"sqlite:///{updates['root'] / 'shared' / 'data' / 'dhash.sqlite3'}"
        )
    extra = {k: v for k, v in values.items() if k not in known_fields}
    return replace(env, **updates, extra=extra, settings=settings)

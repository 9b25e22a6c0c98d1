"""The one typed settings object. Nothing else in the service reads the environment.

Every field is documented in ``docs/configuration.md`` (a test fails when one is missing).
Values come from, in order of precedence: explicit keyword arguments, ``DHASH_*`` environment
variables, the TOML file named by ``DHASH_CONFIG_FILE``, then the defaults below.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dhash_service.errors import ConfigError
from dhash_service.faults import refuse_in_production


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DHASH_", extra="ignore", frozen=True)

    # --- where things live -------------------------------------------------------------------
    env: str = "development"
    data_dir: Path = Path("data")
    database_url: str | None = None
    log_dir: Path = Path("logs")
    backup_dir: Path = Path("backups")
    backup_fault: str | None = None  # test hook: pause point for crash tests (docs/backups.md)
    log_level: str = "INFO"

    # --- HTTP service --------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    api_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_read_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_write_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_review_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_upload_bytes: int = 64 * 1024 * 1024
    shutdown_grace_seconds: float = 20.0
    shutdown_drain_seconds: float = 1.0
    extraction_concurrency: int = 0
    request_time_budget_seconds: float = 1.5
    document_time_budget_seconds: float = 20.0
    decoder_processes: int = 1
    decoder_memory_bytes: int = 2 * 1024 * 1024 * 1024
    decoder_cpu_seconds: float = 30.0
    admission_queue_seconds: float = 5.0
    heavy_extractions_per_client: int = 1
    max_json_bytes: int = 64 * 1024
    header_timeout_seconds: float = 10.0
    body_read_timeout_seconds: float = 10.0

    # --- hashing and matching --------------------------------------------------------------------
    hash_algorithm: str = "dhash64"
    hash_size: int = 8
    match_threshold: int = 4
    review_threshold: int = 10
    ambiguity_margin: int = 2
    index_sync_seconds: float = 1.0
    index_kind: Literal["mih", "brute"] = "mih"
    # None: migrate on start only for a SQLite database in development (see docs/configuration.md).
    auto_migrate: bool | None = None

    # --- extraction limits -----------------------------------------------------------------------
    max_input_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = 64_000_000
    max_image_side: int = 2_097_152
    max_pdf_pages: int = 200
    max_video_frames: int = 50
    max_video_seconds: float = 3600.0
    video_frame_interval_seconds: float = 10.0
    max_archive_members: int = 1000
    max_archive_uncompressed_bytes: int = 512 * 1024 * 1024
    max_nesting: int = 2
    item_time_budget_seconds: float = 10.0
    animation_frame_step: int = 0
    max_image_frames: int = 100
    max_items: int = 2000
    max_decoded_pixels: int = 256_000_000
    pdf_render_max_side: int = 1024
    thumbnail_side: int = 256

    # --- review console (docs/review.md) -------------------------------------------------------
    # "name:token" pairs: each reviewer logs in to /login with their name and token.
    reviewer_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    review_session_seconds: float = Field(default=8 * 3600.0, gt=0, le=30 * 86400)
    review_claim_seconds: float = Field(default=300.0, gt=0, le=86400)

    # --- fault injection: really bad releases for the monitor's tests (dhash_service.faults) ---
    fault_hash_latency_seconds: float = Field(default=0.0, ge=0, le=60)
    fault_extraction_failure_share: float = Field(default=0.0, ge=0, le=1)
    fault_health_failing: bool = False
    fault_low_confidence: bool = False
    fault_allow_production: bool = False

    @field_validator("fault_allow_production")
    @classmethod
    def _no_faults_in_production(cls, allow: bool, info: ValidationInfo) -> bool:
        refuse_in_production(info.data, allow=allow)
        return allow

    @field_validator(
        "api_tokens",
        "api_read_tokens",
        "api_write_tokens",
        "api_review_tokens",
        "reviewer_tokens",
        mode="before",
    )
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @property
    def all_api_tokens(self) -> list[str]:
        """Every configured token, whatever its scope (for redaction and length checks)."""
        return [
            *self.api_tokens,
            *self.api_read_tokens,
            *self.api_write_tokens,
            *self.api_review_tokens,
            *(entry.partition(":")[2] for entry in self.reviewer_tokens),
        ]

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'dhash.sqlite3').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("DHASH_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


SeverityName = Literal["INFO", "WARN", "ERROR", "CRITICAL"]


class NotificationSettings(BaseSettings):
    """Notification endpoints and delivery knobs.

    Secrets keep the guide's unprefixed names (``SLACK_WEBHOOK_URL``, ``SMTP_PASSWORD``...) so
    existing CI secrets work unchanged; the delivery knobs are ``DHASH_NOTIFY_*``. Secrets are
    ``SecretStr`` so a repr or a validation error never prints them.
    """

    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", frozen=True, env_ignore_empty=True, populate_by_name=True
    )

    slack_webhook_url: SecretStr | None = None
    teams_webhook_url: SecretStr | None = None
    discord_webhook_url: SecretStr | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    smtp_to: Annotated[list[str], NoDecode] = Field(default_factory=list)
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"

    connect_timeout_seconds: float = Field(
        default=5.0, gt=0, validation_alias="DHASH_NOTIFY_CONNECT_TIMEOUT_SECONDS"
    )
    read_timeout_seconds: float = Field(
        default=10.0, gt=0, validation_alias="DHASH_NOTIFY_READ_TIMEOUT_SECONDS"
    )
    max_attempts: int = Field(default=4, ge=1, le=20, validation_alias="DHASH_NOTIFY_MAX_ATTEMPTS")
    backoff_initial_seconds: float = Field(
        default=0.5, ge=0, validation_alias="DHASH_NOTIFY_BACKOFF_INITIAL_SECONDS"
    )
    backoff_max_seconds: float = Field(
        default=8.0, ge=0, validation_alias="DHASH_NOTIFY_BACKOFF_MAX_SECONDS"
    )
    total_seconds: float = Field(default=25.0, gt=0, validation_alias="DHASH_NOTIFY_TOTAL_SECONDS")
    dedupe_seconds: float = Field(
        default=86400.0, ge=0, validation_alias="DHASH_NOTIFY_DEDUPE_SECONDS"
    )
    smtp_ca_file: Path | None = Field(default=None, validation_alias="DHASH_NOTIFY_SMTP_CA_FILE")
    # Ack links in escalation pages (`dhash notify ack-server`, docs/notifications.md): the
    # secret signs them, the URL is where the listener is reachable from a phone.
    ack_secret: SecretStr | None = Field(default=None, validation_alias="DHASH_NOTIFY_ACK_SECRET")
    ack_secret_previous: SecretStr | None = Field(
        default=None, validation_alias="DHASH_NOTIFY_ACK_SECRET_PREVIOUS"
    )
    ack_url: str | None = Field(default=None, validation_alias="DHASH_NOTIFY_ACK_URL")
    ack_link_hours: float = Field(
        default=24.0, gt=0, le=14 * 24, validation_alias="DHASH_NOTIFY_ACK_LINK_HOURS"
    )
    min_severity_slack: SeverityName | None = Field(
        default=None, validation_alias="DHASH_NOTIFY_MIN_SEVERITY_SLACK"
    )
    min_severity_teams: SeverityName | None = Field(
        default=None, validation_alias="DHASH_NOTIFY_MIN_SEVERITY_TEAMS"
    )
    min_severity_discord: SeverityName | None = Field(
        default=None, validation_alias="DHASH_NOTIFY_MIN_SEVERITY_DISCORD"
    )
    min_severity_email: SeverityName | None = Field(
        default=None, validation_alias="DHASH_NOTIFY_MIN_SEVERITY_EMAIL"
    )

    @field_validator("smtp_to", mode="before")
    @classmethod
    def _split_recipients(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [a.strip() for a in value.split(",") if a.strip()]
        return value

    @field_validator("smtp_security", mode="before")
    @classmethod
    def _lower_security(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "min_severity_slack",
        "min_severity_teams",
        "min_severity_discord",
        "min_severity_email",
        mode="before",
    )
    @classmethod
    def _upper_severity(cls, value: Any) -> Any:
        if isinstance(value, str):
            upper = value.strip().upper()
            return "WARN" if upper == "WARNING" else upper
        return value


def load_settings(**overrides: Any) -> Settings:
    """Settings, or a ``ConfigError`` naming each mistyped variable (never its value: secrets).

    A ``DHASH_CONFIG_FILE`` that is missing or not TOML is an error too: pydantic-settings would
    silently skip a missing file (a typo in its path dropping every setting in it) and raise a
    bare ``TOMLDecodeError`` for a malformed one."""
    config_file = os.environ.get("DHASH_CONFIG_FILE")
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"DHASH_CONFIG_FILE={config_file!r} is not a file")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise settings_error(exc) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"DHASH_CONFIG_FILE={config_file!r} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read DHASH_CONFIG_FILE={config_file!r}: {exc.strerror or exc}"
        ) from None


def settings_error(exc: ValidationError) -> ConfigError:
    """One line naming each mistyped setting and what is wrong with it, never its value."""
    config_file = os.environ.get("DHASH_CONFIG_FILE")
    problems = "; ".join(
        f"{_variable(problem['loc'], config_file)}: {problem['msg']}" for problem in exc.errors()
    )
    return ConfigError(f"invalid settings: {problems}")


def _variable(loc: tuple[int | str, ...], config_file: str | None) -> str:
    field = str(loc[0]) if loc else "?"
    if field.isupper():
        return field
    return f"DHASH_{field.upper()}" + (f" (or {field} in {config_file})" if config_file else "")

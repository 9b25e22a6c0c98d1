"""The one typed settings object. Nothing else in the service reads the environment.

Every field is documented in ``docs/configuration.md`` (a test fails when one is missing).
Values come from, in order of precedence: explicit keyword arguments, ``DHASH_*`` environment
variables, the TOML file named by ``DHASH_CONFIG_FILE``, then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DHASH_", extra="ignore", frozen=True)

    # --- where things live -------------------------------------------------------------------
    env: str = "development"
    data_dir: Path = Path("data")
    database_url: str | None = None
    log_dir: Path = Path("logs")
    backup_dir: Path = Path("backups")
    log_level: str = "INFO"

    # --- HTTP service --------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    api_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_upload_bytes: int = 64 * 1024 * 1024
    shutdown_grace_seconds: float = 20.0

    # --- hashing and matching --------------------------------------------------------------------
    hash_algorithm: str = "dhash64"
    hash_size: int = 8
    match_threshold: int = 4
    review_threshold: int = 10
    ambiguity_margin: int = 2
    index_sync_seconds: float = 1.0

    # --- extraction limits -----------------------------------------------------------------------
    max_input_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = 64_000_000
    max_pdf_pages: int = 200
    max_video_frames: int = 50
    max_video_seconds: float = 3600.0
    video_frame_interval_seconds: float = 10.0
    max_archive_members: int = 1000
    max_archive_uncompressed_bytes: int = 512 * 1024 * 1024
    max_nesting: int = 2
    item_time_budget_seconds: float = 10.0
    animation_frame_step: int = 0

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

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


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)

"""The toolkit's directories come from its own settings, read once and passed down."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.settings import ToolkitSettings


def test_the_directories_are_read_from_the_service_settings_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHASH_BACKUP_DIR", "saved")
    monkeypatch.setenv("DHASH_LOG_DIR", str(tmp_path / "elsewhere"))
    settings = ToolkitSettings.load()
    assert settings.work_dirs(tmp_path) == (tmp_path / "saved", tmp_path / "elsewhere")


def test_without_settings_they_are_backups_and_logs_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DHASH_BACKUP_DIR", "DHASH_LOG_DIR", "DHASH_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert ToolkitSettings.load().work_dirs(tmp_path) == (tmp_path / "backups", tmp_path / "logs")

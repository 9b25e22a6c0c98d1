"""The toolkit's own settings, apart from the service's: where backups and run logs go.

Read once where a command starts (:meth:`ToolkitSettings.load`, from the same sources as the
service settings: ``DHASH_BACKUP_DIR``, ``DHASH_LOG_DIR``, the ``DHASH_CONFIG_FILE`` TOML) and
passed down, so a deploy or a rollback does not rebuild the service's ``Settings`` to find
its directories.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from dhash_service.config import Settings


class ToolkitSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    backup_dir: Path = Path("backups")
    log_dir: Path = Path("logs")

    @classmethod
    def load(cls) -> ToolkitSettings:
        service = Settings()
        return cls(backup_dir=service.backup_dir, log_dir=service.log_dir)

    def work_dirs(self, base: Path) -> tuple[Path, Path]:
        """The backups and logs directories, a relative setting taken under ``base``."""
        return (base / self.backup_dir).resolve(), (base / self.log_dir).resolve()

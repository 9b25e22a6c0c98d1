"""Where the checks look: the configured backup and log directories, relative to a workdir.

The guide's commands run from the directory holding ``backups/`` and ``logs/``; ``Settings``
keeps those defaults (``DHASH_BACKUP_DIR``, ``DHASH_LOG_DIR``), and a relative setting is taken
relative to the check's working directory rather than the process's.
"""

from __future__ import annotations

from pathlib import Path

from dhash_rollout.settings import ToolkitSettings


def _under(workdir: Path, configured: Path) -> Path:
    return configured if configured.is_absolute() else workdir / configured


def backup_dir(workdir: Path, settings: ToolkitSettings | None = None) -> Path:
    return _under(workdir, (settings or ToolkitSettings.load()).backup_dir)


def log_dir(workdir: Path, settings: ToolkitSettings | None = None) -> Path:
    return _under(workdir, (settings or ToolkitSettings.load()).log_dir)


def shown(path: Path, workdir: Path) -> str:
    """``path`` relative to ``workdir`` when inside it, for short messages."""
    try:
        return str(path.relative_to(workdir))
    except ValueError:
        return str(path)

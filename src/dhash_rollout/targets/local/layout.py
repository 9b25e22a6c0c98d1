"""Where the local target keeps its files under the environment's root."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SUN_PATH_MAX = 100  # AF_UNIX paths are limited to 108 bytes; keep a margin


@dataclass(frozen=True)
class LocalLayout:
    root: Path

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def log_dir(self) -> Path:
        return self.shared / "logs"

    @property
    def supervisor_dir(self) -> Path:
        return self.root / "supervisor"

    @property
    def programs_dir(self) -> Path:
        return self.supervisor_dir / "programs"

    @property
    def conf_path(self) -> Path:
        return self.supervisor_dir / "supervisord.conf"

    @property
    def pidfile(self) -> Path:
        return self.supervisor_dir / "supervisord.pid"

    @property
    def socket_path(self) -> Path:
        """``<root>/supervisor/supervisor.sock``, or a short path derived from it when too long."""
        preferred = self.supervisor_dir / "supervisor.sock"
        if len(str(preferred).encode()) <= _SUN_PATH_MAX:
            return preferred
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
        return base / f"dhash-supervisor-{digest}.sock"

    def program_file(self, slot: str) -> Path:
        return self.programs_dir / f"{slot}.conf"

    def slot_log(self, slot: str) -> Path:
        """What the process of ``slot`` wrote (supervisord captures its output there)."""
        return self.log_dir / f"{slot}.log"

    def ensure(self) -> None:
        for path in (self.shared / "config", self.shared / "data", self.log_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.programs_dir.mkdir(parents=True, exist_ok=True)

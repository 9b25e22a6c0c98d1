"""Debian's ``prometheus`` / ``promtool`` for the monitor tests: installed when missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def need(tool: str) -> str:
    """The path of ``tool`` (``prometheus`` or ``promtool``), running system-deps.sh if absent."""
    found = shutil.which(tool)
    if found is None:
        subprocess.run(["bash", str(REPO / "scripts" / "dev" / "system-deps.sh")], check=True)
        found = shutil.which(tool)
    assert found is not None, f"{tool} is still missing after scripts/dev/system-deps.sh"
    return found

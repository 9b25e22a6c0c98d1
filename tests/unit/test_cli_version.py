"""``dhash --version`` prints the version the service package declares, like ``dhash version``."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from dhash_rollout.cli import main
from dhash_service import __version__

DHASH = Path(sys.executable).parent / "dhash"


def test_version_option_prints_the_package_version_and_exits_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"{__version__}\n"


def test_version_option_and_version_command_agree(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--version"])
    option = capsys.readouterr().out
    main(["version"])
    assert capsys.readouterr().out == option


def test_version_option_wins_over_a_command_and_runs_nothing_else(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--version", "serve", "--no-such-flag"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{__version__}\n"
    assert captured.err == ""


def test_installed_console_script_reports_the_distribution_version() -> None:
    done = subprocess.run([str(DHASH), "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == importlib.metadata.version("dhash-service") == __version__

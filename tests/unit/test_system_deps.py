"""``make demo`` installs only the demo's Debian packages, ``make test`` the tests' too, from one
table in scripts/dev/system-deps.sh; the README's two lists are that table."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "dev" / "system-deps.sh"
README = REPO / "README.md"


def listed(group: str) -> list[str]:
    done = subprocess.run(
        ["bash", str(SCRIPT), "--list", group], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def readme_list(after: str, until: str) -> list[str]:
    """The backticked names in the README between ``after`` and the next ``until``."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    start = text.index(after) + len(after)
    return re.findall(r"`([^`]+)`", text[start : text.index(until, start)])


def test_the_demo_group_is_the_interpreter_and_its_venv_module_only() -> None:
    assert listed("demo") == ["python3", "python3-venv"]


def test_the_test_group_holds_the_demo_group_and_the_tests_servers() -> None:
    test = listed("test")
    assert test[:2] == listed("demo")
    assert {"postgresql", "chromium", "haproxy", "openssh-server"} <= set(test[2:])


def test_the_readme_lists_what_each_command_installs() -> None:
    demo = readme_list("`make demo` installs only what the demo uses:", ";")
    extra = readme_list("`make test` adds what the tests use:", ".")
    assert demo == listed("demo")
    assert demo + extra == listed("test")


def test_an_unknown_group_is_refused_in_one_line() -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), "tests"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr == "system-deps.sh: unknown group 'tests' (demo or test)\n"


def test_make_demo_bootstraps_the_demo_group_and_make_test_the_test_group() -> None:
    def dry(target: str) -> str:
        return subprocess.run(
            ["make", "-n", target], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout

    assert "system-deps.sh demo" in dry("demo")
    assert "system-deps.sh test" not in dry("demo")
    assert "system-deps.sh test" in dry("test")

"""The import contracts in pyproject.toml break on what they forbid: run against a small tree
laid out like ``src/`` (the same package names), a layer violation and an import cycle each
fail ``lint-imports``, and the clean tree passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _config() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        config = tomllib.load(handle)["tool"]["importlinter"]
    assert isinstance(config, dict)
    return config


def _layer_modules() -> set[str]:
    names: set[str] = set()
    for contract in _config()["contracts"]:  # type: ignore[attr-defined]
        for layer in contract.get("layers", []):
            names.update(
                n.strip() for n in re.split(r"[|:]", layer) if not n.strip().startswith("(")
            )
    return names


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for package in ("dhash_service", "dhash_rollout"):
        (src / package).mkdir(parents=True)
        (src / package / "__init__.py").write_text("")
    for name in _layer_modules():
        (src / "dhash_rollout" / name).mkdir()
        (src / "dhash_rollout" / name / "__init__.py").write_text("")
    (src / "dhash_rollout/deploy/run.py").write_text("import dhash_rollout.runs\n")
    (src / "dhash_rollout/notify/a.py").write_text("import dhash_rollout.notify.b\n")
    (src / "dhash_rollout/notify/b.py").write_text("")
    config = tmp_path / ".importlinter"
    lines = ["[importlinter]", "root_packages =", "    dhash_service", "    dhash_rollout"]
    for number, contract in enumerate(_config()["contracts"]):  # type: ignore[attr-defined]
        lines.append(f"[importlinter:contract:{number}]")
        for key, value in contract.items():
            if isinstance(value, list):
                lines.append(f"{key} =")
                lines += [f"    {item}" for item in value]
            else:
                lines.append(f"{key} = {value}")
    config.write_text("\n".join(lines) + "\n")
    return src


def _lint(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), str(tmp_path / ".importlinter"), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_contracts_pass_a_tree_that_keeps_them(tmp_path: Path) -> None:
    _tree(tmp_path)
    done = _lint(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("path", "text", "broken"),
    [
        ("dhash_rollout/runs/up.py", "import dhash_rollout.deploy\n", "layered"),
        ("dhash_rollout/deploy/side.py", "import dhash_rollout.rollback\n", "layered"),
        ("dhash_rollout/notify/b.py", "import dhash_rollout.notify.a\n", "No import cycles"),
        ("dhash_service/x.py", "import dhash_service.y\n", "No import cycles"),
    ],
)
def test_a_layer_violation_or_a_cycle_fails_the_lint(
    tmp_path: Path, path: str, text: str, broken: str
) -> None:
    src = _tree(tmp_path)
    (src / path).write_text(text)
    if path == "dhash_service/x.py":
        (src / "dhash_service/y.py").write_text("import dhash_service.x\n")
    done = _lint(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    # the summary line of the broken contract (a long name wraps once)
    assert re.search(rf"{broken}[^\n]*(\n[^\n]*)?BROKEN", done.stdout), done.stdout

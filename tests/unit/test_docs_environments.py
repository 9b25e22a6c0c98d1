"""Every key of an environment's table has a row in docs/deploy.md, and every row is a key."""

from __future__ import annotations

import re
from pathlib import Path

from dhash_rollout.environments import EnvironmentSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def _rows() -> dict[str, list[str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Environment settings used here", 1)[1].split("\n#", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        match = re.match(r"^\|\s*`([a-z_]+)`\s*\|", line)
        if match:
            rows[match.group(1)] = [c.strip() for c in line.strip().strip("|").split("|")]
    return rows


def test_the_environments_table_lists_exactly_the_model_keys() -> None:
    assert set(_rows()) == set(EnvironmentSettings.model_fields)


def test_every_row_has_a_default_and_a_meaning() -> None:
    for key, cells in _rows().items():
        assert len(cells) == 3 and all(cells), f"incomplete row for {key}"

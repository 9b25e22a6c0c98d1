"""Every setting has a row in docs/configuration.md: the table is the settings' documentation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from dhash_service.config import NotificationSettings, Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def env_names(settings: type[BaseSettings]) -> list[str]:
    prefix = str(settings.model_config.get("env_prefix", ""))
    names = []
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        names.append(alias if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


def documented() -> set[str]:
    rows = re.findall(r"^\|\s*`([A-Z0-9_]+)`\s*\|", DOC.read_text(encoding="utf-8"), re.M)
    return set(rows)


@pytest.mark.parametrize(
    "variable", [*env_names(Settings), *env_names(NotificationSettings), "DHASH_CONFIG_FILE"]
)
def test_every_setting_has_a_row_in_the_configuration_table(variable: str) -> None:
    assert variable in documented(), f"{variable} is not documented in {DOC.name}"


def test_every_row_has_a_default_and_a_meaning() -> None:
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if re.match(r"^\|\s*`[A-Z0-9_]+`", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert len(cells) == 3 and all(cells), f"incomplete row: {line}"

"""A failed migration says what it left (issue 12 item 9): never "rolled back" when revisions
before the failing one were committed. Real Alembic, a real SQLite file, the service's own
migrations plus two test revisions (the second one raises)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic.config import Config

from dhash_rollout.migrate import upgrade
from dhash_rollout.runs.schema import database_revision
from dhash_service.errors import DhashError
from dhash_service.store.schema import MIGRATIONS_DIR
from tests.support.release_builds import checkout_head

_REVISION = '''"""Test revision {rev}."""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''


def test_a_failed_upgrade_reports_the_revision_it_left(tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    head = checkout_head()
    versions = scripts / "versions"
    (versions / "9101_fine.py").write_text(
        _REVISION.format(
            rev="9101_fine",
            down=head,
            body='    op.create_table("t9101", sa.Column("id", sa.Integer))',
        )
    )
    (versions / "9102_broken.py").write_text(
        _REVISION.format(rev="9102_broken", down="9101_fine", body='    raise RuntimeError("boom")')
    )
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    upgrade(url, head)

    def config(database_url: str) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(scripts))
        cfg.attributes["database_url"] = database_url
        return cfg

    with pytest.raises(DhashError) as failed:
        upgrade(url, "9102_broken", config_factory=config)
    message = failed.value.message
    assert "RuntimeError" in message or "boom" in message
    assert "rolled back" not in message
    now = database_revision(url)
    if now == head:
        assert f"the schema is unchanged at {head}" in message
    else:
        assert f"committed: the schema is now at {now} (was {head})" in message

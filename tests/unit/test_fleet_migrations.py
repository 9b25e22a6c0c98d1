"""Which pending migrations are contract steps, read from a release's own Alembic scripts."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from dhash_rollout.deploy.waves import Migration, split_migrations
from dhash_rollout.releases import Release
from dhash_rollout.runs.schema import pending_migration_steps, release_head
from dhash_service.errors import CheckFailed

SOURCE = Path(__file__).resolve().parents[2] / "src" / "dhash_service" / "store" / "migrations"

CONTRACT = '''"""Drop a column the old release no longer needs (contract)."""
revision = "0004_contract_test"
down_revision = "{head}"
branch_labels = None
depends_on = None
contract = True


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


def _release(tmp_path: Path, *, with_contract: bool) -> Release:
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = tmp_path / "r" / "venv" / "lib" / pyver / "site-packages" / "dhash_service"
    shutil.copytree(SOURCE, target / "store" / "migrations")
    release = Release("9.9", tmp_path / "r", "test", "w.whl", "0" * 64, "now", "full")
    if with_contract:  # a contract step on top of whatever the checkout's head is
        (target / "store" / "migrations" / "versions" / "0004_contract_test.py").write_text(
            CONTRACT.replace("{head}", str(release_head(release)))
        )
    return release


def test_the_head_release_has_no_pending_steps_from_its_head(tmp_path: Path) -> None:
    release = _release(tmp_path, with_contract=False)
    assert pending_migration_steps(release, release_head(release)) == []


def test_pending_steps_are_oldest_first_with_their_contract_flag(tmp_path: Path) -> None:
    release = _release(tmp_path, with_contract=True)
    pending = pending_migration_steps(release, "0002_review_and_audit")
    assert pending[0] == ("0003_review_console", False)
    assert pending[-1] == ("0004_contract_test", True)
    assert not any(contract for _, contract in pending[:-1])
    expand, contract = split_migrations([Migration(r, c) for r, c in pending])
    assert expand[0] == "0003_review_console" and contract == ("0004_contract_test",)
    assert pending_migration_steps(release, None)[0] == ("0001_initial_schema", False)


def test_an_unknown_current_revision_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed, match="do not lead from nope"):
        pending_migration_steps(_release(tmp_path, with_contract=False), "nope")

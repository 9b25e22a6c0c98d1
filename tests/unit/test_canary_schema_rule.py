"""Which pending migrations a canary may run beside stable: expand steps only."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.canary.schema_rule import contract_steps
from tests.support.release_builds import _migration

VERSIONS = Path(__file__).resolve().parents[2] / "src/dhash_service/store/migrations/versions"


def _upgrade(body: str) -> str:
    lines = "\n".join(f"    {line}" for line in body.strip().splitlines())
    return f"import sqlalchemy as sa\nfrom alembic import op\n\n\ndef upgrade() -> None:\n{lines}\n"


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ('op.create_table("t", sa.Column("id", sa.Integer, primary_key=True))', []),
        ('op.create_index("ix", "t", ["a"])', []),
        ('op.add_column("t", sa.Column("c", sa.String(8), nullable=True))', []),
        ('op.add_column("t", sa.Column("c", sa.String(8)))', []),
        ('op.add_column("t", sa.Column("c", sa.Integer, nullable=False, server_default="0"))', []),
        (
            'op.add_column("t", sa.Column("c", sa.Integer, nullable=False))',
            ["add_column of a NOT NULL column without a server default"],
        ),
        ('op.drop_column("t", "c")', ["drop_column"]),
        ('op.alter_column("t", "c", nullable=False)', ["alter_column"]),
        ('op.rename_table("a", "b")', ["rename_table"]),
        ('op.execute("UPDATE t SET c = 1")', ["execute"]),
        (
            'with op.batch_alter_table("t") as b:\n    b.add_column(sa.Column("c", sa.Text))\n'
            '    b.drop_column("old")',
            ["drop_column"],
        ),
        ('op.create_unique_constraint("uq", "t", ["a"])', ["create_unique_constraint"]),
    ],
)
def test_each_operation_is_expand_or_contract(body: str, found: list[str]) -> None:
    steps = contract_steps("r1", _upgrade(body))
    assert [s.operation for s in steps] == found
    assert all(s.revision == "r1" and s.line > 0 for s in steps)


def test_only_upgrade_counts_not_downgrade() -> None:
    source = _upgrade('op.create_index("ix", "t", ["a"])') + (
        '\n\ndef downgrade() -> None:\n    op.drop_index("ix")\n'
    )
    assert contract_steps("r", source) == []


def test_an_unreadable_migration_is_refused() -> None:
    assert contract_steps("r", "def upgrade(:\n")[0].operation.startswith("unreadable")
    assert contract_steps("r", "x = 1\n")[0].operation == "no upgrade() to read"


@pytest.mark.parametrize("path", sorted(VERSIONS.glob("0*.py")), ids=lambda p: p.name)
def test_the_shipped_migrations_only_expand(path: Path) -> None:
    assert contract_steps(path.stem, path.read_text(encoding="utf-8")) == []


def test_the_rollout_tests_probe_migration_is_expand_only() -> None:
    _revision, text = _migration("reversible", "0002")
    assert contract_steps("probe", text) == []

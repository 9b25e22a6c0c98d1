"""The migration dry-run is real: it connects, runs the pending migrations in one transaction,
reports them, and rolls back, leaving the database unchanged (SQLite and PostgreSQL)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.config import Config

from dhash_rollout import migrate
from dhash_service.errors import DhashError, Unavailable
from dhash_service.store.schema import create_engine_for


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dhash.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


def fingerprint(url: str) -> dict[str, Any]:
    """Everything a migration could change: tables, columns, indexes, revision, row counts."""
    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            tables = sorted(inspector.get_table_names())
            return {
                t: {
                    "columns": [
                        (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(t)
                    ],
                    "indexes": sorted(str(i["name"]) for i in inspector.get_indexes(t)),
                    "rows": conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar_one(),
                    "data": [tuple(r) for r in conn.execute(sa.text(f'SELECT * FROM "{t}"'))]
                    if t == "alembic_version"
                    else None,
                }
                for t in tables
            }
    finally:
        engine.dispose()


def all_revisions(url: str) -> list[str]:
    return [r.revision for r in migrate.migration_status(url).pending]


def test_dry_run_reports_the_pending_revisions_and_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    revisions = all_revisions(database_url)
    assert len(revisions) >= 2, "needs at least two migrations to leave one pending"
    migrate.upgrade(database_url, revisions[0])
    before = fingerprint(database_url)
    log = tmp_path / "migrate-dryrun.log"

    report = migrate.dry_run(database_url, log)

    assert report.ok and report.error is None and report.unchanged
    assert report.start == revisions[0]
    assert [r.revision for r in report.pending] == revisions[1:]
    assert any(s.upper().startswith(("CREATE", "ALTER")) for s in report.statements)
    assert report.changes
    assert fingerprint(database_url) == before
    text = log.read_text()
    assert (
        "result: OK" in text
        and revisions[-1] in text
        and "database unchanged after rollback: yes" in text
    )

    status = migrate.upgrade(database_url)
    assert status.up_to_date and status.pending == []
    at_head = fingerprint(database_url)
    again = migrate.dry_run(database_url)
    assert again.ok and again.pending == [] and again.changes == []
    assert fingerprint(database_url) == at_head


def test_downgrade_dry_run_lists_the_revisions_it_would_undo(database_url: str) -> None:
    revisions = all_revisions(database_url)
    migrate.upgrade(database_url)
    before = fingerprint(database_url)

    report = migrate.dry_run(database_url, target=revisions[0], direction="downgrade")

    assert report.ok and report.unchanged
    assert [r.revision for r in report.pending] == list(reversed(revisions[1:]))
    assert any(c.startswith("drop table") for c in report.changes)
    assert fingerprint(database_url) == before
    status = migrate.downgrade(database_url, revisions[0])
    assert status.current == revisions[0]


def test_dry_run_on_a_missing_sqlite_database_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "dhash.sqlite3"
    report = migrate.dry_run(f"sqlite:///{path}")
    assert report.ok and report.start is None and report.pending
    assert "does not exist yet" in report.notes[0]
    assert not path.exists()


FAILING_ENV = """
from alembic import context
from dhash_service.store.schema import create_engine_for

config = context.config


def run(connection):
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = create_engine_for(config.attributes["database_url"])
    try:
        with engine.connect() as fresh:
            run(fresh)
            fresh.commit()
    finally:
        engine.dispose()
"""

REVISION = '''
"""{doc}"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
{body}


def downgrade():
    pass
'''


@pytest.fixture
def failing_scripts(tmp_path: Path) -> Any:
    """A migration chain whose second step does DDL and then fails."""
    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(FAILING_ENV)
    first = '    op.create_table("t1", sa.Column("id", sa.Integer, primary_key=True))'
    second = textwrap.indent(
        textwrap.dedent(
            """\
            op.create_table("t2", sa.Column("id", sa.Integer, primary_key=True))
            with op.batch_alter_table("t1") as batch:
                batch.add_column(sa.Column("extra", sa.String(10)))
            op.execute("INSERT INTO t1 (id) VALUES (1)")
            op.execute("SELECT * FROM no_such_table")
            """
        ),
        "    ",
    )
    for rev, down, body in (("a1", None, first), ("a2", "a1", second)):
        (scripts / "versions" / f"{rev}.py").write_text(
            REVISION.format(doc=f"step {rev}", rev=rev, down=down, body=body)
        )

    def factory(url: str) -> Config:
        config = Config()
        config.set_main_option("script_location", str(scripts))
        config.attributes["database_url"] = url
        return config

    return factory


def test_a_failing_migration_is_reported_and_all_its_ddl_rolled_back(
    database_url: str, failing_scripts: Any, tmp_path: Path
) -> None:
    migrate.upgrade(database_url, "a1", config_factory=failing_scripts)
    before = fingerprint(database_url)
    log = tmp_path / "migrate-dryrun.log"

    report = migrate.dry_run(database_url, log, config_factory=failing_scripts)

    assert not report.ok and "no_such_table" in (report.error or "")
    assert report.unchanged and report.start == "a1"
    assert [r.revision for r in report.pending] == ["a2"]
    assert any("CREATE TABLE t2" in s for s in report.statements)  # it really ran
    assert fingerprint(database_url) == before  # ...and was rolled back, DDL included
    assert "result: FAILED" in log.read_text()

    with pytest.raises(DhashError, match="no_such_table") as err:
        migrate.upgrade(database_url, config_factory=failing_scripts)
    assert "the schema is unchanged at a1" in err.value.message  # what it left, said plainly
    assert fingerprint(database_url) == before


@pytest.mark.postgres
def test_dry_run_against_an_unreachable_server_raises_unavailable(postgres_url: str) -> None:
    url = sa.engine.make_url(postgres_url).set(port=1, password="s3cret").render_as_string(False)
    with pytest.raises(Unavailable) as err:
        migrate.dry_run(url)
    assert "s3cret" not in err.value.message and "127.0.0.1" in err.value.message


def test_schema_changes_are_described_one_per_line() -> None:
    before = {
        "images": {"columns": {"id": "INTEGER NOT NULL", "w": "INTEGER"}, "indexes": ["ix_a"]},
        "old": {"columns": {"id": "INTEGER"}, "indexes": []},
    }
    after = {
        "images": {"columns": {"id": "BIGINT NOT NULL", "h": "INTEGER"}, "indexes": ["ix_b"]},
        "new": {"columns": {"id": "INTEGER NOT NULL"}, "indexes": ["ix_new"]},
    }
    assert migrate.describe_changes(before, after) == [
        "create table new (id INTEGER NOT NULL)",
        "create index ix_new on new",
        "drop table old",
        "add column images.h INTEGER",
        "drop column images.w",
        "alter column images.id: INTEGER NOT NULL -> BIGINT NOT NULL",
        "create index ix_b on images",
        "drop index ix_a on images",
    ]


CASCADE_CHAIN = {
    "p1": (
        None,
        """\
op.create_table("parent", sa.Column("id", sa.Integer, primary_key=True))
op.create_table(
    "child",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("parent.id", ondelete="CASCADE")),
)
op.execute("INSERT INTO parent (id) VALUES (1)")
op.execute("INSERT INTO child (id, parent_id) VALUES (1, 1), (2, 1), (3, 1)")
""",
    ),
    "p2": (
        "p1",
        """\
with op.batch_alter_table("parent", recreate="always") as batch:
    batch.add_column(sa.Column("name", sa.String(10)))
left = op.get_bind().execute(sa.text("SELECT count(*) FROM child")).scalar_one()
if left != 3:
    raise RuntimeError(f"the parent rebuild cascaded: {left} child rows left")
""",
    ),
}


def test_sqlite_dry_run_rebuilds_tables_with_foreign_keys_off_like_the_real_upgrade(
    tmp_path: Path,
) -> None:
    """A batch rebuild of a parent table must not cascade into its children, in the rehearsal
    exactly as in the real run (the migration itself fails if it does)."""
    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(FAILING_ENV)
    for rev, (down, body) in CASCADE_CHAIN.items():
        (scripts / "versions" / f"{rev}.py").write_text(
            REVISION.format(doc=rev, rev=rev, down=down, body=textwrap.indent(body, "    "))
        )

    def factory(url: str) -> Config:
        config = Config()
        config.set_main_option("script_location", str(scripts))
        config.attributes["database_url"] = url
        return config

    url = f"sqlite:///{tmp_path / 'fk.sqlite3'}"
    migrate.upgrade(url, "p1", config_factory=factory)
    before = fingerprint(url)
    report = migrate.dry_run(url, config_factory=factory)
    assert report.ok, report.error
    assert "add column parent.name VARCHAR(10)" in report.changes
    assert fingerprint(url) == before

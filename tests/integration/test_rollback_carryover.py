"""Writes made after a backup survive its restore: export, restore (the real backup tooling),
re-apply, on the real schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select

from dhash_rollout.backup import create_backup, restore_backup
from dhash_rollout.carryover import export_rows, reapply_rows
from dhash_rollout.environments import Environment
from dhash_service.store import schema
from dhash_service.store.models import AuditEvent, Content, Image, ImageHashRow, ReviewItem

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Environment:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'dhash.sqlite3'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    schema.upgrade(url)
    return Environment(
        name="production",
        root=tmp_path / "root",
        port=1,
        url="http://127.0.0.1:1",
        database_url=url,
    )


def _store(url: str, seed: int, *, with_review: bool = False) -> int:
    """One content with one image, its hash and an audit event (and a review item)."""
    now = datetime.now(UTC)
    engine = schema.create_engine_for(url)
    try:
        with engine.begin() as conn:
            content_id = conn.execute(
                insert(Content).returning(Content.id),
                {
                    "sha256": f"{seed:064x}",
                    "input_kind": "image",
                    "size_bytes": 100 + seed,
                    "filename": f"img-{seed}.png",
                    "source": "test",
                    "failures": [],
                    "created_at": now,
                },
            ).scalar_one()
            image_id = conn.execute(
                insert(Image).returning(Image.id),
                {
                    "content_id": content_id,
                    "locator": "image",
                    "kind": "image",
                    "width": 8,
                    "height": 8,
                    "decision": "review" if with_review else "new",
                    "confidence": 0.5,
                    "created_at": now,
                },
            ).scalar_one()
            conn.execute(
                insert(ImageHashRow),
                {
                    "image_id": image_id,
                    "algorithm": "dhash64",
                    "bits": 64,
                    "value": -(seed + 1) * 0x1234567,
                    "wide": None,
                    "low_information": False,
                },
            )
            conn.execute(
                insert(AuditEvent),
                {
                    "at": now,
                    "actor": "token:test",
                    "action": "ingest",
                    "subject_type": "image",
                    "subject_id": image_id,
                    "detail": {"seed": seed, "note": "ünïcode"},
                },
            )
            if with_review:
                conn.execute(
                    insert(ReviewItem),
                    {
                        "image_id": image_id,
                        "candidate_image_id": None,
                        "distance": 7,
                        "confidence": 0.4,
                        "reason": "ambiguous",
                        "status": "pending",
                        "created_at": now,
                    },
                )
            return int(image_id)
    finally:
        engine.dispose()


def _rows(url: str) -> dict[str, list[dict[str, Any]]]:
    engine = schema.create_engine_for(url)
    try:
        with engine.connect() as conn:
            out = {}
            for model in (Content, Image, ImageHashRow, AuditEvent, ReviewItem):
                table = model.__table__
                rows = conn.execute(select(table).order_by(table.c.id)).mappings()
                out[table.name] = [dict(r) for r in rows]
            return out
    finally:
        engine.dispose()


def test_rows_written_after_the_backup_come_back_after_the_restore(
    env: Environment, tmp_path: Path
) -> None:
    for seed in range(3):
        _store(env.database_url, seed)
    backup = create_backup(env, tmp_path / "backups")
    later = [_store(env.database_url, 100 + seed, with_review=True) for seed in range(4)]
    live = _rows(env.database_url)

    exported = export_rows(env.database_url, tmp_path / "rollback" / "live-rows.jsonl")
    assert exported.rows["images"] == 7 and not exported.unreadable
    restore_backup(backup.path, env, force=True)
    assert len(_rows(env.database_url)["images"]) == 3  # the backup alone
    result = reapply_rows(env.database_url, exported.path)

    assert result.inserted["images"] == len(later) == 4
    assert result.inserted["review_items"] == 4
    assert _rows(env.database_url) == live  # every row, every value, the same ids
    # New writes after the rollback get fresh ids (PostgreSQL sequences were moved past ours).
    after = _store(env.database_url, 999)
    assert after > max(later)


def test_a_reapply_reports_rows_changed_or_deleted_since_the_backup(
    env: Environment, tmp_path: Path
) -> None:
    kept = _store(env.database_url, 1)
    gone = _store(env.database_url, 2)
    backup = create_backup(env, tmp_path / "backups")
    engine = create_engine(env.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(Image.__table__.update().where(Image.id == kept).values(confidence=0.9))
            conn.execute(ImageHashRow.__table__.delete().where(ImageHashRow.image_id == gone))
    finally:
        engine.dispose()  # the restore ends every session on the database
    exported = export_rows(env.database_url, tmp_path / "live.jsonl")
    restore_backup(backup.path, env, force=True)
    result = reapply_rows(env.database_url, exported.path)
    rows = _rows(env.database_url)
    confidence = next(r["confidence"] for r in rows["images"] if r["id"] == kept)
    hashes = len(rows["hashes"])
    assert result.total_inserted == 0
    assert result.changed_since_backup == {"images": 1}
    assert result.deleted_since_backup == {"hashes": 1}
    assert confidence == 0.5 and hashes == 2  # the backup's version wins, and is reported


def _review_id(url: str, image_id: int) -> int:
    engine = schema.create_engine_for(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    select(ReviewItem.id).where(ReviewItem.image_id == image_id)
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_a_review_decision_made_after_the_backup_survives_the_restore(
    env: Environment, tmp_path: Path
) -> None:
    """Issue 12 item 3: a reviewer's decision acknowledged after the backup is a write like an
    ingest; the restore put the item back to ``pending`` while its audit row said confirmed."""
    from dhash_service.store.repository import Repository

    decided = _review_id(env.database_url, _store(env.database_url, 1, with_review=True))
    untouched = _review_id(env.database_url, _store(env.database_url, 2, with_review=True))
    backup = create_backup(env, tmp_path / "backups")
    engine = schema.create_engine_for(env.database_url)
    try:
        Repository(engine).resolve_review(decided, "confirm", "alice")
    finally:
        engine.dispose()
    live = _rows(env.database_url)
    exported = export_rows(env.database_url, tmp_path / "live.jsonl")
    restore_backup(backup.path, env, force=True)
    result = reapply_rows(env.database_url, exported.path)

    assert _rows(env.database_url) == live  # the decision, its reviewer, time and audit row
    assert result.updated == {"review_items": 1}
    assert result.inserted["audit_events"] == 1
    assert result.changed_since_backup == {} and result.not_carried() == {}
    assert untouched != decided


def test_a_change_no_audit_row_explains_is_reported_as_not_carried(
    env: Environment, tmp_path: Path
) -> None:
    kept = _store(env.database_url, 1)
    backup = create_backup(env, tmp_path / "backups")
    engine = create_engine(env.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(Image.__table__.update().where(Image.id == kept).values(confidence=0.9))
    finally:
        engine.dispose()
    exported = export_rows(env.database_url, tmp_path / "live.jsonl")
    restore_backup(backup.path, env, force=True)
    result = reapply_rows(env.database_url, exported.path)
    assert result.not_carried() == {
        "images": "1 row changed since the backup, not replayed (no audit record of the change)"
    }

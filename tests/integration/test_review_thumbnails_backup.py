"""Thumbnails live in the store, so a backup carries them and a restore brings them back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dhash_rollout.backup import create_backup, restore_backup
from dhash_service.store import schema
from tests.integration.backup_support import env_db, sqlite_env
from tests.support.review_seed import seed_store


def thumbs(db: Path) -> dict[int, bytes]:
    conn = sqlite3.connect(db)
    try:
        return {int(i): bytes(d) for i, d in conn.execute("SELECT image_id, data FROM thumbnails")}
    finally:
        conn.close()


def test_a_restore_brings_back_the_thumbnails_the_backup_held(tmp_path: Path) -> None:
    env = sqlite_env(tmp_path / "var" / "production")
    db = env_db(env)
    db.parent.mkdir(parents=True)
    schema.upgrade(env.database_url)
    seed_store(env.database_url, 4, candidates=2, pool=2)
    at_backup = thumbs(db)
    assert len(at_backup) == 6 and all(data[8:12] == b"WEBP" for data in at_backup.values())
    info = create_backup(env, tmp_path / "backups")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("DELETE FROM images WHERE id = (SELECT min(image_id) FROM thumbnails)")
    conn.commit()
    conn.close()
    assert len(thumbs(db)) == 5  # removed with its image
    restore_backup(info.path, env, compare_content=True, lock_dir=tmp_path / "locks")
    assert thumbs(db) == at_backup

"""The service facade end to end on a real store (SQLite file and PostgreSQL), real images."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image

from dhash_service.config import Settings
from dhash_service.errors import Conflict, InputError, NotFound, Unavailable
from dhash_service.hashing import hash_image
from dhash_service.service import MAX_TEXT, DhashService, resolve_auto_migrate, storable_text
from dhash_service.store import schema
from dhash_service.store.direct import DirectStatement
from tests.support.corpus import encode, realistic_photo

REPO = Path(__file__).resolve().parents[2]
SYNC_SECONDS = 0.2


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dhash.sqlite3'}"
    else:
        yield request.getfixturevalue("postgres_url")


def settings_for(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "index_sync_seconds": SYNC_SECONDS,
        "auto_migrate": True,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def service(database_url: str) -> Iterator[DhashService]:
    svc = DhashService(settings_for(database_url))
    svc.start()
    assert svc.wait_until_ready(10)
    yield svc
    svc.stop()


def photo(seed: int) -> Image.Image:
    return realistic_photo(320, 240, seed)


def png(image: Image.Image) -> bytes:
    return encode(image, "PNG")


def jpeg(image: Image.Image, quality: int = 60) -> bytes:
    return encode(image, "JPEG", quality=quality)


def distance(a: Image.Image, b: Image.Image) -> int:
    return (hash_image(a).value ^ hash_image(b).value).bit_count()


def test_a_re_encoded_copy_of_a_library_image_matches_it(service: DhashService) -> None:
    original = photo(1)
    stored, digest_result = service.ingest(png(original), library=True, source="catalogue")
    assert stored.library and not stored.duplicate
    [lib_item] = stored.items
    assert (lib_item.decision, lib_item.matches) == ("new", [])
    assert len(digest_result.items) == 1

    report, _ = service.ingest(jpeg(original), filename="copy.jpg", source="upload")
    [item] = report.items
    assert not report.library
    assert item.decision == "match"
    assert item.matches[0].image_id == lib_item.image_id
    assert item.matches[0].source == "catalogue"
    assert item.matches[0].hash == lib_item.hash
    assert item.confidence == round(1 - item.matches[0].distance / 11, 4)
    assert item.review_id is None

    found = service.search(item.hash, 4)
    assert [m.image_id for m in found] == [lib_item.image_id]
    assert service.get_image(item.image_id).decision == "match"
    assert service.get_image(lib_item.image_id).library


def test_the_same_bytes_twice_are_stored_once_and_can_join_the_library_later(
    service: DhashService,
) -> None:
    data = png(photo(2))
    first, _ = service.ingest(data)
    again, digest_result = service.ingest(data, library=True)
    assert again.duplicate and again.library and not first.library
    assert [i.image_id for i in again.items] == [i.image_id for i in first.items]
    assert digest_result.items == []  # nothing was hashed a second time
    assert [m.image_id for m in service.search(first.items[0].hash, 0)] == [first.items[0].image_id]
    third, _ = service.ingest(data)
    assert third.duplicate and third.library


def test_a_farther_copy_goes_to_review_and_is_resolved_once(database_url: str) -> None:
    original = photo(3)
    cropped = original.crop((24, 18, 320, 240))
    d = distance(original, cropped)
    assert d > 0
    svc = DhashService(settings_for(database_url, match_threshold=0, review_threshold=32))
    svc.start()
    try:
        assert svc.wait_until_ready(10)
        svc.ingest(png(original), library=True)
        report, _ = svc.ingest(png(cropped))
        [item] = report.items
        assert item.decision == "review"
        assert item.review_id is not None
        assert svc.review_queue_length() == 1
        [pending] = svc.review_items()
        assert (pending.id, pending.distance, pending.reason) == (item.review_id, d, "review_band")
        done = svc.resolve_review(pending.id, "reject", "ana")
        assert (done.status, done.reviewer) == ("rejected", "ana")
        assert svc.review_queue_length() == 0
        assert [r.id for r in svc.review_items("rejected")] == [pending.id]
        with pytest.raises(Conflict):
            svc.resolve_review(pending.id, "confirm", "bob")
        with pytest.raises(NotFound):
            svc.resolve_review(pending.id + 1000, "confirm", "bob")
        with pytest.raises(InputError):
            svc.review_items("maybe")
    finally:
        svc.stop()


def test_names_any_backend_refuses_are_made_storable(service: DhashService) -> None:
    report, _ = service.ingest(png(photo(10)), filename="a\x00b" + "x" * 3000, source="s\x00")
    assert service.get_image(report.items[0].image_id).source == "s\ufffd"
    with pytest.raises(InputError, match="source"):
        service.ingest(png(photo(11)), source="x" * (MAX_TEXT + 1))
    long_a, long_b = "a" * 2000 + "1", "a" * 2000 + "2"
    assert len(storable_text(long_a)) <= MAX_TEXT
    assert storable_text(long_a) != storable_text(long_b)
    assert storable_text("\udcff") == "?"


def test_hash_only_stores_nothing(service: DhashService) -> None:
    data = png(photo(4))
    report, _ = service.hash_only(data)
    assert report.items[0].hash == hash_image(photo(4)).hex()
    ingested, _ = service.ingest(data)
    assert not ingested.duplicate


def test_search_refuses_bad_input_with_clear_errors(service: DhashService) -> None:
    with pytest.raises(InputError, match="16 hex digits"):
        service.search("xyz", 4)
    with pytest.raises(InputError, match="radius"):
        service.search("0" * 16, 33)
    with pytest.raises(InputError, match="indexes dhash64"):
        service.search("0" * 64, 4, algorithm="dhash256")
    with pytest.raises(InputError, match="unknown hash algorithm"):
        service.search("0" * 16, 4, algorithm="md5")
    with pytest.raises(NotFound):
        service.get_image(999_999)
    assert service.search("0" * 16, 0) == []


def test_a_new_worker_loads_the_library_from_the_store(
    service: DhashService, database_url: str
) -> None:
    report, _ = service.ingest(png(photo(5)), library=True)
    second = DhashService(settings_for(database_url, auto_migrate=False))
    assert not second.readiness().ready
    second.start()
    try:
        assert second.wait_until_ready(10)
        assert second.readiness().checks == {"store": "ok", "migrations": "ok", "index": "ok"}
        assert [m.image_id for m in second.search(report.items[0].hash, 0)] == [
            report.items[0].image_id
        ]
    finally:
        second.stop()


def test_a_schema_behind_head_keeps_the_worker_unready_until_migrated(database_url: str) -> None:
    svc = DhashService(settings_for(database_url, auto_migrate=False))
    svc.start()
    try:
        time.sleep(SYNC_SECONDS * 2)
        readiness = svc.readiness()
        assert not readiness.ready
        assert readiness.checks["migrations"].startswith("database at no revision")
        assert readiness.checks["index"] != "ok"
        with pytest.raises(Unavailable):
            svc.ingest(png(photo(6)))
        schema.upgrade(database_url)
        assert svc.wait_until_ready(10)
        assert svc.readiness().ready
    finally:
        svc.stop()


def test_an_unreachable_database_is_unavailable_not_a_crash() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing?connect_timeout=2"
    svc = DhashService(settings_for(url, auto_migrate=False))
    svc.start()
    try:
        readiness = svc.readiness()
        assert not readiness.ready
        assert readiness.checks["store"].startswith("unreachable")
        with pytest.raises(Unavailable):
            svc.ingest(png(photo(7)))
        with pytest.raises(Unavailable):
            svc.review_queue_length()
    finally:
        svc.stop()


def test_auto_migrate_defaults_to_sqlite_in_development_only() -> None:
    sqlite, postgres = "sqlite:///x.db", "postgresql+psycopg://u@h/db"
    assert resolve_auto_migrate(Settings(database_url=sqlite))
    assert not resolve_auto_migrate(Settings(database_url=sqlite, env="production"))
    assert not resolve_auto_migrate(Settings(database_url=postgres))
    assert resolve_auto_migrate(Settings(database_url=postgres, auto_migrate=True))


WRITER = """
import json, os, signal, sys
from dhash_service.config import Settings
from dhash_service.service import DhashService
svc = DhashService(Settings(database_url=sys.argv[1], index_sync_seconds=0.2, auto_migrate=False))
svc.start()
assert svc.wait_until_ready(20)
report, _ = svc.ingest(open(sys.argv[2], "rb").read(), library=True, source="other-worker")
print(json.dumps({"image_id": report.items[0].image_id, "hash": report.items[0].hash}), flush=True)
if sys.argv[3] == "crash":
    os.kill(os.getpid(), signal.SIGKILL)  # no clean shutdown: only what was committed survives
svc.stop()
"""


def run_writer(database_url: str, image_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WRITER, database_url, str(image_path), mode],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        check=False,
    )


def test_another_process_write_reaches_this_index_within_the_poll_interval(
    service: DhashService, database_url: str, tmp_path: Path
) -> None:
    image_path = tmp_path / "other.png"
    image_path.write_bytes(png(photo(8)))
    done = run_writer(database_url, image_path, "exit")
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout.splitlines()[-1])
    committed_at = time.monotonic()
    while not service.search(written["hash"], 0):
        assert time.monotonic() - committed_at < SYNC_SECONDS + 2.0, "write not seen in time"
        time.sleep(0.02)
    [found] = service.search(written["hash"], 0)
    assert (found.image_id, found.source) == (written["image_id"], "other-worker")


def tiff_pages(*pages: Image.Image) -> bytes:
    return encode(
        pages[0], "TIFF", save_all=True, append_images=list(pages[1:]), compression="tiff_lzw"
    )


def test_the_first_answer_is_what_the_store_answers_for_the_same_bytes(database_url: str) -> None:
    # The first ingest answers from what it wrote; a duplicate reads it back: the two must agree
    # field for field (ids, decisions, match hashes and sources, review ids, library flag).
    svc = DhashService(settings_for(database_url, match_threshold=2, review_threshold=32))
    svc.start()
    try:
        assert svc.wait_until_ready(10)
        original = photo(3)
        svc.ingest(png(original), library=True, source="catalogue")
        svc.ingest(png(photo(5)), library=True, source="other")
        cropped = original.crop((24, 18, 320, 240)).resize(original.size)
        upload = tiff_pages(cropped, photo(3), photo(6))  # fresh: a PNG save left state on it
        first, _ = svc.ingest(upload, filename="scan.tiff", source="upload")
        again, nothing = svc.ingest(upload)
        assert again.duplicate and not first.duplicate and nothing.items == []
        assert len(first.items) == 3
        assert any(item.review_id is not None for item in first.items)
        assert any(item.decision == "match" and item.matches for item in first.items)
        assert first.model_dump(exclude={"duplicate"}) == again.model_dump(exclude={"duplicate"})

        joined, _ = svc.ingest(png(photo(7)), library=True, source="late")
        reread, _ = svc.ingest(png(photo(7)))
        assert joined.library and reread.duplicate
        assert joined.model_dump(exclude={"duplicate"}) == reread.model_dump(exclude={"duplicate"})
    finally:
        svc.stop()


def test_a_new_image_costs_one_read_and_one_write_transaction(service: DhashService) -> None:
    # The ingest's store work, counted where SQLAlchemy sends it: the duplicate check with the
    # library's newest id (one statement), then content, image, hash, thumbnail and audit rows
    # in one transaction (SQLite) or one statement (PostgreSQL: data-modifying CTEs, in
    # autocommit); no read-back, no catch-up query when the library has not changed.
    service.ingest(png(photo(30)))  # warm: nothing below depends on a first-use query
    engine = service._repo.engine
    statements: list[str] = []
    checkouts: list[object] = []

    here = threading.get_ident()  # not the background index poll's

    def on_execute(*args: object) -> None:
        if threading.get_ident() == here:
            statements.append(str(args[2]).split()[0])

    def on_checkout(*args: object) -> None:
        if threading.get_ident() == here:
            checkouts.append(args[0])

    # On PostgreSQL the two statements go straight to the driver (store/direct.py), past
    # SQLAlchemy's cursor events: counted where they are sent instead.
    sent = DirectStatement.first_row

    def first_row(statement: DirectStatement, *args: Any, **kwargs: Any) -> dict[str, Any]:
        on_execute(None, None, statement.sql)
        return sent(statement, *args, **kwargs)

    sa.event.listen(engine, "before_cursor_execute", on_execute)
    sa.event.listen(engine.pool, "checkout", on_checkout)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(DirectStatement, "first_row", first_row)
            report, _ = service.ingest(png(photo(31)))
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_execute)
        sa.event.remove(engine.pool, "checkout", on_checkout)
    assert report.items[0].decision == "new"
    begins = [s for s in statements if s.upper() == "BEGIN"]  # SQLite's own, emitted by us
    assert service.limits.thumbnail_side > 0  # the default: a thumbnail row per image
    if engine.dialect.name == "postgresql":
        assert statements == ["SELECT", "WITH"]
    else:
        assert [s for s in statements if s.upper() != "BEGIN"] == ["SELECT", *["INSERT"] * 5]
    assert len(begins) <= 2 and len(checkouts) == 2


def test_a_library_image_stored_by_one_worker_is_matched_by_another_at_once(
    database_url: str,
) -> None:
    # Neither background poll runs during the test: only the catch-up before matching can help.
    writer = DhashService(settings_for(database_url, index_sync_seconds=3600))
    reader = DhashService(settings_for(database_url, index_sync_seconds=3600))
    for svc in (writer, reader):
        svc.start()
        assert svc.wait_until_ready(10)
    try:
        original = photo(21)
        stored, _ = writer.ingest(png(original), library=True)
        copy = encode(original.resize((160, 120)), "JPEG", quality=70)
        report, _ = reader.ingest(copy)
        [item] = report.items
        assert item.decision in ("match", "review"), item
        assert item.matches[0].image_id == stored.items[0].image_id
        assert reader.search(stored.items[0].hash, 0)[0].image_id == stored.items[0].image_id
    finally:
        writer.stop()
        reader.stop()


def test_an_acknowledged_ingest_survives_the_writer_being_killed(
    service: DhashService, database_url: str, tmp_path: Path
) -> None:
    image_path = tmp_path / "crash.png"
    image_path.write_bytes(png(photo(9)))
    done = run_writer(database_url, image_path, "crash")
    assert done.returncode == -signal.SIGKILL
    written = json.loads(done.stdout.splitlines()[-1])
    image = service.get_image(written["image_id"])
    assert (image.hash, image.library, image.source) == (written["hash"], True, "other-worker")


def test_a_database_migrated_ahead_by_a_newer_release_still_serves(database_url: str) -> None:
    """Expand-only migrations: an old release keeps serving on a newer schema (docs/deploy.md)."""
    schema.upgrade(database_url)
    engine = schema.create_engine_for(database_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    finally:
        engine.dispose()
    svc = DhashService(settings_for(database_url, auto_migrate=True))
    svc.start()
    try:
        assert svc.wait_until_ready(10)
        assert svc.readiness().checks["migrations"] == "ok"
        assert schema.current_revision(database_url) == "9999_future"  # left alone
    finally:
        svc.stop()

"""The repository on SQLite and on a real PostgreSQL: round trips, idempotency, ordering, review."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from dhash_service.errors import Conflict, NotFound
from dhash_service.store import schema
from dhash_service.store.models import from_signed64, to_signed64
from dhash_service.store.repository import (
    DuplicateContent,
    NewContent,
    NewImage,
    NewMatch,
    NewReview,
    NewThumbnail,
    Repository,
    StoredHash,
)

TOP_BIT_HASH = 0xF0E1D2C3B4A59687  # negative as a signed BIGINT: exercises the conversion


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dhash.sqlite3'}"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def repo(database_url: str) -> Iterator[Repository]:
    schema.upgrade(database_url)
    repository = Repository(schema.create_engine_for(database_url))
    yield repository
    repository.engine.dispose()


def image(locator: str = "", value: int = TOP_BIT_HASH, **kw: object) -> NewImage:
    fields: dict[str, object] = {
        "locator": locator,
        "kind": "image",
        "width": 640,
        "height": 480,
        "hash": StoredHash(value, "dhash64", 64, False),
        "decision": "new",
        "confidence": 1.0,
    }
    fields.update(kw)
    return NewImage(**fields)  # type: ignore[arg-type]


def content(sha: str, *images: NewImage, library: bool = False) -> NewContent:
    return NewContent(
        sha256=hashlib.sha256(sha.encode()).hexdigest(),
        input_kind="image",
        size_bytes=123,
        filename="a.jpg",
        source="camera-1",
        failures=[],
        images=images or (image(),),
        library=library,
    )


def count(repo: Repository, table: str) -> int:
    with repo.engine.connect() as connection:
        return int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_signed_bigint_conversion_round_trips_every_64_bit_value() -> None:
    for value in (0, 1, 2**63 - 1, 2**63, TOP_BIT_HASH, 2**64 - 1):
        stored = to_signed64(value)
        assert -(2**63) <= stored < 2**63
        assert from_signed64(stored) == value
    with pytest.raises(ValueError):
        to_signed64(2**64)


def test_a_stored_upload_reads_back_with_exact_hashes(repo: Repository) -> None:
    content_id = repo.save_content(
        content(
            "aa",
            image("page=1"),
            image("page=2", hash=StoredHash(2**64 - 1, "dhash64", 64, True)),
        )
    )
    stored = repo.get_content(content_id, "dhash64")
    assert stored.sha256 == hashlib.sha256(b"aa").hexdigest()
    assert [i.locator for i in stored.images] == ["page=1", "page=2"]
    first = stored.images[0]
    assert first.hash == StoredHash(TOP_BIT_HASH, "dhash64", 64, False)
    assert first.hash.hex() == "f0e1d2c3b4a59687"
    assert (first.source, first.width, first.library) == ("camera-1", 640, False)
    assert first.created_at.tzinfo is not None
    assert stored.images[1].hash == StoredHash(2**64 - 1, "dhash64", 64, True)


def test_a_256_bit_hash_is_stored_as_bytes_and_read_back_exactly(repo: Repository) -> None:
    value = int.from_bytes(bytes(range(200, 232)), "big")
    content_id = repo.save_content(
        content("bb", image(hash=StoredHash(value, "dhash256", 256, False)), library=True)
    )
    stored = repo.get_content(content_id, "dhash256")
    assert stored.images[0].hash == StoredHash(value, "dhash256", 256, False)
    batch = repo.library_since("dhash256", 256, 0, 10)
    assert batch.hashes.shape == (1, 4)
    assert int.from_bytes(batch.hashes.astype(">u8").tobytes(), "big") == value


def test_the_same_bytes_twice_are_refused_and_leave_nothing_half_written(repo: Repository) -> None:
    repo.save_content(content("cc"))
    before = {t: count(repo, t) for t in ("contents", "images", "hashes", "audit_events")}
    with pytest.raises(DuplicateContent):
        repo.save_content(content("cc", image("other"), image("more"), library=True))
    after = {t: count(repo, t) for t in ("contents", "images", "hashes", "audit_events")}
    assert after == before
    assert count(repo, "library_members") == 0


def test_concurrent_saves_of_the_same_bytes_store_it_once(repo: Repository) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def save() -> None:
        barrier.wait()
        try:
            repo.save_content(content("dd", library=True))
            outcomes.append("stored")
        except DuplicateContent:
            outcomes.append("duplicate")

    threads = [threading.Thread(target=save) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["duplicate"] * 3 + ["stored"]
    assert count(repo, "contents") == 1
    assert count(repo, "library_members") == 1


def test_library_rows_come_in_watermark_order_with_paging(repo: Repository) -> None:
    ids = []
    for n in range(5):
        cid = repo.save_content(content(f"e{n}", image(value=n), library=n != 2))
        ids.append(repo.get_content(cid, "dhash64").images[0].id)
    first = repo.library_since("dhash64", 64, 0, 3)
    assert first.max_member_id == 4
    assert first.image_ids.tolist() == [ids[0], ids[1], ids[3]]
    assert first.hashes.tolist() == [0, 1, 3]
    rest = repo.library_since("dhash64", 64, first.last_member_id, 3)
    assert rest.image_ids.tolist() == [ids[4]]
    assert repo.library_since("dhash64", 64, rest.last_member_id, 3).empty
    # Library rows hashed with another algorithm advance the watermark but are not returned.
    assert repo.library_since("dhash256", 256, 0, 10).image_ids.size == 0
    # Adding an existing upload to the library is idempotent.
    content_id = repo.get_image(ids[2], "dhash64").content_id
    assert repo.add_content_to_library(content_id) == 1
    assert repo.add_content_to_library(content_id) == 0
    newest = repo.library_since("dhash64", 64, rest.last_member_id, 10)
    assert newest.image_ids.tolist() == [ids[2]]


def test_concurrent_library_writers_never_hide_a_row_from_a_polling_reader(
    repo: Repository,
) -> None:
    """Ids must become visible in id order, or a reader's watermark would skip one forever."""
    seen: set[int] = set()
    done = threading.Event()
    watermark = 0

    def poll() -> None:
        nonlocal watermark
        batch = repo.library_since("dhash64", 64, watermark, 1000)
        seen.update(batch.image_ids.tolist())
        watermark = batch.last_member_id

    def write(worker: int) -> None:
        for n in range(15):
            repo.save_content(
                content(f"f{worker}x{n}", image(value=worker * 100 + n), library=True)
            )

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in writers:
        t.start()
    reader = threading.Thread(target=lambda: [poll() for _ in iter(done.is_set, True)])
    reader.start()
    for t in writers:
        t.join()
    done.set()
    reader.join()
    poll()
    assert len(seen) == 60
    assert count(repo, "library_members") == 60


def test_matches_and_review_items_are_stored_with_their_image(repo: Repository) -> None:
    lib_id = repo.save_content(content("g1", image("lib", value=0b1111), library=True))
    library_image = repo.get_content(lib_id, "dhash64").images[0]
    query_id = repo.save_content(
        content(
            "g2",
            image(
                "q",
                value=0b0000,
                decision="review",
                confidence=0.6,
                matches=[NewMatch(library_image.id, 0, 4, 0.6)],
                review=NewReview(library_image.id, 4, 0.6, "review_band"),
            ),
        )
    )
    query = repo.get_content(query_id, "dhash64").images[0]
    assert query.decision == "review"
    assert query.review_id is not None
    [found] = query.matches
    assert (found.image_id, found.distance, found.locator, found.source) == (
        library_image.id,
        4,
        "lib",
        "camera-1",
    )
    assert found.hash is not None and found.hash.value == 0b1111
    assert repo.image_refs([library_image.id])[library_image.id].locator == "lib"


def test_a_review_item_is_resolved_exactly_once_and_audited(repo: Repository) -> None:
    cid = repo.save_content(
        content(
            "h1",
            image(
                decision="review",
                confidence=0.4,
                review=NewReview(None, None, 0.4, "low_information"),
            ),
        )
    )
    review_id = repo.get_content(cid, "dhash64").images[0].review_id
    assert review_id is not None
    assert repo.count_reviews("pending") == 1
    assert [r.id for r in repo.review_items("pending", 10, 0)] == [review_id]
    resolved = repo.resolve_review(review_id, "confirm", "ana")
    assert (resolved.status, resolved.reviewer) == ("confirmed", "ana")
    assert resolved.resolved_at is not None
    assert repo.count_reviews("pending") == 0
    with pytest.raises(Conflict, match="already confirmed"):
        repo.resolve_review(review_id, "reject", "bob")
    with pytest.raises(NotFound):
        repo.resolve_review(review_id + 100, "reject", "bob")
    actions = [e["action"] for e in repo.audit_events("review_item", review_id)]
    assert actions == ["review_confirm"]


def test_unknown_images_are_not_found(repo: Repository) -> None:
    with pytest.raises(NotFound):
        repo.get_image(424242, "dhash64")
    assert np.asarray(repo.library_since("dhash64", 64, 0, 5).image_ids).size == 0


def _rows_of(repo: Repository, content_id: int) -> dict[str, list[tuple[object, ...]]]:
    """Everything one stored upload wrote, ids as positions, times and its sha256 left out."""
    with repo.engine.connect() as c:
        ids = list(
            c.execute(
                sa.text("SELECT id FROM images WHERE content_id = :c ORDER BY id"),
                {"c": content_id},
            ).scalars()
        )
        at = {image_id: n for n, image_id in enumerate(ids)}

        def rows(sql: str, key: int = 0) -> list[tuple[object, ...]]:
            found = c.execute(sa.text(sql), {"c": content_id, "ids": ids}).all()
            return sorted((at[r[key]], *r[:key], *r[key + 1 :]) for r in found)

        audit = c.execute(
            sa.text("SELECT actor, action, detail FROM audit_events WHERE subject_id = :c"),
            {"c": content_id},
        ).all()
        return {
            "content": [
                tuple(r)
                for r in c.execute(
                    sa.text(
                        "SELECT input_kind, size_bytes, filename, source, failures FROM contents"
                        " WHERE id = :c"
                    ),
                    {"c": content_id},
                )
            ],
            "images": rows(
                "SELECT id, locator, kind, width, height, decision, confidence FROM images"
                " WHERE content_id = :c"
            ),
            "hashes": rows(
                "SELECT image_id, algorithm, bits, value, wide, low_information FROM hashes"
                " WHERE image_id = ANY(:ids)"
            ),
            "thumbnails": rows(
                "SELECT image_id, media_type, width, height, data FROM thumbnails"
                " WHERE image_id = ANY(:ids)"
            ),
            "matches": rows(
                "SELECT query_image_id, library_image_id, rank, distance, confidence, decision"
                " FROM matches WHERE query_image_id = ANY(:ids)"
            ),
            "reviews": rows(
                "SELECT image_id, candidate_image_id, distance, confidence, reason, status,"
                " reviewer, resolved_at FROM review_items WHERE image_id = ANY(:ids)"
            ),
            "audit": [
                (actor, action, {k: v for k, v in detail.items() if k != "sha256"})
                for actor, action, detail in audit
            ],
        }


@pytest.mark.postgres
def test_the_one_statement_write_stores_what_the_transaction_stores(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL writes an ordinary upload as one statement (store/one_statement.py), the rest
    # as a transaction of statements: the same upload written both ways leaves the same rows.
    schema.upgrade(postgres_url)
    repo = Repository(schema.create_engine_for(postgres_url))
    try:
        one = repo.save_content(content("lib1", image("a", value=1), library=True))
        two = repo.save_content(content("lib2", image("b", value=2), library=True))
        lib = [repo.get_content(i, "dhash64").images[0].id for i in (one, two)]
        matched = image(
            "page 1",
            value=3,
            decision="review",
            confidence=0.55,
            matches=[NewMatch(lib[1], 0, 3, 0.55), NewMatch(lib[0], 1, 5, 0.4)],
            review=NewReview(lib[1], 3, 0.55, "review_band"),
            thumbnail=NewThumbnail(b"RIFF-webp-bytes", 64, 48, "image/webp"),
        )
        plain = image(
            "page 2", value=TOP_BIT_HASH, thumbnail=NewThumbnail(b"x", 1, 1, "image/webp")
        )
        wide = image("page 3", hash=StoredHash(2**255 + 7, "dhash256", 256, True))

        def upload(sha: str) -> NewContent:
            return replace(content(sha, matched, plain, wide), failures=[{"locator": "p4"}])

        in_one = repo.store_content(upload("one statement"))
        monkeypatch.setattr("dhash_service.store.repository.MAX_IMAGES", 0)
        in_many = repo.store_content(upload("transaction"))
        assert _rows_of(repo, in_one.id) == _rows_of(repo, in_many.id)
        assert _rows_of(repo, in_one.id)["reviews"] and _rows_of(repo, in_one.id)["matches"]
        assert in_one.refs == in_many.refs and set(in_one.refs) == set(lib)
        assert [s.review_id is not None for s in in_one.images] == [True, False, False]
        with pytest.raises(DuplicateContent):
            monkeypatch.setattr("dhash_service.store.repository.MAX_IMAGES", 4)
            repo.store_content(upload("one statement"))
    finally:
        repo.engine.dispose()


@pytest.mark.postgres
def test_a_lost_connection_on_the_direct_path_is_sqlalchemys_error_and_is_replaced(
    postgres_url: str,
) -> None:
    # The lookup and the one-statement write go straight to psycopg (store/direct.py): a
    # connection the server killed must fail as SQLAlchemy's OperationalError (what the service
    # turns into a 503) and leave the pool, so the next ingest gets a fresh connection.
    schema.upgrade(postgres_url)
    repo = Repository(schema.create_engine_for(postgres_url, pool_size=1, max_overflow=0))
    try:
        assert repo.ingest_lookup("0" * 64).content_id is None
        killer = schema.create_engine_for(postgres_url)
        with killer.connect() as other:
            other.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            other.commit()
        killer.dispose()
        with pytest.raises(sa.exc.OperationalError):
            repo.ingest_lookup("0" * 64)
        assert repo.ingest_lookup("0" * 64).content_id is None  # a new connection
        saved = repo.store_content(content("after the loss"))
        assert repo.ingest_lookup(content("after the loss").sha256).content_id == saved.id
        with pytest.raises(DuplicateContent):  # IntegrityError, wrapped as SQLAlchemy's
            repo.store_content(content("after the loss"))
    finally:
        repo.engine.dispose()


def test_a_server_that_refuses_connections_on_the_direct_path_is_sqlalchemys_error() -> None:
    # raw_connection() lets a failed connect out as psycopg's own error (the CI run of session 6
    # answered 500 while PostgreSQL shut down): the direct path must wrap it like the others.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it once closed
    url = f"postgresql+psycopg://dhash@127.0.0.1:{port}/dhash?connect_timeout=2"
    repo = Repository(schema.create_engine_for(url, pool_size=1, max_overflow=0))
    try:
        with pytest.raises(sa.exc.OperationalError):
            repo.ingest_lookup("0" * 64)
    finally:
        repo.engine.dispose()

"""Claims, skips and decisions of the review desk on real SQLite and PostgreSQL stores.

Reviewers race for the queue from threads, each with its own connection: no item is ever
claimed by two at once, an expired claim is taken over, a skipped item is not offered again to
the one who skipped it, and a decision on an item someone else holds is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from dhash_service.errors import Conflict, InputError
from dhash_service.review import ReviewQueue
from dhash_service.review_desk import ReviewDesk, queue_filter
from dhash_service.store import schema
from dhash_service.store.console import ConsoleStore, QueueFilter
from dhash_service.store.repository import Repository
from tests.support.postgres import PostgresServer
from tests.support.review_seed import seed_store

ITEMS = 12


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def desk_on(url: str, clock: Clock) -> ReviewDesk:
    engine = schema.create_engine_for(url)
    repository = Repository(engine)
    return ReviewDesk(
        ReviewQueue(repository),
        repository,
        ConsoleStore(engine),
        algorithm="dhash64",
        claim_seconds=60,
        clock=clock,
    )


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('claims') / 'dhash.sqlite3'}"
        schema.upgrade(url)
        seed_store(url, ITEMS, candidates=3, pool=3)
        yield url
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    database = server.create_database("claims")
    url = server.url(database)
    try:
        schema.upgrade(url)
        seed_store(url, ITEMS, candidates=3, pool=3)
        yield url
    finally:
        server.drop_database(database)


@pytest.fixture
def desk(store_url: str) -> Iterator[tuple[ReviewDesk, Clock]]:
    clock = Clock()
    desk = desk_on(store_url, clock)
    yield desk, clock
    with desk.store.engine.begin() as connection:  # every test starts with no claims or skips
        connection.execute(sa.text("DELETE FROM review_claims"))
        connection.execute(sa.text("DELETE FROM review_skips"))
    desk.store.engine.dispose()


def test_a_claim_is_exclusive_until_it_expires(desk: tuple[ReviewDesk, Clock]) -> None:
    desk_, clock = desk
    first = desk_.next_item("alice", QueueFilter())
    assert first is not None
    assert desk_.next_item("alice", QueueFilter()) == first  # her own claim comes back
    other = desk_.next_item("bob", QueueFilter())
    assert other is not None and other != first
    view = desk_.open_item(first, "bob")
    assert view.claim is not None and not view.claim.claimed and view.claim.holder == "alice"
    with pytest.raises(Conflict, match="claimed by alice"):
        desk_.decide(first, "confirm", "bob")
    clock.now += timedelta(seconds=61)
    assert desk_.open_item(first, "bob").claim.claimed  # type: ignore[union-attr]


def test_a_skipped_item_is_not_offered_again_to_who_skipped_it(
    desk: tuple[ReviewDesk, Clock],
) -> None:
    desk_, _ = desk
    first = desk_.next_item("carol", QueueFilter())
    assert first is not None
    desk_.skip(first, "carol")
    second = desk_.next_item("carol", QueueFilter())
    assert second is not None and second != first
    assert desk_.next_item("dave", QueueFilter()) == first  # others still get it


def test_a_decision_ends_the_claim_and_is_audited_with_its_door(
    desk: tuple[ReviewDesk, Clock],
) -> None:
    desk_, _ = desk
    found = desk_.next_item("erin", QueueFilter())
    assert found is not None
    out = desk_.decide(found, "reject", "erin")
    assert out.status == "rejected" and out.reviewer == "erin"
    with desk_.store.engine.connect() as connection:
        claims = connection.execute(
            sa.text("SELECT count(*) FROM review_claims WHERE review_id = :id"), {"id": found}
        ).scalar_one()
        [(actor, action)] = connection.execute(
            sa.text(
                "SELECT actor, action FROM audit_events WHERE subject_id = :id "
                "AND subject_type = 'review_item'"
            ),
            {"id": found},
        ).all()
    assert claims == 0 and (actor, action) == ("erin", "review_reject")
    [row] = [r for r in desk_.decisions(10) if r.review_id == found]
    assert row.via == "console" and row.reviewer == "erin"
    with pytest.raises(Conflict, match="already rejected"):
        desk_.decide(found, "confirm", "erin")


def test_bulk_decides_each_item_and_leaves_the_claimed_ones(
    desk: tuple[ReviewDesk, Clock],
) -> None:
    desk_, _ = desk
    ids = desk_.selection(QueueFilter())[:3]
    held = desk_.next_item("frank", QueueFilter())
    assert held == ids[0]
    result = desk_.bulk(ids, "confirm", "gina")
    assert result.decided == ids[1:] and list(result.refused) == [ids[0]]
    assert "claimed by frank" in result.refused[ids[0]]


def test_the_queue_filters_by_reason_source_and_age(desk: tuple[ReviewDesk, Clock]) -> None:
    desk_, clock = desk
    everything = desk_.page(QueueFilter()).total
    assert everything > 0
    assert desk_.page(queue_filter("review_band", None, None)).total == everything
    assert desk_.page(queue_filter("ambiguous", None, None)).total == 0
    assert desk_.page(queue_filter(None, "bench-upload-1", None)).total >= 1
    assert desk_.page(queue_filter(None, "%", None)).total == 0  # LIKE wildcards are text
    clock.now = datetime.now(UTC)  # the items were seeded moments ago
    assert desk_.page(queue_filter(None, None, "1h")).total == 0
    clock.now += timedelta(hours=2)
    assert desk_.page(queue_filter(None, None, "1h")).total == everything
    rows = desk_.page(QueueFilter(), limit=50).rows
    assert [r.id for r in rows] == sorted(r.id for r in rows)  # oldest first
    for bad in (("nope", None, None), (None, "x" * 201, None), (None, None, "2h")):
        with pytest.raises(InputError):
            queue_filter(*bad)


def test_a_thumbnail_goes_with_its_image(store_url: str) -> None:
    engine = schema.create_engine_for(store_url)
    try:
        with engine.begin() as connection:
            image_id = connection.execute(
                sa.text("SELECT min(image_id) FROM thumbnails")
            ).scalar_one()
            connection.execute(sa.text("DELETE FROM images WHERE id = :id"), {"id": image_id})
            left = connection.execute(
                sa.text("SELECT count(*) FROM thumbnails WHERE image_id = :id"), {"id": image_id}
            ).scalar_one()
            connection.rollback()
    finally:
        engine.dispose()
    assert left == 0


def test_racing_reviewers_never_hold_the_same_item(desk: tuple[ReviewDesk, Clock]) -> None:
    """Last in the module: four reviewers clear what is left of the queue at once."""
    shared, clock = desk
    url = shared.store.engine.url.render_as_string(hide_password=False)
    left = set(shared.selection(QueueFilter()))
    decided: dict[str, list[int]] = {}
    failures: list[BaseException] = []
    barrier = threading.Barrier(4, timeout=60)
    holding = threading.Barrier(4, timeout=60)
    first: dict[str, int | None] = {}

    def reviewer(name: str) -> None:
        own = desk_on(url, clock)
        mine: list[int] = []
        try:
            barrier.wait()
            first[name] = own.next_item(name, QueueFilter())
            holding.wait()  # all four hold a claim at the same moment
            while (found := own.next_item(name, QueueFilter())) is not None:
                mine.append(found)
                own.decide(found, "reject", name)  # a Conflict here would be a double claim
        except BaseException as exc:
            failures.append(exc)
        finally:
            decided[name] = mine
            own.store.engine.dispose()

    threads = [threading.Thread(target=reviewer, args=(f"r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    everything = [i for ids in decided.values() for i in ids]
    assert sorted(everything) == sorted(left)  # each item once, by one reviewer
    held = list(first.values())
    assert None not in held and len(set(held)) == 4, first  # four claims, four items

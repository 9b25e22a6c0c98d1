"""The typed client against a real server: answers as models, errors as the server's own classes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dhash_service.api.app import create_app
from dhash_service.client import DhashClient
from dhash_service.errors import (
    AuthError,
    Conflict,
    InputError,
    NotFound,
    Unavailable,
    UnsupportedFormat,
)
from tests.support.api import TOKEN, near_copy, photo, settings_for
from tests.support.live_server import free_port, running_app, wait_ready
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def base_url(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    database = postgres_server.create_database("client")
    settings = settings_for(postgres_server.url(database), tmp_path_factory.mktemp("client"))
    try:
        with running_app(create_app(settings)) as url:
            wait_ready(url)
            yield url
    finally:
        postgres_server.drop_database(database)


def test_the_client_covers_probes_hashing_ingest_search_and_review(base_url: str) -> None:
    with DhashClient(base_url, token=TOKEN) as api:
        assert api.health().status == "ok"
        ready = api.ready()
        assert ready.ready and ready.status_code == 200 and ready.checks["index"] == "ok"
        hashed = api.hash(photo(500), filename="a.jpg")
        report = api.ingest(photo(500), filename="a.jpg", library=True, source="client-test")
        [item] = report.items
        assert item.hash == hashed.items[0].hash and item.decision == "new"
        assert api.image(item.image_id).source == "client-test"
        assert [m.image_id for m in api.search(item.hash, radius=0)] == [item.image_id]
        assert api.review_items(status="confirmed") == []
        assert "dhash_build_info" in api.metrics_text()


def test_error_answers_are_raised_as_the_servers_error_classes(base_url: str) -> None:
    with DhashClient(base_url, token=TOKEN) as api:
        with pytest.raises(NotFound) as missing:
            api.image(123456789)
        assert missing.value.detail["status"] == 404 and missing.value.detail["request_id"]
        with pytest.raises(UnsupportedFormat):
            api.hash(b"plain text")
        with pytest.raises(InputError):
            api.search("not-hex")
        with pytest.raises(NotFound):
            api.resolve_review(99999999, "confirm")
    with DhashClient(base_url, token="wrong") as intruder, pytest.raises(AuthError):
        intruder.review_items()


def test_resolving_twice_raises_conflict(base_url: str) -> None:
    with DhashClient(base_url, token=TOKEN) as api:
        api.ingest(photo(501), library=True)
        near = near_copy(api, 501)
        review_id = api.ingest(near).items[0].review_id
        assert review_id is not None
        assert api.resolve_review(review_id, "reject", reviewer="bob").reviewer == "bob"
        with pytest.raises(Conflict):
            api.resolve_review(review_id, "confirm")


def test_an_unreachable_server_raises_unavailable() -> None:
    with DhashClient(f"http://127.0.0.1:{free_port()}", timeout=2) as api:
        with pytest.raises(Unavailable, match="cannot reach"):
            api.health()
        with pytest.raises(Unavailable):
            api.ready()

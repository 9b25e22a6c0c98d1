"""What docs/api.md says about answers outside the JSON error shape, and the review list order,
checked against a real server on 127.0.0.1 (SQLite store, in-process uvicorn)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from dhash_service.api.app import create_app
from tests.support.api import AUTH, ingest, near_copy, photo, settings_for
from tests.support.live_server import running_app, wait_ready


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("protocol-edges")
    settings = settings_for(f"sqlite:///{tmp / 'dhash.sqlite3'}", tmp)
    with running_app(create_app(settings)) as url:
        wait_ready(url)
        yield url


def raw_exchange(url: str, request: bytes) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_request_that_is_not_http_is_a_plain_400_and_the_connection_closes(api: str) -> None:
    answer = raw_exchange(
        api, b"POST /v1/hash HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n"
    )  # returns only because the server closes the connection
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"application/json" not in answer and b"Traceback" not in answer
    assert b"x-request-id" not in answer.lower()
    counted = httpx.get(f"{api}/metrics").text
    assert 'route="/v1/hash",status="400"' not in counted


def test_other_methods_on_a_probe_are_405_and_say_which_are_allowed(api: str) -> None:
    response = httpx.delete(f"{api}/health")
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
    assert httpx.head(f"{api}/health").status_code == 200


def test_the_review_queue_lists_oldest_first(api: str) -> None:
    with httpx.Client(base_url=api, timeout=30, headers=AUTH) as client:
        queued = []
        for seed in (31, 32, 33):
            assert ingest(client, photo(seed), library="true").status_code == 201
            item = ingest(client, near_copy(client, seed)).json()["items"][0]
            assert item["decision"] == "review", item
            queued.append(item["review_id"])
        listed = client.get("/v1/review", headers=AUTH).json()["items"]
        assert [entry["id"] for entry in listed] == sorted(queued)
        page = client.get("/v1/review", params={"offset": 1, "limit": 1}, headers=AUTH).json()
        assert [entry["id"] for entry in page["items"]] == sorted(queued)[1:2]

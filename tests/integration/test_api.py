"""The HTTP API against a real server on 127.0.0.1 and a real PostgreSQL store."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dhash_service.api.app import create_app
from dhash_service.api.lifecycle import Lifecycle
from dhash_service.config import Settings
from dhash_service.index.sync import LibraryBatch
from dhash_service.service import DhashService
from tests.support.api import (
    AUTH,
    TOKEN,
    UPLOAD_LIMIT,
    assert_error_body,
    ingest,
    near_copy,
    photo,
    settings_for,
)
from tests.support.corpus import encode, realistic_photo, truncated
from tests.support.live_server import free_port, running_app, wait_ready
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def api(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database = postgres_server.create_database("api")
    settings = settings_for(postgres_server.url(database), tmp_path_factory.mktemp("api"))
    try:
        with running_app(create_app(settings)) as url:
            wait_ready(url)
            yield url
    finally:
        postgres_server.drop_database(database)


@pytest.fixture
def client(api: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, timeout=30, headers=AUTH) as c:
        yield c


# --- ingest, hash, read ---------------------------------------------------------------------------


def test_ingest_returns_each_item_with_hash_decision_confidence_and_matches(
    client: httpx.Client,
) -> None:
    library = ingest(client, photo(101), library="true", source="catalogue")
    assert library.status_code == 201, library.text
    first = library.json()
    assert first["library"] is True and first["input_kind"] == "image"
    [item] = first["items"]
    assert item["decision"] == "new" and item["confidence"] == 1.0 and item["matches"] == []
    assert len(item["hash"]) == 16 and item["algorithm"] == "dhash64"

    copy = ingest(client, photo(101, quality=60))
    assert copy.status_code == 201, copy.text
    [copied] = copy.json()["items"]
    assert copied["decision"] == "match"
    assert copied["matches"][0]["image_id"] == item["image_id"]
    assert copied["matches"][0]["source"] == "catalogue"
    assert 0 < copied["confidence"] <= 1


def test_raw_body_and_multipart_upload_hash_the_same(client: httpx.Client) -> None:
    data = photo(102)
    raw = client.post("/v1/hash", content=data, headers={"content-type": "image/jpeg"})
    multipart = client.post("/v1/hash", files={"file": ("x.jpg", data, "image/jpeg")})
    assert raw.status_code == multipart.status_code == 200
    assert raw.json()["items"] == multipart.json()["items"]
    assert raw.json()["items"][0]["hash"]


def test_hash_only_stores_nothing(client: httpx.Client) -> None:
    hashed = client.post("/v1/hash", files={"file": ("x.jpg", photo(103))}).json()
    found = client.get("/v1/search", params={"hash": hashed["items"][0]["hash"], "radius": 0})
    assert found.status_code == 200
    assert found.json() == {"matches": []}


def test_get_image_returns_the_stored_image_and_404_otherwise(client: httpx.Client) -> None:
    report = ingest(client, photo(104), source="cam-7").json()
    image_id = report["items"][0]["image_id"]
    got = client.get(f"/v1/images/{image_id}")
    assert got.status_code == 200
    body = got.json()
    assert body["id"] == image_id and body["source"] == "cam-7" and body["library"] is False
    assert body["hash"] == report["items"][0]["hash"]
    assert_error_body(client.get("/v1/images/987654321"), 404, "not_found")


def test_search_finds_library_images_within_the_radius_nearest_first(
    client: httpx.Client,
) -> None:
    report = ingest(client, photo(105), library="true").json()
    [item] = report["items"]
    exact = client.get("/v1/search", params={"hash": item["hash"], "radius": 0}).json()
    assert [m["image_id"] for m in exact["matches"]] == [item["image_id"]]
    flipped = f"{int(item['hash'], 16) ^ 0b111:016x}"  # three bits away
    assert client.get("/v1/search", params={"hash": flipped, "radius": 2}).json() == {"matches": []}
    near = client.get("/v1/search", params={"hash": flipped, "radius": 3}).json()["matches"]
    assert [(m["image_id"], m["distance"]) for m in near][:1] == [(item["image_id"], 3)]


@pytest.mark.parametrize(
    "params",
    [{"hash": "xyz", "radius": 1}, {"hash": "00" * 8, "radius": 33}, {"radius": 1}],
)
def test_bad_search_parameters_are_422_with_the_error_body(
    client: httpx.Client, params: dict[str, object]
) -> None:
    assert_error_body(client.get("/v1/search", params=params), 422, "invalid_input")


# --- review ---------------------------------------------------------------------------------------


def test_review_queue_lists_low_confidence_items_and_resolves_each_once(
    client: httpx.Client,
) -> None:
    ingest(client, photo(106), library="true")
    near = ingest(client, near_copy(client, 106)).json()
    [item] = near["items"]
    assert item["decision"] == "review" and item["review_id"] is not None

    pending = client.get("/v1/review", headers=AUTH)
    assert pending.status_code == 200
    queued = {i["id"]: i for i in pending.json()["items"]}
    assert queued[item["review_id"]]["image_id"] == item["image_id"]
    assert queued[item["review_id"]]["status"] == "pending"

    resolved = client.post(
        f"/v1/review/{item['review_id']}", json={"action": "confirm"}, headers=AUTH
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "confirmed"
    assert resolved.json()["reviewer"].startswith("token:")  # the token's fingerprint, not it
    assert TOKEN not in resolved.text

    again = client.post(
        f"/v1/review/{item['review_id']}",
        json={"action": "reject", "reviewer": "alice"},
        headers=AUTH,
    )
    assert_error_body(again, 409, "conflict")
    still = client.get("/v1/review", params={"status": "confirmed"}, headers=AUTH).json()
    assert item["review_id"] in {i["id"] for i in still["items"]}


def test_resolving_an_unknown_review_item_is_404(client: httpx.Client) -> None:
    response = client.post("/v1/review/99999999", json={"action": "reject"}, headers=AUTH)
    assert_error_body(response, 404, "not_found")


def _requests_counted(client: httpx.Client, route: str, status: int) -> float:
    label = f'dhash_requests_total{{route="{route}",status="{status}"}} '
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(label)]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_an_upload_without_a_query_is_answered_as_one_through_fastapi(
    client: httpx.Client,
) -> None:
    """Without a query string the uploads take ``upload_lane``; an empty ``filename`` (which
    changes nothing) sends the same request through FastAPI: the answers must be the same, and
    counted under the same route."""
    data = photo(161)
    lane, routed = (client.post(f"/v1/hash{query}", content=data) for query in ("", "?filename="))
    assert lane.status_code == routed.status_code == 200
    assert lane.content == routed.content
    assert lane.headers["content-type"] == routed.headers["content-type"] == "application/json"
    bad = [client.post(f"/v1/images{q}", content=truncated(photo(162))) for q in ("", "?source=")]
    assert bad[0].status_code == bad[1].status_code == 422
    assert {**bad[0].json(), "request_id": None} == {**bad[1].json(), "request_id": None}
    before = _requests_counted(client, "/v1/images", 201)
    stored = client.post("/v1/images", content=photo(163))
    assert stored.status_code == 201 and stored.json()["items"][0]["decision"] == "new"
    assert _requests_counted(client, "/v1/images", 201) == before + 1


# --- auth -----------------------------------------------------------------------------------------

PROTECTED = [
    ("POST", "/v1/images"),
    ("GET", "/v1/review"),
    ("POST", "/v1/review/1"),
    ("POST", "/v1/hash"),
    ("GET", "/v1/images/1"),
    ("GET", "/v1/search?hash=0123456789abcdef"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer"])
def test_every_endpoint_that_costs_or_reads_refuses_a_missing_or_wrong_token(
    api: str, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    with httpx.Client(base_url=api, timeout=30) as bare:
        response = bare.request(method, path, headers=headers, content=photo(107))
    assert_error_body(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.fixture(scope="module")
def scoped_api(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    database = postgres_server.create_database("scopes")
    settings = settings_for(
        postgres_server.url(database),
        tmp_path_factory.mktemp("scopes"),
        api_read_tokens=["read-token-1234"],
        api_write_tokens=["write-token-1234"],
        api_review_tokens=["review-token-1234"],
    )
    try:
        with running_app(create_app(settings)) as url:
            wait_ready(url)
            yield url
    finally:
        postgres_server.drop_database(database)


SCOPED_ROUTES = {
    "read": [("POST", "/v1/hash"), ("GET", "/v1/search?hash=0123456789abcdef")],
    "write": [("POST", "/v1/images")],
    "review": [("GET", "/v1/review")],
}
TOKEN_SCOPES = {
    "read-token-1234": {"read"},
    "write-token-1234": {"read", "write"},
    "review-token-1234": {"read", "review"},
    TOKEN: {"read", "write", "review"},  # DHASH_API_TOKENS: every scope, as before scopes
}


@pytest.mark.parametrize("token", sorted(TOKEN_SCOPES))
def test_each_token_reaches_exactly_the_endpoints_of_its_scopes(
    scoped_api: str, token: str
) -> None:
    seed = 130 + sorted(TOKEN_SCOPES).index(token)
    with httpx.Client(base_url=scoped_api, timeout=30) as client:
        for scope, routes in SCOPED_ROUTES.items():
            for method, path in routes:
                response = client.request(
                    method, path, content=photo(seed), headers={"Authorization": f"Bearer {token}"}
                )
                if scope in TOKEN_SCOPES[token]:
                    assert response.status_code in (200, 201), (token, path, response.text)
                else:
                    assert_error_body(response, 403, "forbidden")
                    assert response.json()["detail"]["needs"] == scope


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/openapi.json"])
def test_probes_metrics_and_openapi_are_open(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_probes_answer_head_like_get_without_a_body(client: httpx.Client, path: str) -> None:
    head = client.head(path)
    assert head.status_code == client.get(path).status_code == 200
    assert head.content == b""


def test_an_unconfigured_service_fails_closed(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    database = postgres_server.create_database("noauth")
    try:
        settings = settings_for(postgres_server.url(database), tmp_path, api_tokens=[])
        with running_app(create_app(settings)) as url:
            response = httpx.get(f"{url}/v1/review", headers={"Authorization": "Bearer any"})
            assert_error_body(response, 401, "unauthorized")
            assert "none is configured" in response.json()["message"]
    finally:
        postgres_server.drop_database(database)


# --- upload limit and extraction errors -----------------------------------------------------------


def _raw_http(port: int, head: bytes, body_chunks: list[bytes]) -> bytes:
    """Send a request by hand, never finishing its body, and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        headers, _, body = answer.partition(b"\r\n\r\n")
        length = int(headers.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
        return headers + b"\r\n\r\n" + body


def test_an_upload_over_the_limit_is_refused_while_it_streams(api: str) -> None:
    port = int(api.rsplit(":", 1)[1])
    chunk = b"\xff" * 65536
    n_chunks = UPLOAD_LIMIT // len(chunk) + 2  # just over the limit; the body never ends
    head = (
        f"POST /v1/hash HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    framed = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(n_chunks)]
    answer = _raw_http(port, head, framed)  # no terminating chunk was sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"input_too_large"' in answer


def test_a_declared_length_over_the_limit_is_refused_before_reading(api: str) -> None:
    port = int(api.rsplit(":", 1)[1])
    head = (
        f"POST /v1/hash HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {50 * UPLOAD_LIMIT}\r\nContent-Type: image/jpeg\r\n\r\n"
    ).encode()
    answer = _raw_http(port, head, [b"\xff\xd8\xff"])  # three bytes of 50 MB sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_multipart_upload_over_the_limit_is_413(client: httpx.Client) -> None:
    big = b"\xff\xd8\xff" + bytes(UPLOAD_LIMIT + 10)
    response = client.post("/v1/hash", files={"file": ("big.jpg", big)})
    assert_error_body(response, 413, "input_too_large")


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 422, "empty_input"),
        (b"just some text, not an image", 415, "unsupported_format"),
        (truncated(encode(realistic_photo(64, 48, 1), "PNG"), 0.4), 422, "corrupt_input"),
    ],
    ids=["empty", "text", "truncated-png"],
)
def test_extraction_errors_are_json_4xx_never_a_traceback(
    client: httpx.Client, data: bytes, status: int, code: str
) -> None:
    assert_error_body(client.post("/v1/hash", content=data), status, code)
    assert_error_body(
        client.post("/v1/images", files={"file": ("f", data)}, headers=AUTH), status, code
    )


def test_a_multipart_body_without_the_file_field_is_422(client: httpx.Client) -> None:
    response = client.post("/v1/hash", files={"picture": ("x.jpg", photo(108))})
    assert_error_body(response, 422, "invalid_input")
    assert "'file'" in response.json()["message"]


# --- protocol details -----------------------------------------------------------------------------


def test_every_response_carries_a_request_id_and_keeps_a_sane_incoming_one(
    client: httpx.Client,
) -> None:
    generated = client.get("/health").headers["x-request-id"]
    assert len(generated) == 32
    assert (
        client.get("/health", headers={"X-Request-ID": "deploy-42.a"}).headers["x-request-id"]
        == "deploy-42.a"
    )
    hostile = client.get("/health", headers={"X-Request-ID": "a b\tc" + "x" * 100})
    assert hostile.headers["x-request-id"] != "a b\tc" + "x" * 100


def test_unknown_routes_and_methods_answer_with_the_error_body(client: httpx.Client) -> None:
    assert_error_body(client.get("/v2/nothing"), 404, "not_found")
    wrong_method = client.delete("/v1/hash")
    assert_error_body(wrong_method, 405, "method_not_allowed")


def test_openapi_describes_every_route(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) >= {
        "/health",
        "/ready",
        "/metrics",
        "/v1/images",
        "/v1/hash",
        "/v1/images/{image_id}",
        "/v1/search",
        "/v1/review",
        "/v1/review/{item_id}",
    }
    upload = paths["/v1/images"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload and "application/octet-stream" in upload


# --- readiness ------------------------------------------------------------------------------------


def test_ready_is_503_while_draining_and_health_stays_200(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    database = postgres_server.create_database("drain")
    lifecycle = Lifecycle()
    try:
        settings = settings_for(postgres_server.url(database), tmp_path)
        with running_app(create_app(settings, lifecycle=lifecycle)) as url:
            wait_ready(url)
            lifecycle.begin_drain()
            ready = httpx.get(f"{url}/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["shutdown"] == "draining"
            assert httpx.get(f"{url}/health").status_code == 200
    finally:
        postgres_server.drop_database(database)


def test_ready_is_503_when_the_store_is_unreachable(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    settings = settings_for(url, tmp_path, auto_migrate=False)
    with running_app(create_app(settings)) as base:
        ready = httpx.get(f"{base}/ready", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert ready.json()["checks"]["store"] != "ok"
        assert httpx.get(f"{base}/health").status_code == 200
        assert ready.headers["retry-after"] == "1"
        refused = httpx.post(f"{base}/v1/images", content=b"x", headers=AUTH, timeout=30)
        assert_error_body(refused, 503, "unavailable")
        assert refused.headers["retry-after"] == "1"


class GatedLoadService(DhashService):
    """The real service on a real store, whose first library read waits for a gate: the index
    stays "loading" exactly as long as the test wants."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.gate = threading.Event()

    def _fetch_library(self, after: int, limit: int) -> LibraryBatch:
        if not self.gate.wait(30):
            raise TimeoutError("the test never opened the gate")
        return super()._fetch_library(after, limit)


def test_while_the_index_loads_matching_routes_are_503_with_retry_after_never_an_answer(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    database = postgres_server.create_database("loading")
    settings = settings_for(postgres_server.url(database), tmp_path)
    service = GatedLoadService(settings)
    try:
        with (
            running_app(create_app(settings, service)) as base,
            httpx.Client(base_url=base, timeout=30, headers=AUTH) as client,
        ):
            # Start-up migrates the schema first, then loads the index: wait for the second.
            deadline = time.monotonic() + 30
            while True:
                ready = client.get("/ready")
                assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
                if ready.json()["checks"]["migrations"] == "ok" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert ready.json()["checks"]["index"] == "loading"
            for response in (
                client.post("/v1/images", content=photo(301)),
                client.post("/v1/images", content=photo(302), params={"library": "true"}),
                client.get("/v1/search", params={"hash": "0123456789abcdef", "radius": 4}),
            ):
                assert_error_body(response, 503, "unavailable")
                assert response.headers["retry-after"] == "1"
                assert "loading" in response.json()["message"]
            assert client.post("/v1/hash", content=photo(301)).status_code == 200  # no index
            assert client.get("/health").status_code == 200

            service.gate.set()
            wait_ready(base)
            stored = client.post("/v1/images", content=photo(301), params={"library": "true"})
            assert stored.status_code == 201, stored.text
    finally:
        service.gate.set()
        postgres_server.drop_database(database)

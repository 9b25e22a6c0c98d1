"""``/metrics`` holds exact values after known requests (one app, one registry per test)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from dhash_service import __version__
from dhash_service.api.app import create_app
from dhash_service.metrics import HASH_DURATION_BUCKETS
from tests.support.api import AUTH, UPLOAD_LIMIT, near_copy, photo, settings_for
from tests.support.corpus import (
    encode,
    pdf_with_images,
    realistic_photo,
    renamed_eps,
    truncated,
    zip_of,
)
from tests.support.live_server import running_app, wait_ready

pytestmark = pytest.mark.postgres

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@pytest.fixture
def client(postgres_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    app = create_app(settings_for(postgres_url, tmp_path), registry=CollectorRegistry())
    with running_app(app) as url:
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=30, headers=AUTH) as c:
            yield c


def test_extraction_counters_and_hash_histogram_count_exactly_what_was_extracted(
    client: httpx.Client,
) -> None:
    jpeg = [photo(200 + i) for i in range(4)]
    bad_member = truncated(encode(realistic_photo(64, 48, 9), "PNG"), 0.4)
    ok: Counter[str] = Counter()
    failed: Counter[str] = Counter()

    def post(path: str, data: bytes, expect: int) -> httpx.Response:
        headers = AUTH if path == "/v1/images" else {}
        response = client.post(path, files={"file": ("upload", data)}, headers=headers)
        assert response.status_code == expect, response.text
        return response

    for path, data, kind in [
        ("/v1/hash", jpeg[0], "image"),
        ("/v1/images", jpeg[1], "image"),
        ("/v1/images", pdf_with_images([jpeg[2], jpeg[3]]), "pdf"),
        (
            "/v1/hash",
            zip_of([("a.jpg", jpeg[0]), ("b.png", bad_member), ("c.jpg", jpeg[1])]),
            "zip",
        ),
    ]:
        report = post(path, data, 201 if path == "/v1/images" else 200).json()
        assert report["input_kind"] == kind
        ok[kind] += len(report["items"])
        failed[kind] += len(report["failures"])
    assert ok["image"] == ok["zip"] == 2 and ok["pdf"] >= 2 and +failed == Counter(zip=1)

    post("/v1/images", jpeg[1], 201)  # the same bytes again: a duplicate, nothing extracted
    post("/v1/hash", renamed_eps(), 415)
    post("/v1/hash", b"", 422)
    post("/v1/images", truncated(encode(realistic_photo(64, 48, 3), "PNG"), 0.4), 422)
    post("/v1/hash", b"\xff\xd8\xff" + bytes(UPLOAD_LIMIT), 413)  # refused before extraction
    failed.update({"unknown": 2, "image": 1})

    samples = scrape(client)
    extractions = series(samples, "dhash_extractions_total")
    for result, expected in (("ok", ok), ("failed", failed)):
        for kind in ("image", "pdf", "video", "zip", "unknown"):
            labels = frozenset({"result": result, "kind": kind}.items())
            assert extractions[labels] == expected[kind], (result, kind)

    hashed = sum(ok.values())
    assert value(samples, "dhash_hash_duration_seconds_count") == hashed
    buckets = [
        value(samples, "dhash_hash_duration_seconds_bucket", le=str(le))
        for le in HASH_DURATION_BUCKETS
    ]
    assert buckets == sorted(buckets)
    assert value(samples, "dhash_hash_duration_seconds_bucket", le="+Inf") == hashed
    assert value(samples, "dhash_hash_duration_seconds_bucket", le="10.0") == hashed
    assert 0 < value(samples, "dhash_hash_duration_seconds_sum") < 10 * hashed


def test_requests_are_counted_by_route_template_and_status(client: httpx.Client) -> None:
    ids = [
        client.post("/v1/images", content=photo(210 + i), headers=AUTH).json()["items"][0][
            "image_id"
        ]
        for i in range(2)
    ]
    for image_id in ids:
        assert client.get(f"/v1/images/{image_id}").status_code == 200
    assert client.get("/v1/images/99999999").status_code == 404
    assert client.get("/v1/images/not-a-number").status_code == 422
    assert client.get("/no/such/path").status_code == 404
    assert client.get("/another/unknown").status_code == 404
    assert client.delete("/v1/hash").status_code == 405
    assert client.get("/v1/review", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/openapi.json").status_code == 200

    first = scrape(client)
    requests = series(first, "dhash_requests_total")
    expected = {
        ("/v1/images", "201"): 2,
        ("/v1/images/{image_id}", "200"): 2,
        ("/v1/images/{image_id}", "404"): 1,
        ("/v1/images/{image_id}", "422"): 1,
        ("unmatched", "404"): 2,
        ("/v1/hash", "405"): 1,
        ("/v1/review", "401"): 1,
        ("/openapi.json", "200"): 1,
    }
    got = {(dict(k)["route"], dict(k)["status"]): v for k, v in requests.items()}
    # /ready was polled until the service was ready; everything else is exactly as sent.
    assert {k: v for k, v in got.items() if k[0] != "/ready"} == expected
    assert got[("/ready", "200")] == 1

    second = scrape(client)  # the first scrape is counted once it has been answered
    assert value(second, "dhash_requests_total", route="/metrics", status="200") == 1


def test_queue_length_gauge_is_read_from_the_store_at_scrape_time(client: httpx.Client) -> None:
    assert value(scrape(client), "dhash_low_confidence_queue_length") == 0
    client.post("/v1/images", content=photo(220), params={"library": "true"}, headers=AUTH)
    report = client.post("/v1/images", content=near_copy(client, 220), headers=AUTH).json()
    review_id = report["items"][0]["review_id"]
    assert review_id is not None
    assert value(scrape(client), "dhash_low_confidence_queue_length") == 1
    resolved = client.post(f"/v1/review/{review_id}", json={"action": "reject"}, headers=AUTH)
    assert resolved.status_code == 200
    assert value(scrape(client), "dhash_low_confidence_queue_length") == 0


def test_build_info_names_the_running_version(client: httpx.Client) -> None:
    info = series(scrape(client), "dhash_build_info")
    assert info == {frozenset({"version": __version__}.items()): 1.0}

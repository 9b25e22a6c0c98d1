"""The request budget stops a hash in its resize, through the API: a long strip under a small
budget is the budget's 422 well before its full resize would have ended, counted as a failed
extraction like any other refused input (issue 11: checked during hashing, not after)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dhash_service.api.app import create_app
from dhash_service.digest import digest
from dhash_service.extraction import Limits
from tests.support.api import AUTH, assert_error_body, settings_for
from tests.support.hostile import png_strip
from tests.support.live_server import running_app, wait_ready

# At the default side limit: its decode is ~10 ms, its resize to the hash grid ~0.4 s.
STRIP = png_strip(2_097_152, 1)


def failed_image_extractions(url: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
        for sample in family.samples
        if sample.name == "dhash_extractions_total"
        and sample.labels == {"result": "failed", "kind": "image"}
    )


@pytest.fixture(scope="module")
def unbudgeted_seconds() -> float:
    """The same file hashed with no budget at all, in this process, now: the full resize."""
    started = time.monotonic()
    result = digest(STRIP, limits=Limits())
    assert result.items[0].width == 2_097_152
    return time.monotonic() - started


@pytest.fixture
def api(unbudgeted_seconds: float, tmp_path: Path) -> Iterator[str]:
    # An eighth of what the whole hash takes on this machine at this moment: scaled with the
    # load, so the comparison below holds on a busy machine as on an idle one.
    settings = settings_for(
        f"sqlite:///{tmp_path / 'dhash.sqlite3'}",
        tmp_path,
        request_time_budget_seconds=round(unbudgeted_seconds / 8, 3),
        max_upload_bytes=len(STRIP) + 1024,
    )
    with running_app(create_app(settings)) as url:
        wait_ready(url)
        yield url


def test_a_strip_past_its_budget_is_stopped_in_its_resize(
    api: str, unbudgeted_seconds: float
) -> None:
    with httpx.Client(base_url=api, headers=AUTH, timeout=60) as client:
        warm = client.post("/v1/hash", content=png_strip(64, 48))
        assert warm.status_code == 200, warm.text  # first-request costs out of the timing below
        failed = failed_image_extractions(api)
        started = time.monotonic()
        response = client.post("/v1/hash", content=STRIP)
        took = time.monotonic() - started
    assert_error_body(response, 422, "time_budget_exceeded")
    assert "request took longer than its" in response.json()["message"]
    # Checked only after the hash, the answer came after the whole resize (>= unbudgeted).
    assert took < unbudgeted_seconds / 2, (took, unbudgeted_seconds)
    assert failed_image_extractions(api) == failed + 1
    print(f"stopped after {took:.3f} s; the whole hash takes {unbudgeted_seconds:.3f} s")

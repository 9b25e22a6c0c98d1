"""Each worker extracts at most DHASH_EXTRACTION_CONCURRENCY uploads at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from dhash_service.api.app import create_app, extraction_slots
from dhash_service.config import Settings
from dhash_service.digest import DigestResult
from dhash_service.errors import ConfigError
from dhash_service.schemas import HashReport
from dhash_service.service import DhashService
from tests.support.api import AUTH, settings_for
from tests.support.corpus import photo_jpeg
from tests.support.live_server import running_app, wait_ready

pytestmark = pytest.mark.postgres


class CountingService(DhashService):
    """The real service, recording how many hash_only calls overlap."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0

    def hash_only(
        self,
        data: bytes,
        *,
        filename: str | None = None,
        cancelled: threading.Event | None = None,
    ) -> tuple[HashReport, DigestResult]:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return super().hash_only(data, filename=filename, cancelled=cancelled)
        finally:
            with self._lock:
                self.running -= 1


def most_at_once(postgres_url: str, tmp_path: Path, slots: int) -> int:
    settings = settings_for(
        postgres_url, tmp_path, extraction_concurrency=slots, max_upload_bytes=8_000_000
    )
    service = CountingService(settings)
    data = photo_jpeg(1920, 1080, 5)
    with running_app(create_app(settings, service)) as url:
        wait_ready(url)

        def post(_: int) -> int:
            response = httpx.post(f"{url}/v1/hash", content=data, timeout=60, headers=AUTH)
            return response.status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(post, range(16))) == {200}
    return service.most


def test_one_slot_means_one_extraction_at_a_time(postgres_url: str, tmp_path: Path) -> None:
    assert most_at_once(postgres_url, tmp_path, 1) == 1


def test_more_slots_let_extractions_overlap(postgres_url: str, tmp_path: Path) -> None:
    assert 2 <= most_at_once(postgres_url, tmp_path, 3) <= 3


def test_the_default_shares_the_cpus_among_the_workers() -> None:
    one = extraction_slots(Settings(workers=1))
    assert one >= 1
    assert extraction_slots(Settings(workers=2)) == max(1, one // 2)
    assert extraction_slots(Settings(extraction_concurrency=5)) == 5
    with pytest.raises(ConfigError):
        extraction_slots(Settings(extraction_concurrency=-1))

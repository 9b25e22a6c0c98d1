"""Decoder isolation: hostile documents cost a child process at most its limits, never the
worker; every breach is a typed 4xx error and the pool goes on serving with a fresh child."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from dhash_service.digest import DigestResult, digest
from dhash_service.errors import ClientDisconnected, ResourceLimitExceeded, TimeBudgetExceeded
from dhash_service.extraction import Limits
from dhash_service.extraction.limits import RequestBudget
from dhash_service.sandbox.pool import ChildLimits, DecoderPool
from tests.support.api import photo
from tests.support.corpus import pdf_with_images, video
from tests.support.hostile import pdf_nested_forms, pdf_self_referencing_form

pytestmark = pytest.mark.slow  # real child processes, seconds of hostile rendering

LIMITS = Limits()
GIB = 1024**3


@pytest.fixture
def pool() -> Iterator[DecoderPool]:
    decoders = DecoderPool(1, ChildLimits(2 * GIB, 30.0), queue_seconds=5.0)
    try:
        yield decoders
    finally:
        decoders.close()


def run(
    pool: DecoderPool,
    data: bytes,
    seconds: float = 20.0,
    cancelled: threading.Event | None = None,
) -> DigestResult:
    request = RequestBudget(seconds, cancelled)
    return pool.digest(data, filename="x", algorithm="dhash64", limits=LIMITS, request=request)


def hashes(result: DigestResult) -> list[tuple[str, str]]:
    return [(item.locator, item.hash.hex()) for item in result.items]


def assert_still_serves(pool: DecoderPool) -> None:
    document = pdf_with_images([photo(7)], pages=2)
    assert hashes(run(pool, document)) == hashes(digest(document, limits=LIMITS))


def test_documents_hash_in_a_child_exactly_as_in_process(pool: DecoderPool) -> None:
    for data in (pdf_with_images([photo(1), photo(2)], pages=3), video(seconds=3.0)):
        isolated = run(pool, data)
        assert hashes(isolated) == hashes(digest(data, limits=LIMITS)) and isolated.items


def test_the_self_referencing_form_pdf_is_answered_and_bounded(pool: DecoderPool) -> None:
    data = pdf_self_referencing_form()
    assert len(data) < 1000
    started = time.monotonic()
    with pytest.raises((TimeBudgetExceeded, ResourceLimitExceeded)):
        run(pool, data, seconds=5.0)  # either way the cost stopped at the child's limits
    assert time.monotonic() - started < 7.0
    assert_still_serves(pool)


def test_nested_forms_are_killed_at_the_request_budget(pool: DecoderPool) -> None:
    data = pdf_nested_forms(depth=7, draws=10)
    started = time.monotonic()
    with pytest.raises(TimeBudgetExceeded):
        run(pool, data, seconds=2.0)
    assert time.monotonic() - started < 3.5
    assert pool.killed == 1
    assert_still_serves(pool)


def test_a_child_past_its_cpu_limit_is_a_resource_limit_error() -> None:
    decoders = DecoderPool(1, ChildLimits(2 * GIB, 1.0), queue_seconds=5.0)
    try:
        with pytest.raises(ResourceLimitExceeded) as caught:
            # A wall budget far past the CPU limit: at niceness 10 on busy cores the child may get
            # only a fraction of a core, and the CPU limit must still be what stops it.
            run(decoders, pdf_nested_forms(depth=7, draws=10), seconds=60.0)
        assert "CPU" in caught.value.message
        assert_still_serves(decoders)
    finally:
        decoders.close()


def big_png_in_a_zip() -> bytes:
    pixels = np.zeros((8000, 8000, 3), dtype=np.uint8)  # 64 MP: 192 MB decoded, 200 KB sent
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("big.png", png.getvalue())
    return archive.getvalue()


def test_a_child_past_its_memory_limit_is_a_resource_limit_error() -> None:
    decoders = DecoderPool(1, ChildLimits(400 * 1024 * 1024, 30.0), queue_seconds=5.0)
    try:
        with pytest.raises(ResourceLimitExceeded):
            run(decoders, big_png_in_a_zip(), seconds=20.0)
        assert_still_serves(decoders)
    finally:
        decoders.close()


def test_a_disconnected_client_stops_the_child_at_once(pool: DecoderPool) -> None:
    cancelled = threading.Event()
    set_at: list[float] = []

    def disconnect() -> None:
        set_at.append(time.monotonic())
        cancelled.set()

    threading.Timer(1.0, disconnect).start()
    with pytest.raises(ClientDisconnected):
        run(pool, pdf_nested_forms(depth=7, draws=10), seconds=20.0, cancelled=cancelled)
    assert (
        time.monotonic() - set_at[0] < 5.0
    )  # not the 20 s budget: killed when seen (slack for a loaded machine)
    assert_still_serves(pool)

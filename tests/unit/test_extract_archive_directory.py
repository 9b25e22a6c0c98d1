"""The member limit is applied to the central directory itself, before zipfile parses it.

Regression: a ZIP whose end record claims 1 entry while its central directory holds 400,000
was parsed whole by zipfile (2.2 s, +150 MB) before the member limit applied.
"""

from __future__ import annotations

import time

import pytest

from dhash_service.errors import LimitExceeded
from dhash_service.extraction import Limits, extract
from tests.support import corpus
from tests.support.hostile import count_lying_zip


def test_a_count_lying_end_record_is_refused_from_the_directory_at_once() -> None:
    data = count_lying_zip(400_000)
    started = time.process_time()
    with pytest.raises(LimitExceeded, match="holds more than 1000 members") as caught:
        extract(data, limits=Limits())
    assert time.process_time() - started < 0.5  # about 1000 header reads, not 400,000 objects
    assert caught.value.detail == {"declared": 1, "limit": 1000}


def test_an_honest_archive_at_the_limit_still_opens() -> None:
    members = [(f"{i}.jpg", corpus.photo_jpeg(64, 48, i)) for i in range(3)]
    result = extract(corpus.zip_of(members), limits=Limits(max_archive_members=3))
    assert len(result.items) == 3

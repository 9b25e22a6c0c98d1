"""The member limit is applied to the central directory itself, before zipfile parses it.

Regression: a ZIP whose end record claims 1 entry while its central directory holds 400,000
was parsed whole by zipfile (2.2 s, +150 MB) before the member limit applied.
"""

from __future__ import annotations

import struct
import time

import pytest

from dhash_service.errors import LimitExceeded
from dhash_service.extraction import Limits, extract
from tests.support import corpus


def count_lying_zip(entries: int, claimed: int = 1) -> bytes:
    """A central directory of ``entries`` headers (all naming an empty stored ``a``) behind an
    end record that claims ``claimed``."""
    name = b"a"
    header = struct.pack(
        "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, 0
    )
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
    directory = (header + name) * entries
    end = struct.pack(
        "<4s4H2IH", b"PK\x05\x06", 0, 0, claimed, claimed, len(directory), len(local), 0
    )
    return local + directory + end


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

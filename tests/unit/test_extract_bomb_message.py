"""A header past Pillow's bomb ceiling is refused in terms of our own pixel limit.

Pillow's check fires inside ``Image.open``, before ours; its message named Pillow's ceiling
(89478485 or 178956970) while ``detail["limit"]`` said ours, two different limits in one answer.
"""

from __future__ import annotations

import pytest

from dhash_service.errors import LimitExceeded
from dhash_service.extraction import Limits, extract
from tests.support import corpus

LIMITS = Limits()


@pytest.mark.parametrize("side", [10_000, 100_000], ids=["past-warning", "past-error"])
def test_bomb_message_names_our_limit_and_the_claimed_pixels(side: int) -> None:
    with pytest.raises(LimitExceeded) as caught:
        extract(corpus.png_bomb_header(side, side), limits=LIMITS)
    err = caught.value
    assert err.detail == {"pixels": side * side, "limit": LIMITS.max_image_pixels}
    assert f"the limit is {LIMITS.max_image_pixels}" in err.message
    assert "89478485" not in err.message and "178956970" not in err.message

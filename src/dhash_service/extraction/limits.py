"""Hard limits on what one input may cost, and the per-item time budget that enforces time.

Every limit is a setting (``docs/configuration.md``); exceeding one raises a typed
``InputError`` subclass that the API turns into a 4xx and the CLI into exit code 1.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from PIL import Image

from dhash_service.errors import ClientDisconnected, ConfigError, TimeBudgetExceeded

if TYPE_CHECKING:
    from dhash_service.config import Settings


# The longest side Pillow 13 resizes to the dhash256 grid (17 wide): ``precompute_coeffs`` refuses
# a weight table of more than INT_MAX bytes, (2 * ceil(3 * side / 17) + 1) * 8 * 17; one more
# pixel is refused (tests/unit/test_extract_aspect.py). Past it imagehash cannot hash the image.
PILLOW_MAX_RESIZE_SIDE = 44_739_234


@dataclass(frozen=True)
class Limits:
    """What one input may cost. The defaults equal the ``Settings`` defaults."""

    max_input_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = 64_000_000
    max_image_side: int = 2_097_152
    max_image_frames: int = 100
    max_items: int = 2000
    animation_frame_step: int = 0
    max_decoded_pixels: int = 256_000_000
    max_pdf_pages: int = 200
    pdf_render_max_side: int = 1024
    max_video_frames: int = 50
    max_video_seconds: float = 3600.0
    video_frame_interval_seconds: float = 10.0
    max_archive_members: int = 1000
    max_archive_uncompressed_bytes: int = 512 * 1024 * 1024
    max_nesting: int = 2
    item_time_budget_seconds: float = 10.0
    # Long side of the preview kept of each image (``dhash_service.thumbnails``); 0: none.
    thumbnail_side: int = 256

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            # A zero frame step means "first frame only"; a zero time budget is allowed so that
            # exceeding it can be tested deterministically. Everything else must be positive.
            allows_zero = field.name in (
                "animation_frame_step",
                "item_time_budget_seconds",
                "thumbnail_side",
            )
            if value < 0 or (value == 0 and not allows_zero):
                raise ConfigError(f"limit {field.name} must be positive, got {value}")
        if self.thumbnail_side and not 32 <= self.thumbnail_side <= 1024:
            raise ConfigError(
                f"thumbnail_side must be 0 (off) or 32..1024 pixels, got {self.thumbnail_side}"
            )
        if self.max_image_side > PILLOW_MAX_RESIZE_SIDE:
            # Past this Pillow's own resize to the hash grid fails (its weight table would pass
            # INT_MAX bytes), so imagehash could not hash the image and no hash would compare.
            raise ConfigError(
                f"max_image_side={self.max_image_side} exceeds {PILLOW_MAX_RESIZE_SIDE}, the "
                "longest side Pillow itself can resize to the hash grid"
            )
        pillow_ceiling = Image.MAX_IMAGE_PIXELS
        if pillow_ceiling is not None and self.max_image_pixels > pillow_ceiling:
            # Pillow warns (and we make that warning an error) above its own ceiling, so a higher
            # setting could never be honoured; say so at start-up rather than per request.
            raise ConfigError(
                f"max_image_pixels={self.max_image_pixels} exceeds Pillow's decompression-bomb "
                f"ceiling of {pillow_ceiling} pixels"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(**{field.name: getattr(settings, field.name) for field in fields(cls)})


class RequestBudget:
    """Wall time one whole request may spend extracting and hashing, and whether its client is
    still there. Every ``ItemBudget`` of the request checks it too, so the same cooperative
    checks (between pages, frames and members, on every read of compressed data) stop a request
    that ran out of time or lost its client, not only an item."""

    __slots__ = ("_deadline", "cancelled", "seconds")

    def __init__(self, seconds: float, cancelled: threading.Event | None = None) -> None:
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds
        self.cancelled = cancelled if cancelled is not None else threading.Event()

    @property
    def remaining(self) -> float:
        return self._deadline - time.monotonic()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise ClientDisconnected("the client disconnected; the request was abandoned")
        if self.remaining < 0:
            raise TimeBudgetExceeded(
                f"request took longer than its {self.seconds:g} s time budget",
                detail={"request_budget_seconds": self.seconds},
            )


class ItemBudget:
    """Wall time one extracted item may spend, summed over extraction, decoding and hashing.

    Work is checked cooperatively: between pages, frames and members, and on every read of an
    image's compressed data (so a slow decode stops at the next 64 KiB block). The time spent is
    what ``HashedItem.seconds`` reports. One budget belongs to one item and one thread at a time.
    """

    __slots__ = ("_started", "request", "seconds", "spent")

    def __init__(self, seconds: float, request: RequestBudget | None = None) -> None:
        self.seconds = seconds
        self.spent = 0.0
        self.request = request
        self._started: float | None = None

    @contextmanager
    def running(self) -> Iterator[None]:
        if self._started is not None:  # nested use: the outer block already measures
            yield
            return
        self._started = time.perf_counter()
        try:
            yield
        finally:
            self.spent += time.perf_counter() - self._started
            self._started = None

    @property
    def elapsed(self) -> float:
        if self._started is None:
            return self.spent
        return self.spent + (time.perf_counter() - self._started)

    def check(self) -> None:
        if self.request is not None:
            self.request.check()
        if self.elapsed > self.seconds:
            raise TimeBudgetExceeded(
                f"item took longer than its {self.seconds:g} s time budget",
                detail={"budget_seconds": self.seconds},
            )


class BudgetedReader(io.BytesIO):
    """In-memory file whose every read first checks the item's time budget.

    Pillow decodes by reading the compressed stream in blocks, so this is where a slow decode
    can be stopped without threads or signals.
    """

    def __init__(self, data: bytes, budget: ItemBudget) -> None:
        super().__init__(data)
        self._budget = budget

    def read(self, size: int | None = -1, /) -> bytes:
        self._budget.check()
        return super().read(size)

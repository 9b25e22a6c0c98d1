"""Per-input accounting shared by every extractor, including those nested inside archives."""

from __future__ import annotations

from dataclasses import dataclass, field

from dhash_service.errors import LimitExceeded
from dhash_service.extraction.limits import ItemBudget, Limits, RequestBudget


@dataclass
class Totals:
    """Running totals across one whole input, however deeply nested."""

    uncompressed_bytes: int = 0
    decoded_pixels: int = 0
    items: int = 0
    exhausted: bool = False  # a whole-input total was exceeded: nothing more may be extracted


@dataclass
class Context:
    limits: Limits
    depth: int = 0  # how many archives we are inside
    totals: Totals = field(default_factory=Totals)
    request: RequestBudget | None = None

    def nested(self) -> Context:
        return Context(self.limits, self.depth + 1, self.totals, self.request)

    def new_budget(self) -> ItemBudget:
        if self.request is not None:
            self.request.check()  # between pages, frames and members: stop a spent request
        return ItemBudget(self.limits.item_time_budget_seconds, self.request)

    def check_pixels(self, width: int, height: int, what: str) -> None:
        """Refuse an image whose header claims more pixels than allowed, before decoding it."""
        pixels = width * height
        if pixels > self.limits.max_image_pixels:
            raise LimitExceeded(
                f"{what} is {width}x{height} = {pixels} pixels; "
                f"the limit is {self.limits.max_image_pixels}",
                detail={"width": width, "height": height, "limit": self.limits.max_image_pixels},
            )
        longest = max(width, height)
        if longest > self.limits.max_image_side:
            # The resize to the hash grid costs time in proportion to the long side (its LANCZOS
            # windows span long side / grid pixels each; its memory no longer grows with it): a
            # 12,000,000 x 1 strip passes the pixel limit but takes ~2 s of CPU, past the image
            # request budget, which stops it between blocks. Refused here it costs nothing. At
            # the default 2,097,152 the worst shape (x 30) takes ~0.7 s.
            raise LimitExceeded(
                f"{what} is {width}x{height}; no side may exceed {self.limits.max_image_side} "
                "pixels (DHASH_MAX_IMAGE_SIDE: resizing to the hash grid takes time in "
                "proportion to the long side)",
                detail={"width": width, "height": height, "limit": self.limits.max_image_side},
            )
        if width < 1 or height < 1:
            raise LimitExceeded(f"{what} has no pixels ({width}x{height})")

    def count_item(self) -> None:
        """Account for one more item (page, frame, embedded image, member's image)."""
        self.totals.items += 1
        if self.totals.items > self.limits.max_items:
            self._exhaust(
                f"input holds more than {self.limits.max_items} images", self.limits.max_items
            )

    def count_unpacked(self, nbytes: int, what: str) -> None:
        """Account for bytes unpacked from a container (archive members, PDF image streams)."""
        self.totals.uncompressed_bytes += nbytes
        limit = self.limits.max_archive_uncompressed_bytes
        if self.totals.uncompressed_bytes > limit:
            self._exhaust(
                f"{what} expands to more than {limit} bytes "
                f"({self.totals.uncompressed_bytes} so far, nested containers included)",
                limit,
            )

    def _exhaust(self, message: str, limit: int) -> None:
        self.totals.exhausted = True
        raise LimitExceeded(message, detail={"limit": limit})

    def count_decoded(self, width: int, height: int) -> None:
        """Account for an image decoded during extraction (kept in memory until hashed)."""
        self.totals.decoded_pixels += width * height
        if self.totals.decoded_pixels > self.limits.max_decoded_pixels:
            self._exhaust(
                f"input decodes to more than {self.limits.max_decoded_pixels} pixels of frames, "
                "pages and renders",
                self.limits.max_decoded_pixels,
            )

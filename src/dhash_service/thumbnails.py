"""Small previews of extracted images, made at ingest so a reviewer can see what was compared.

The service keeps no pixels of its own otherwise, so without these the review console would show
hashes only. One thumbnail per image: at most ``side`` pixels on the long side, WebP at a modest
quality and its fastest method (a 256 px photo is 4-12 KB, a JPEG of the same look about 1.6x
that; every browser the console supports shows WebP), and never larger than
``MAX_THUMBNAIL_BYTES``: an image whose preview would be bigger (noise, fine patterns) is re-
encoded at lower quality, then skipped. Thumbnails are made from the image object the hash was
computed from, after hashing, so the hash and its decoding stay exactly as they are; decoded
pages and frames are 8-bit grayscale already (``extraction.model``), and in the fast (JPEG
draft) modes the decoder has reduced the image, so those previews are grayscale or small. They
live in the store (the ``thumbnails`` table), which is why backups, restores and deletes need
nothing extra: see ``docs/review.md`` for the choice and its cost at 10M images.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

MEDIA_TYPE = "image/webp"
DEFAULT_SIDE = 256
MIN_SIDE = 32
MAX_SIDE = 1024
MAX_THUMBNAIL_BYTES = 64 * 1024
# Previews of one upload together (a 2,000-page PDF must not carry 2,000 of them through the
# decoder pipe and one transaction): past this the remaining images get none.
MAX_THUMBNAIL_BYTES_PER_INPUT = 8 * 1024 * 1024
_QUALITIES = (70, 45, 25)


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    width: int
    height: int
    media_type: str = MEDIA_TYPE


def thumbnail_of(image: Image.Image, side: int) -> Thumbnail | None:
    """A preview of ``image`` no larger than ``side`` px a side, or None when it cannot be made
    small enough (or ``side`` is 0: thumbnails are off).

    ``image`` is reduced in place (``Image.thumbnail``, which shrinks by integer factors first:
    about what the hash itself costs, 3 ms for a 2 MP photo), so call it last, on an image that
    is about to be closed.
    """
    if side <= 0:
        return None
    if image.mode.startswith("I;16"):
        image = image.convert("I")  # Pillow resizes 32-bit integers, not 16-bit ones
    image.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=1.0)
    preview = _displayable(image)
    for quality in _QUALITIES:
        out = io.BytesIO()
        preview.save(out, format="WEBP", quality=quality, method=0)
        if out.tell() <= MAX_THUMBNAIL_BYTES:
            return Thumbnail(out.getvalue(), preview.width, preview.height)
    return None


def _displayable(image: Image.Image) -> Image.Image:
    """8-bit grayscale or RGB; transparency composited on white (as a browser shows it)."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("I", "F"):  # high bit depth: stretch what is there over 8 bits
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low or 1.0))
        return Image.fromarray(scaled.clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")

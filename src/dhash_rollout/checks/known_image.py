"""The smoke test's known image: drawn deterministically at run time, with its hash committed.

Drawing it (rather than shipping a file) keeps the repository free of binary fixtures and makes
the image reproducible anywhere Pillow runs. PNG is lossless, so the pixels the service decodes
are exactly the pixels drawn here; ``KNOWN_DHASH64`` is the ``imagehash.dhash``-compatible
64-bit hash of them, and a unit test recomputes it so any drift in hashing is caught.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

KNOWN_IMAGE_NAME = "dhash-smoke-known.png"
KNOWN_DHASH64 = "ffc381c1f3cb8d2f"  # imagehash.dhash of known_image(); checked by a unit test


def known_image() -> Image.Image:
    """A 320x240 image with a diagonal gradient and a few hard-edged shapes."""
    width, height = 320, 240
    img = Image.new("RGB", (width, height))
    img.putdata(
        [
            ((x * 255) // width, (y * 255) // height, ((x + y) * 255) // (width + height))
            for y in range(height)
            for x in range(width)
        ]
    )
    draw = ImageDraw.Draw(img)
    draw.rectangle((24, 30, 120, 110), fill=(250, 250, 250))
    draw.ellipse((170, 40, 290, 160), fill=(10, 20, 30))
    draw.polygon([(40, 220), (150, 140), (210, 225)], fill=(200, 30, 60))
    draw.line((0, 239, 319, 0), fill=(255, 255, 0), width=5)
    return img


def known_image_png() -> bytes:
    buf = io.BytesIO()
    known_image().save(buf, format="PNG")
    return buf.getvalue()

"""Hostile inputs generated on the spot: PDFs whose drawing never ends or explodes, and more.

Each is small (bytes to kilobytes) and costs a decoder without limit unless it is isolated;
written by hand so a test makes hundreds in milliseconds.
"""

from __future__ import annotations

import io
import struct

from PIL import Image

from tests.support.corpus import _pdf


def _stream(content: bytes, dictionary: bytes = b"") -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (dictionary, len(content), content)


def _form(content: bytes, resources: bytes) -> bytes:
    return _stream(
        content, b"/Type /XObject /Subtype /Form /BBox [0 0 200 200] /Resources " + resources
    )


def pdf_self_referencing_form() -> bytes:
    """One page drawing a Form XObject whose resources point back at itself (``/F0 Do`` twice
    inside ``/F0``): about 650 bytes that grew a worker to 19 GB in PDFium; in a decoder child
    PDFium aborts at the address-space limit instead."""
    resources = b"<< /XObject << /F0 5 0 R >> >>"
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Resources "
            + resources
            + b" /Contents 4 0 R >>",
            _stream(b"/F0 Do"),
            _form(b"/F0 Do /F0 Do", resources),
        ]
    )


def pdf_nested_forms(depth: int = 7, draws: int = 10, pages: int = 1) -> bytes:
    """Forms nested ``depth`` deep, each drawing the next ``draws`` times: ``draws ** depth``
    strokes per page from about 2 KB (7 deep x 10 took 679 s to render in process)."""
    first_form = 4 + pages
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
        + b"] /Count %d >>" % pages,
    ]
    top = b"<< /XObject << /F1 %d 0 R >> >>" % first_form
    content_ref = 3 + pages
    objects += [
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Resources "
        + top
        + b" /Contents %d 0 R >>" % content_ref
    ] * pages
    objects.append(_stream(b"/F1 Do"))
    for level in range(1, depth + 1):
        if level == depth:
            objects.append(_form(b"0 0 m 200 200 l 200 0 l h f", b"<< >>"))
            continue
        child = b"<< /XObject << /F%d %d 0 R >> >>" % (level + 1, first_form + level)
        draw = b"".join(
            b"q 0.9 0 0 0.9 %d %d cm /F%d Do Q " % (i, i, level + 1) for i in range(draws)
        )
        objects.append(_form(draw, child))
    return _pdf(objects)


def pdf_vector_pages(pages: int, strokes: int = 2000) -> bytes:
    """``pages`` pages of ``strokes`` line segments each: slow to render, tiny to send."""
    content = b" ".join(
        b"%d %d m %d %d l S" % (i % 200, 0, 200 - i % 200, 200) for i in range(strokes)
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
        + b"] /Count %d >>" % pages,
    ]
    contents = 3 + pages
    objects += [
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents %d 0 R >>" % contents
    ] * pages
    objects.append(_stream(content))
    return _pdf(objects)


# --- image bombs: headers claiming far more pixels than the limit, for every accepted format ---


def gif_bomb_header(width: int, height: int) -> bytes:
    """A GIF whose logical screen and one image descriptor claim ``width x height``."""
    small = io.BytesIO()
    Image.new("L", (8, 8), 128).save(small, format="GIF")
    data = bytearray(small.getvalue())
    struct.pack_into("<HH", data, 6, width, height)  # logical screen
    descriptor = data.find(b"\x2c")
    struct.pack_into("<HH", data, descriptor + 5, width, height)
    return bytes(data)


def bmp_bomb_header(width: int, height: int) -> bytes:
    small = io.BytesIO()
    Image.new("L", (8, 8), 128).save(small, format="BMP")
    data = bytearray(small.getvalue())
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def tiff_bomb_header(width: int, height: int) -> bytes:
    small = io.BytesIO()
    Image.new("L", (8, 8), 128).save(small, format="TIFF")
    data = bytearray(small.getvalue())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for index in range(count):
        entry = ifd + 2 + 12 * index
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength
            value = width if tag == 256 else height
            if kind == 3:  # SHORT: make it LONG so any value fits
                struct.pack_into("<HHI", data, entry + 2, 4, 1, value)
            else:
                struct.pack_into("<I", data, entry + 8, value)
    return bytes(data)


def webp_bomb_header(width: int, height: int) -> bytes:
    """A WebP whose VP8X canvas claims ``width x height`` (at most 16384 each)."""
    small = io.BytesIO()
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(small, format="WEBP", lossless=True)
    body = small.getvalue()[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x10, 0, 0, 0])
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    payload = b"WEBP" + vp8x + body
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def png_strip(width: int, height: int) -> bytes:
    """A real grayscale PNG of an extreme aspect ratio (a 12,000,000 x 1 strip is 47 KB)."""
    out = io.BytesIO()
    Image.new("L", (width, height), 77).save(out, format="PNG")
    return out.getvalue()


def count_lying_zip(entries: int, claimed: int = 1) -> bytes:
    """A central directory of ``entries`` headers (each naming an empty stored ``a``) behind an
    end record that claims ``claimed`` entries."""
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

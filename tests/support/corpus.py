"""Generated test inputs: photo-like images, every accepted container, and hostile inputs.

Everything is drawn deterministically from a seed at run time, so the repository holds no binary
fixtures and any failure reproduces exactly. The photo-like images come from
``dhash_rollout.samples`` (the demo draws from the same generator); this module adds the encodings,
containers and hostile inputs only tests and benchmarks need.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from fractions import Fraction

import numpy as np
from PIL import Image

from dhash_rollout.samples import realistic_photo  # also re-exported to the tests

# --- photo-like images: the one generator, shared with the demo ------------------------------


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def photo_jpeg(
    width: int, height: int, seed: int, *, quality: int = 90, progressive: bool = False
) -> bytes:
    """A photo-like JPEG (4:2:0, optimised Huffman tables, as cameras and editors write)."""
    return encode(
        realistic_photo(width, height, seed),
        "JPEG",
        quality=quality,
        progressive=progressive,
        optimize=True,
    )


def exif_rotated_jpeg(width: int, height: int, seed: int, orientation: int = 6) -> bytes:
    """A JPEG whose EXIF Orientation tag asks viewers to rotate it."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(realistic_photo(width, height, seed), "JPEG", quality=90, exif=exif.tobytes())


def cmyk_jpeg(width: int, height: int, seed: int) -> bytes:
    return encode(realistic_photo(width, height, seed).convert("CMYK"), "JPEG", quality=90)


def png_with_alpha(width: int, height: int, seed: int) -> bytes:
    img = realistic_photo(width, height, seed).convert("RGBA")
    alpha = Image.linear_gradient("L").resize((width, height))
    img.putalpha(alpha)
    return encode(img, "PNG")


def palette_png(width: int, height: int, seed: int, *, transparent: bool = True) -> bytes:
    """A 256-colour PNG; with ``transparent`` its tRNS chunk holds per-entry palette alpha."""
    img = realistic_photo(width, height, seed).quantize(256)
    if transparent:
        return encode(img, "PNG", transparency=bytes(range(0, 256)))
    return encode(img, "PNG")


def png16(width: int, height: int, seed: int) -> bytes:
    """A 16-bit grayscale PNG (mode ``I;16``)."""
    gray = np.asarray(realistic_photo(width, height, seed).convert("L"), dtype=np.uint16) * 257
    image = Image.fromarray(gray)  # uint16 -> mode "I;16"
    assert image.mode == "I;16", image.mode
    return encode(image, "PNG")


def animation(fmt: str, width: int, height: int, frames: int, seed: int) -> bytes:
    """A GIF, APNG (``fmt="PNG"``) or WebP animation of distinct photo-like frames."""
    images = [realistic_photo(width, height, seed + i) for i in range(frames)]
    params: dict[str, object] = {"save_all": True, "append_images": images[1:], "duration": 100}
    if fmt == "WEBP":
        params["lossless"] = True
    return encode(images[0], fmt, **params)


def multipage_tiff(width: int, height: int, pages: int, seed: int) -> bytes:
    images = [realistic_photo(width, height, seed + i) for i in range(pages)]
    return encode(
        images[0], "TIFF", save_all=True, append_images=images[1:], compression="tiff_lzw"
    )


# --- containers ----------------------------------------------------------------------------


def pdf_with_images(jpegs: Sequence[bytes], *, pages: int = 1, page_size: float = 400.0) -> bytes:
    """A PDF whose first pages each embed one of ``jpegs`` (DCTDecode, the bytes unchanged)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument.new()
    try:
        for index in range(max(pages, len(jpegs))):
            page = pdf.new_page(page_size, page_size)
            if index < len(jpegs):
                image = pdfium.PdfImage.new(pdf)
                image.load_jpeg(io.BytesIO(jpegs[index]), inline=True)
                w, h = Image.open(io.BytesIO(jpegs[index])).size
                scale = page_size * 0.8 / max(w, h)
                image.set_matrix(pdfium.PdfMatrix().scale(w * scale, h * scale).translate(20, 20))
                page.insert_obj(image)
                page.gen_content()
                image.close()
            page.close()
        buf = io.BytesIO()
        pdf.save(buf)
        return buf.getvalue()
    finally:
        pdf.close()


def pdf_with_pages(pages: int) -> bytes:
    """A PDF of ``pages`` blank pages, written by hand so thousands cost microseconds."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
        + b"] /Count %d >>" % pages,
    ]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>"] * pages
    return _pdf(objects)


def password_protected_pdf(user_password: bytes = b"secret") -> bytes:
    """A one-page PDF encrypted with the standard security handler (RC4, revision 2)."""
    pad = bytes.fromhex("28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a")
    owner_key = hashlib.md5((b"owner" + pad)[:32]).digest()[:5]
    owner = _rc4(owner_key, (user_password + pad)[:32])
    permissions, file_id = -4, b"0123456789abcdef"
    key = hashlib.md5(
        (user_password + pad)[:32] + owner + struct.pack("<i", permissions) + file_id
    ).digest()[:5]
    user = _rc4(key, pad)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>"
        % (owner.hex().encode(), user.hex().encode(), permissions),
    ]
    trailer = b"/Encrypt 4 0 R /ID [<%s> <%s>]" % (file_id.hex().encode(), file_id.hex().encode())
    return _pdf(objects, trailer)


def _rc4(key: bytes, data: bytes) -> bytes:
    box = list(range(256))
    j = 0
    for i in range(256):
        j = (j + box[i] + key[i % len(key)]) % 256
        box[i], box[j] = box[j], box[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + box[i]) % 256
        box[i], box[j] = box[j], box[i]
        out.append(byte ^ box[(box[i] + box[j]) % 256])
    return bytes(out)


def _pdf(objects: Sequence[bytes], trailer_extra: bytes = b"") -> bytes:
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        trailer_extra,
        xref,
    )
    return bytes(out)


def video(
    *,
    seconds: float = 3.0,
    fps: int = 10,
    size: tuple[int, int] = (96, 64),
    container: str = "mp4",
    codec: str = "mpeg4",
    gop: int = 10,
    seed: int = 0,
    pix_fmt: str = "yuv420p",
) -> bytes:
    """A short video of moving photo-like content, a keyframe every ``gop`` frames."""
    import av

    width, height = size
    backdrop = realistic_photo(width * 2, height, seed)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.gop_size = gop
        stream.codec_context.time_base = Fraction(1, fps)
        for index in range(round(seconds * fps)):
            left = (index * 3) % width
            frame = av.VideoFrame.from_image(backdrop.crop((left, 0, left + width, height)))
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def zip_of(
    members: Iterable[tuple[str, bytes]], *, compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def zip_with_symlink(name: str, target: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        zf.writestr(info, target)
    return buf.getvalue()


def zip_with_raw_name(raw_name: bytes, data: bytes) -> bytes:
    """A one-member archive whose stored name is ``raw_name`` byte for byte (NULs included),
    which ``zipfile`` itself refuses to write."""
    placeholder = "x" * len(raw_name)
    archive = zip_of([(placeholder, data)], compression=zipfile.ZIP_STORED)
    return archive.replace(placeholder.encode(), raw_name)


def zip_with_duplicate_names(name: str, first: bytes, second: bytes) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns, and writes it anyway
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(name, first)
            zf.writestr(name, second)
    return buf.getvalue()


def zip_bomb(total_bytes: int, members: int = 4) -> bytes:
    """Members of zeros that compress about 1000:1; ``total_bytes`` uncompressed in all."""
    buf = io.BytesIO()
    chunk = bytes(1 << 20)
    per_member = total_bytes // members
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for index in range(members):
            with zf.open(f"zeros{index}.png", "w", force_zip64=per_member > 2**31) as out:
                left = per_member
                while left > 0:
                    out.write(chunk[: min(left, len(chunk))])
                    left -= len(chunk)
    return buf.getvalue()


def nested_zip(depth: int, leaf: tuple[str, bytes]) -> bytes:
    """``depth`` zips inside each other around one leaf member."""
    data = zip_of([leaf])
    for level in range(depth - 1):
        data = zip_of([(f"level{level}.zip", data)])
    return data


# --- hostile inputs ------------------------------------------------------------------------------


def png_bomb_header(width: int, height: int) -> bytes:
    """A valid-looking PNG header that claims ``width x height`` pixels, with almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_bomb_header(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF marker is rewritten to claim ``width x height``."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (90, 120, 150)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def renamed_eps() -> bytes:
    """An EPS document, the kind of file Pillow would hand to Ghostscript if allowed to."""
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
        b"newpath 0 0 moveto 10 10 lineto stroke showpage\n%%EOF\n"
    )


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: max(1, int(len(data) * keep))]

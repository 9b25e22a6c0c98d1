"""Recognise an input by its leading bytes, never by its file name.

Knowing the container before any decoder sees the data is what lets us open only formats we
accept: Pillow is told which plugins it may try, FFmpeg which demuxer to use (so it never probes,
and never follows playlists or references to other files), and everything else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

# Pillow format names we open; everything else (EPS, PSD, ICO, PCX, ...) is refused.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "AVIF")

_ISO_IMAGE_BRANDS = {b"avif", b"avis"}
_ISO_UNSUPPORTED_IMAGE_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1"}
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}


@dataclass(frozen=True)
class Sniffed:
    """``kind`` is image/pdf/video/zip, or ``None`` when refused; ``name`` says what was seen."""

    kind: str | None
    name: str


# (offset, magic, kind, name), tried in order; kind None means recognised and refused.
_SIGNATURES: tuple[tuple[int, bytes, str | None, str], ...] = (
    (0, b"\xff\xd8\xff", "image", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "image", "PNG"),
    (0, b"GIF87a", "image", "GIF"),
    (0, b"GIF89a", "image", "GIF"),
    (0, b"BM", "image", "BMP"),
    (0, b"II*\x00", "image", "TIFF"),
    (0, b"MM\x00*", "image", "TIFF"),
    (0, b"II+\x00", "image", "TIFF"),
    (0, b"MM\x00+", "image", "TIFF"),
    (8, b"WEBP", "image", "WEBP"),  # after b"RIFF" and a length
    (8, b"AVI ", "video", "avi"),
    (0, b"PK\x03\x04", "zip", "zip"),
    (0, b"PK\x05\x06", "zip", "zip"),  # an empty archive
    (0, b"\x1a\x45\xdf\xa3", "video", "matroska"),  # Matroska and WebM
    (0, b"%!PS", None, "PostScript/EPS"),
    (0, b"\xc5\xd0\xd3\xc6", None, "PostScript/EPS"),  # DOS EPS binary header
)


def sniff(data: bytes) -> Sniffed:
    head = data[:64]
    for offset, magic, kind, name in _SIGNATURES:
        if head.startswith(magic, offset) and (offset != 8 or head.startswith(b"RIFF")):
            return Sniffed(kind, name)
    if b"%PDF-" in data[:1024]:  # the PDF header may follow up to 1 KiB of junk
        return Sniffed("pdf", "pdf")
    if head[4:8] == b"ftyp":
        return _iso_media(data)
    if head[4:8] in _QUICKTIME_ATOMS:
        return Sniffed("video", "mov")
    if len(data) > 376 and data[0] == data[188] == data[376] == 0x47:
        return Sniffed("video", "mpegts")
    return Sniffed(None, "unknown")


def _iso_media(data: bytes) -> Sniffed:
    """ISO base media files: AVIF is an image, HEIF we refuse, the rest (MP4, MOV, 3GP) is video."""
    size = int.from_bytes(data[:4], "big")
    box = data[8 : min(max(size, 16), 256)]
    brands = {box[i : i + 4] for i in range(0, len(box) - 3, 4) if i != 4}  # skip minor version
    if brands & _ISO_IMAGE_BRANDS:
        return Sniffed("image", "AVIF")
    if brands & _ISO_UNSUPPORTED_IMAGE_BRANDS:
        return Sniffed(None, "HEIF")
    return Sniffed("video", "mov")

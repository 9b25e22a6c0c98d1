"""Every accepted container yields the images it holds, with locators saying where."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import imagehash
import pytest
from PIL import Image

from dhash_service.digest import digest
from dhash_service.extraction import Limits, extract
from dhash_service.extraction.sniff import sniff
from dhash_service.hashing import hash_image
from tests.support import corpus

LIMITS = Limits()


@cache
def jpeg(seed: int = 1, size: tuple[int, int] = (160, 120)) -> bytes:
    return corpus.photo_jpeg(*size, seed)


def hex_of(data: bytes) -> str:
    return str(imagehash.dhash(Image.open(io.BytesIO(data))))


def test_a_plain_image_is_one_lazy_item_with_an_empty_locator() -> None:
    extraction = extract(jpeg(), limits=LIMITS)
    assert extraction.input_kind == "image"
    (item,) = extraction.items
    assert (item.locator, item.kind) == ("", "image")
    assert item.image.format == "JPEG"
    assert getattr(item.image, "tile", None), "left undecoded so the fast path can reduce it"


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animations_give_their_first_frame_by_default(fmt: str) -> None:
    data = corpus.animation(fmt, 64, 48, 4, 20)
    (item,) = digest(data, limits=LIMITS).items
    assert (item.locator, item.kind) == ("", "image")
    assert item.hash.hex() == hex_of(data)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_frame_step_takes_every_nth_frame(fmt: str) -> None:
    data = corpus.animation(fmt, 64, 48, 5, 30)
    result = digest(data, limits=Limits(animation_frame_step=2))
    assert [i.locator for i in result.items] == ["frame=0", "frame=2", "frame=4"]
    assert {i.kind for i in result.items} == {"animation-frame"}
    assert result.items[0].hash.hex() == hex_of(data)
    assert len({i.hash.value for i in result.items}) == 3  # distinct frames, distinct hashes


def test_an_mpo_is_one_photo_even_when_frames_are_requested() -> None:
    data = corpus.encode(
        corpus.realistic_photo(96, 64, 1),
        "MPO",
        save_all=True,
        append_images=[corpus.realistic_photo(96, 64, 2)],
    )
    (item,) = digest(data, limits=Limits(animation_frame_step=1)).items
    assert (item.locator, item.kind) == ("", "image")
    assert item.hash.hex() == hex_of(data)


def test_every_tiff_page_is_an_item_hashed_like_the_page_alone() -> None:
    data = corpus.multipage_tiff(64, 48, 3, 40)
    result = digest(data, limits=LIMITS)
    assert [(i.locator, i.kind) for i in result.items] == [
        ("page=1", "tiff-page"),
        ("page=2", "tiff-page"),
        ("page=3", "tiff-page"),
    ]
    for index, item in enumerate(result.items):
        page = corpus.encode(corpus.realistic_photo(64, 48, 40 + index), "PNG")
        assert item.hash.hex() == hex_of(page)


def test_pdf_gives_embedded_jpegs_untouched_and_a_render_per_page() -> None:
    photos = [jpeg(2, (200, 150)), jpeg(3, (120, 160))]
    result = digest(corpus.pdf_with_images(photos, pages=3), limits=LIMITS)
    assert result.input_kind == "pdf"
    by_locator = {i.locator: i for i in result.items}
    assert sorted(by_locator) == ["page=1", "page=1/image=1", "page=2", "page=2/image=1", "page=3"]
    # The embedded JPEG is the original file, so it hashes like the photo itself.
    assert by_locator["page=1/image=1"].hash.hex() == hex_of(photos[0])
    assert by_locator["page=2/image=1"].hash.hex() == hex_of(photos[1])
    assert by_locator["page=1/image=1"].kind == "pdf-image"
    render = by_locator["page=2"]
    assert render.kind == "pdf-page"
    assert max(render.width, render.height) == LIMITS.pdf_render_max_side
    assert by_locator["page=3"].hash.low_information  # a blank page


def test_pdf_image_that_is_not_a_jpeg_is_decoded_by_pdfium() -> None:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument.new()
    page = pdf.new_page(200, 200)
    image = pdfium.PdfImage.new(pdf)
    bitmap = pdfium.PdfBitmap.from_pil(corpus.realistic_photo(64, 48, 5))
    image.set_bitmap(bitmap)
    image.set_matrix(pdfium.PdfMatrix().scale(128, 96))
    page.insert_obj(image)
    page.gen_content()
    buf = io.BytesIO()
    pdf.save(buf)
    for closable in (bitmap, image, page, pdf):
        closable.close()
    result = digest(buf.getvalue(), limits=LIMITS)
    (embedded,) = [i for i in result.items if i.kind == "pdf-image"]
    assert (embedded.width, embedded.height) == (64, 48)
    expected = hash_image(corpus.realistic_photo(64, 48, 5))
    assert embedded.hash.distance(expected) <= 2  # PDFium's colour path, not Pillow's


@pytest.mark.parametrize(
    ("container", "codec", "pix_fmt"),
    [
        ("mp4", "mpeg4", "yuv420p"),
        ("matroska", "libx264", "yuv420p"),
        ("webm", "libvpx", "yuv420p"),
        ("avi", "mjpeg", "yuvj420p"),
        ("mpegts", "mpeg2video", "yuv420p"),
    ],
)
def test_video_keyframes_are_sampled_per_interval(container: str, codec: str, pix_fmt: str) -> None:
    data = corpus.video(
        seconds=4, fps=10, gop=10, container=container, codec=codec, pix_fmt=pix_fmt
    )
    result = digest(data, limits=Limits(video_frame_interval_seconds=2))
    assert result.input_kind == "video"
    assert [i.kind for i in result.items] == ["video-frame"] * 2
    frames = [int(i.locator.removeprefix("frame=")) for i in result.items]
    assert frames[1] - frames[0] == 20  # two seconds apart at 10 fps
    assert (result.items[0].width, result.items[0].height) == (96, 64)
    assert result.items[0].hash.value != result.items[1].hash.value


def test_long_videos_are_sampled_sparser_to_stay_within_the_frame_limit() -> None:
    data = corpus.video(seconds=6, fps=10, gop=5)
    result = digest(data, limits=Limits(video_frame_interval_seconds=0.5, max_video_frames=3))
    assert len(result.items) == 3
    assert [i.locator for i in result.items] == ["frame=0", "frame=20", "frame=40"]


def test_zip_members_are_extracted_with_paths_as_locators() -> None:
    inner = corpus.zip_of([("deep/c.png", corpus.encode(corpus.realistic_photo(40, 30, 9), "PNG"))])
    data = corpus.zip_of(
        [
            ("photos/a.jpg", jpeg(4)),
            ("docs/b.pdf", corpus.pdf_with_images([jpeg(5)])),
            ("inner.zip", inner),
            ("photos/", b""),
            ("__MACOSX/photos/._a.jpg", b"\x00\x05\x16\x07"),
            (".DS_Store", b"Bud1"),
        ]
    )
    result = digest(data, limits=LIMITS)
    assert result.input_kind == "zip"
    assert [i.locator for i in result.items] == [
        "photos/a.jpg",
        "docs/b.pdf!page=1/image=1",
        "docs/b.pdf!page=1",
        "inner.zip!deep/c.png",
    ]
    assert result.failures == []
    assert result.items[0].hash.hex() == hex_of(jpeg(4))


def test_stored_and_deflated_members_both_work() -> None:
    import zipfile

    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2):
        data = corpus.zip_of([("a.jpg", jpeg(6))], compression=compression)
        assert digest(data, limits=LIMITS).items[0].hash.hex() == hex_of(jpeg(6))


@pytest.mark.parametrize(
    ("data", "kind", "name"),
    [
        (b"\xff\xd8\xff\xe0", "image", "JPEG"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image", "WEBP"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "video", "avi"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "image", "AVIF"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", None, "HEIF"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", "video", "mov"),
        (b"junk before the header %PDF-1.4", "pdf", "pdf"),
        (b"%!PS-Adobe-3.0 EPSF-3.0", None, "PostScript/EPS"),
        (b"hello", None, "unknown"),
    ],
)
def test_sniffing_reads_content_not_names(data: bytes, kind: str | None, name: str) -> None:
    seen = sniff(data)
    assert (seen.kind, seen.name) == (kind, name)


def test_file_name_never_decides_the_format() -> None:
    result = digest(jpeg(7), filename="holiday.pdf", limits=LIMITS)
    assert result.input_kind == "image"


def test_pdfs_extract_correctly_from_many_threads_at_once() -> None:
    data = corpus.pdf_with_images([jpeg(8), jpeg(9)], pages=2)
    expected = [(i.locator, i.hash.value) for i in digest(data, limits=LIMITS).items]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: digest(data, limits=LIMITS), range(8)))
    for result in results:
        assert [(i.locator, i.hash.value) for i in result.items] == expected

"""Hostile and oversized inputs: each limit is a clear typed error; one bad item spares the rest."""

from __future__ import annotations

import struct
import zipfile
from functools import cache

import numpy as np
import pytest
from PIL import Image

from dhash_service.config import Settings
from dhash_service.digest import digest
from dhash_service.errors import (
    ConfigError,
    CorruptInput,
    EmptyInput,
    InputError,
    InputTooLarge,
    LimitExceeded,
    TimeBudgetExceeded,
    UnsafeArchive,
    UnsupportedFormat,
)
from dhash_service.extraction import ItemBudget, Limits, extract
from dhash_service.extraction.context import Context
from dhash_service.extraction.images import open_image
from dhash_service.extraction.limits import BudgetedReader
from tests.support import corpus

LIMITS = Limits()


@cache
def jpeg(seed: int = 1) -> bytes:
    return corpus.photo_jpeg(96, 64, seed)


# --- whole inputs ---------------------------------------------------------------------------------


def test_zero_bytes_is_empty_input() -> None:
    with pytest.raises(EmptyInput):
        extract(b"", limits=LIMITS)


def test_input_over_the_byte_limit_is_refused_before_sniffing() -> None:
    data = jpeg()
    with pytest.raises(InputTooLarge) as caught:
        extract(data, filename="big.jpg", limits=Limits(max_input_bytes=len(data) - 1))
    assert caught.value.http_status == 413
    assert caught.value.detail["filename"] == "big.jpg"


@pytest.mark.parametrize(
    "data", [b"hello world", b"\x00" * 100, b"GIF", b"<svg xmlns='http://www.w3.org/2000/svg'/>"]
)
def test_unknown_content_is_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedFormat) as caught:
        extract(data, limits=LIMITS)
    assert caught.value.http_status == 415


def test_renamed_eps_is_refused_without_reaching_ghostscript() -> None:
    with pytest.raises(UnsupportedFormat, match="EPS"):
        extract(corpus.renamed_eps(), filename="photo.jpg", limits=LIMITS)


def test_pillow_is_never_allowed_to_try_other_formats() -> None:
    # Even handed straight to the opener, EPS (and every format we do not list) is refused.
    ctx = Context(LIMITS)
    with pytest.raises(CorruptInput):
        open_image(corpus.renamed_eps(), ctx, ctx.new_budget(), "image")
    ico = corpus.encode(Image.new("RGB", (16, 16)), "ICO")
    with pytest.raises(CorruptInput):
        open_image(ico, ctx, ctx.new_budget(), "image")


@pytest.mark.parametrize(
    "make",
    [
        lambda: corpus.photo_jpeg(96, 64, 1),
        lambda: corpus.photo_jpeg(96, 64, 2, progressive=True),
        lambda: corpus.encode(corpus.realistic_photo(96, 64, 3), "PNG"),
        lambda: corpus.encode(corpus.realistic_photo(96, 64, 4), "BMP"),
        lambda: corpus.encode(corpus.realistic_photo(96, 64, 5), "WEBP"),
        lambda: corpus.encode(corpus.realistic_photo(96, 64, 6), "AVIF"),
        lambda: corpus.encode(corpus.realistic_photo(96, 64, 7), "TIFF"),
        lambda: corpus.encode(corpus.realistic_photo(96, 64, 8), "GIF"),
        lambda: corpus.pdf_with_images([corpus.photo_jpeg(96, 64, 9)]),
        lambda: corpus.video(seconds=1),
        lambda: corpus.zip_of([("a.jpg", corpus.photo_jpeg(96, 64, 10))]),
    ],
    ids=["jpeg", "progressive", "png", "bmp", "webp", "avif", "tiff", "gif", "pdf", "mp4", "zip"],
)
@pytest.mark.parametrize("keep", [0.02, 0.5, 0.9])
def test_truncated_files_fail_cleanly(make: object, keep: float) -> None:
    data = corpus.truncated(make(), keep)  # type: ignore[operator]
    try:
        result = digest(data, limits=LIMITS)
    except InputError as err:
        assert err.code in {"corrupt_input", "unsupported_format"}
    else:  # some formats decode a usable prefix; what they give must still be well formed
        assert result.items or result.failures
        for failure in result.failures:
            assert isinstance(failure.error, InputError)


@pytest.mark.parametrize(
    "bomb",
    [
        lambda: corpus.png_bomb_header(100_000, 100_000),
        lambda: corpus.jpeg_bomb_header(65_000, 65_000),
    ],
    ids=["png", "jpeg"],
)
def test_decompression_bomb_headers_are_refused_before_decoding(bomb: object) -> None:
    with pytest.raises(LimitExceeded, match="pixels"):
        extract(bomb(), limits=LIMITS)  # type: ignore[operator]


def test_images_over_our_pixel_limit_are_refused_from_the_header() -> None:
    with pytest.raises(LimitExceeded, match="9000x9000"):
        extract(corpus.png_bomb_header(9000, 9000), limits=LIMITS)
    with pytest.raises(LimitExceeded, match="pixels"):
        extract(jpeg(), limits=Limits(max_image_pixels=96 * 64 - 1))


def test_pixel_limit_above_pillows_ceiling_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="decompression-bomb"):
        Limits(max_image_pixels=10**9)


@pytest.mark.parametrize(
    "field", ["max_input_bytes", "max_pdf_pages", "video_frame_interval_seconds", "max_nesting"]
)
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Limits(**{field: 0})


def test_limits_come_from_settings() -> None:
    settings = Settings(max_pdf_pages=7, item_time_budget_seconds=2.5, max_image_frames=9)
    limits = Limits.from_settings(settings)
    assert (limits.max_pdf_pages, limits.item_time_budget_seconds) == (7, 2.5)
    assert limits.max_image_frames == 9
    assert Limits.from_settings(Settings()) == Limits()


# --- PDFs -----------------------------------------------------------------------------------------


def test_pdf_with_thousands_of_pages_is_refused_before_any_page_is_read() -> None:
    with pytest.raises(LimitExceeded, match="5000 pages"):
        extract(corpus.pdf_with_pages(5000), limits=LIMITS)


def test_pdf_page_limit_is_configurable() -> None:
    data = corpus.pdf_with_pages(3)
    assert len(extract(data, limits=Limits(max_pdf_pages=3)).items) == 3
    with pytest.raises(LimitExceeded):
        extract(data, limits=Limits(max_pdf_pages=2))


def test_corrupt_pdf_is_corrupt_input() -> None:
    with pytest.raises(CorruptInput):
        extract(b"%PDF-1.7\nthis is not a PDF body", limits=LIMITS)


def test_password_protected_pdf_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormat, match="password"):
        extract(corpus.password_protected_pdf(), limits=LIMITS)


def test_pdf_decoded_pixels_limit_stops_huge_renders() -> None:
    with pytest.raises(LimitExceeded, match="decodes to more than"):
        extract(corpus.pdf_with_pages(4), limits=Limits(max_decoded_pixels=3 * 1024 * 1024))


# --- video ----------------------------------------------------------------------------------------


def test_video_over_the_duration_limit_is_refused() -> None:
    with pytest.raises(LimitExceeded, match="longer than 2 s"):
        extract(corpus.video(seconds=4), limits=Limits(max_video_seconds=2))


def test_video_without_a_duration_stops_at_the_frame_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from dhash_service.extraction import video

    monkeypatch.setattr(video, "_duration", lambda container, stream: None)
    data = corpus.video(seconds=3, fps=10, gop=5)
    limits = Limits(video_frame_interval_seconds=0.5, max_video_frames=3)
    with pytest.raises(LimitExceeded, match="more than 3 frames"):
        extract(data, limits=limits)
    assert len(extract(data, limits=Limits(video_frame_interval_seconds=0.5)).items) == 6


def test_video_with_frames_past_the_duration_limit_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dhash_service.extraction import video

    monkeypatch.setattr(video, "_duration", lambda container, stream: 1.0)  # a lying header
    with pytest.raises(LimitExceeded, match="longer than 2 s"):
        extract(corpus.video(seconds=4), limits=Limits(max_video_seconds=2))


def test_garbage_after_a_video_signature_is_corrupt() -> None:
    with pytest.raises(CorruptInput):
        extract(b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isomavc1" + b"\x00" * 200, limits=LIMITS)


# --- animations and pages -------------------------------------------------------------------------


def test_animation_frame_limit() -> None:
    data = corpus.animation("GIF", 32, 24, 5, 1)
    assert len(extract(data, limits=Limits(animation_frame_step=1, max_image_frames=5)).items) == 5
    with pytest.raises(LimitExceeded, match="more than 4 frames"):
        extract(data, limits=Limits(animation_frame_step=1, max_image_frames=4))


def test_tiff_page_limit() -> None:
    data = corpus.multipage_tiff(32, 24, 4, 1)
    with pytest.raises(LimitExceeded, match="more than 3 pages"):
        extract(data, limits=Limits(max_image_frames=3))


def test_decoded_pixels_limit_covers_animation_frames() -> None:
    data = corpus.animation("GIF", 32, 24, 5, 1)
    with pytest.raises(LimitExceeded, match="decodes to more than"):
        extract(data, limits=Limits(animation_frame_step=1, max_decoded_pixels=32 * 24 * 3))


def test_a_truncated_animation_keeps_the_frames_before_the_damage() -> None:
    data = corpus.truncated(corpus.animation("GIF", 64, 48, 5, 1), 0.6)
    result = digest(data, limits=Limits(animation_frame_step=1))
    assert [i.locator for i in result.items] == ["frame=0", "frame=1"]
    assert [f.locator for f in result.failures] == ["frame=2"]
    assert isinstance(result.failures[0].error, CorruptInput)


# --- archives -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../evil.jpg",
        "photos/../../evil.jpg",
        "/etc/evil.jpg",
        "C:/evil.jpg",
        "photos\\..\\evil.jpg",
    ],
)
def test_zip_slip_names_refuse_the_whole_archive(name: str) -> None:
    data = corpus.zip_of([("fine.jpg", jpeg()), (name, jpeg(2))])
    with pytest.raises(UnsafeArchive):
        extract(data, limits=LIMITS)


def test_zip_names_with_nul_bytes_are_refused() -> None:
    with pytest.raises(UnsafeArchive, match="NUL"):
        extract(corpus.zip_with_raw_name(b"a.jpg\x00.exe", jpeg()), limits=LIMITS)


def test_zip_symlinks_are_refused() -> None:
    with pytest.raises(UnsafeArchive, match="symbolic link"):
        extract(corpus.zip_with_symlink("photo.jpg", "/etc/passwd"), limits=LIMITS)


def test_zip_duplicate_names_are_refused() -> None:
    with pytest.raises(UnsafeArchive, match="twice"):
        extract(corpus.zip_with_duplicate_names("a.jpg", jpeg(1), jpeg(2)), limits=LIMITS)


def test_zip_bomb_is_refused_from_declared_sizes_before_decompressing() -> None:
    bomb = corpus.zip_bomb(64 << 20, members=4)
    assert len(bomb) < 200_000
    with pytest.raises(LimitExceeded, match="expands to more than"):
        extract(bomb, limits=Limits(max_archive_uncompressed_bytes=32 << 20))


def test_zip_member_that_lies_about_its_size_fails_its_crc() -> None:
    data = bytearray(corpus.zip_of([("a.jpg", jpeg())], compression=zipfile.ZIP_STORED))
    # Halve the declared size in the central directory; zipfile stops there and the CRC fails.
    central = data.rfind(b"PK\x01\x02")
    (size,) = struct.unpack_from("<I", data, central + 24)
    struct.pack_into("<I", data, central + 24, size // 2)
    result_or_error: object
    try:
        result_or_error = digest(bytes(data), limits=LIMITS)
    except CorruptInput as err:
        result_or_error = err
    assert isinstance(result_or_error, CorruptInput)


def test_uncompressed_total_counts_nested_archives() -> None:
    inner = corpus.zip_of([(f"{i}.bin", bytes(600_000)) for i in range(3)])
    data = corpus.zip_of([("inner.zip", inner)])
    with pytest.raises(LimitExceeded, match="nested containers included"):
        extract(data, limits=Limits(max_archive_uncompressed_bytes=1_500_000))


def test_jpeg_streams_copied_out_of_a_pdf_count_as_unpacked_bytes() -> None:
    photo = corpus.photo_jpeg(200, 150, 3)
    data = corpus.pdf_with_images([photo] * 4, pages=4)
    assert (
        len(extract(data, limits=Limits(max_archive_uncompressed_bytes=4 * len(photo))).items) == 8
    )
    with pytest.raises(LimitExceeded, match="PDF expands to more than"):
        extract(data, limits=Limits(max_archive_uncompressed_bytes=3 * len(photo)))


def test_item_count_limit_covers_every_kind_of_item() -> None:
    album = corpus.zip_of([(f"{i}.jpg", jpeg(i)) for i in range(5)])
    assert len(extract(album, limits=Limits(max_items=5)).items) == 5
    with pytest.raises(LimitExceeded, match="more than 4 images"):
        extract(album, limits=Limits(max_items=4))
    pdf = corpus.pdf_with_images([jpeg(1), jpeg(2)], pages=2)  # 2 images + 2 renders
    with pytest.raises(LimitExceeded, match="more than 3 images"):
        extract(pdf, limits=Limits(max_items=3))
    with pytest.raises(LimitExceeded, match="more than 2 images"):
        extract(corpus.multipage_tiff(32, 24, 3, 1), limits=Limits(max_items=2))
    with pytest.raises(LimitExceeded, match="more than 1 images"):
        extract(corpus.video(seconds=3), limits=Limits(max_items=1, video_frame_interval_seconds=1))


def test_member_count_is_checked_before_the_directory_is_parsed() -> None:
    data = corpus.zip_of([(f"{i}.txt", b"") for i in range(30)])
    with pytest.raises(LimitExceeded, match="30 members"):
        extract(data, limits=Limits(max_archive_members=29))


def test_member_count_from_a_forged_end_record_is_refused() -> None:
    data = bytearray(corpus.zip_of([("a.jpg", jpeg())]))
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 60_000, 60_000)
    with pytest.raises(LimitExceeded, match="60000 members"):
        extract(bytes(data), limits=LIMITS)


def test_nesting_deeper_than_the_limit_fails_that_member_only() -> None:
    deep = corpus.nested_zip(2, ("x.jpg", jpeg()))  # outer > deep.zip > level0.zip: 3 deep
    data = corpus.zip_of([("ok.jpg", jpeg(2)), ("deep.zip", deep)])
    result = extract(data, limits=LIMITS)
    assert [i.locator for i in result.items] == ["ok.jpg"]
    (failure,) = result.failures
    assert failure.locator == "deep.zip!level0.zip"
    assert isinstance(failure.error, LimitExceeded)
    assert len(extract(data, limits=Limits(max_nesting=3)).items) == 2


def test_member_over_the_input_limit_fails_alone() -> None:
    big = corpus.encode(corpus.realistic_photo(200, 200, 1), "BMP")
    data = corpus.zip_of([("small.jpg", jpeg()), ("big.bmp", big)])
    result = extract(data, limits=Limits(max_input_bytes=len(big) - 1))
    assert [i.locator for i in result.items] == ["small.jpg"]
    assert isinstance(result.failures[0].error, InputTooLarge)


def test_one_bad_member_does_not_abort_the_others() -> None:
    data = corpus.zip_of(
        [
            ("good1.jpg", jpeg(1)),
            ("truncated.jpg", corpus.truncated(jpeg(2))),
            ("bomb.png", corpus.png_bomb_header(100_000, 100_000)),
            ("notes.txt", b"not an image"),
            ("doc.eps", corpus.renamed_eps()),
            ("good2.jpg", jpeg(3)),
        ]
    )
    result = digest(data, limits=LIMITS)
    assert [i.locator for i in result.items] == ["good1.jpg", "good2.jpg"]
    errors = {f.locator: type(f.error) for f in result.failures}
    assert errors == {
        "truncated.jpg": CorruptInput,
        "bomb.png": LimitExceeded,
        "notes.txt": UnsupportedFormat,
        "doc.eps": UnsupportedFormat,
    }


def test_archive_of_nothing_hashable_raises_with_every_failure_listed() -> None:
    data = corpus.zip_of([("a.txt", b"a"), ("b.jpg", corpus.truncated(jpeg()))])
    with pytest.raises(InputError, match="no image could be hashed") as caught:
        digest(data, limits=LIMITS)
    listed = caught.value.detail["failures"]
    assert isinstance(listed, list)
    assert {f["locator"] for f in listed} == {"a.txt", "b.jpg"}


def test_empty_archive_is_empty_input() -> None:
    with pytest.raises(EmptyInput):
        extract(corpus.zip_of([("dir/", b"")]), limits=LIMITS)


def test_encrypted_member_is_unsupported() -> None:
    data = bytearray(corpus.zip_of([("a.jpg", jpeg())], compression=zipfile.ZIP_STORED))
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        position = data.find(signature)
        data[position + flag_offset] |= 0x1
    result_or_error: object
    try:
        result_or_error = digest(bytes(data), limits=LIMITS)
    except UnsupportedFormat as err:
        result_or_error = err
    assert isinstance(result_or_error, UnsupportedFormat)


# --- time budget ------------------------------------------------------------------------------


def test_item_time_budget_fails_the_item() -> None:
    limits = Limits(item_time_budget_seconds=0)
    with pytest.raises(TimeBudgetExceeded):
        digest(corpus.encode(corpus.realistic_photo(300, 200, 1), "PNG"), limits=limits)


def test_item_time_budget_applies_per_member() -> None:
    data = corpus.zip_of([("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))])
    with pytest.raises(TimeBudgetExceeded) as caught:
        digest(data, limits=Limits(item_time_budget_seconds=0))
    failures = caught.value.detail["failures"]
    assert isinstance(failures, list)
    assert len(failures) == 2


def test_budgeted_reader_stops_reading_once_the_budget_is_spent() -> None:
    budget = ItemBudget(0.0)
    reader = BudgetedReader(b"0123456789", budget)
    assert reader.read(2) == b"01"  # not running: only time already spent counts
    with budget.running(), pytest.raises(TimeBudgetExceeded):
        reader.read(2)
    assert budget.spent > 0


def test_a_slow_decode_is_stopped_part_way_through_the_data() -> None:
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, size=(2000, 2000, 3), dtype=np.uint8)
    data = corpus.encode(Image.fromarray(noise, "RGB"), "PNG", compress_level=1)
    budget = ItemBudget(0.001)  # far less than reading and decoding 12 MB of PNG takes
    reader = BudgetedReader(data, budget)
    image = Image.open(reader)
    with budget.running(), pytest.raises(TimeBudgetExceeded):
        image.load()
    assert reader.tell() < len(data) // 2


def test_budget_accumulates_across_separate_runs() -> None:
    budget = ItemBudget(10.0)
    with budget.running():
        pass
    first = budget.spent
    with budget.running(), budget.running():  # nesting measures once
        pass
    assert budget.spent >= first > 0
    budget.check()


def test_single_corrupt_image_raises_its_own_error() -> None:
    with pytest.raises(CorruptInput, match="cannot be decoded"):
        digest(
            corpus.truncated(corpus.encode(corpus.realistic_photo(300, 200, 2), "PNG")),
            limits=LIMITS,
        )


def test_pillow_decodes_through_the_budgeted_reader() -> None:
    budget = ItemBudget(10.0)
    image = Image.open(BudgetedReader(jpeg(), budget))
    image.load()
    assert image.size == (96, 64)

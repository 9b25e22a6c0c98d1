"""Still images, animations and multi-page TIFFs, through Pillow restricted to our formats.

Pillow's decompression-bomb warning is made an error once, at import (a process-wide warnings
filter, never a per-call toggle of Pillow's globals, so concurrent threads see one policy); on top
of it every image's header size is checked against ``max_image_pixels`` before any pixel is
decoded, and TIFF pages and animation frames are checked one by one.
"""

from __future__ import annotations

import re
import struct
import warnings

from PIL import Image, UnidentifiedImageError

from dhash_service.errors import CorruptInput, InputError, LimitExceeded
from dhash_service.extraction.context import Context
from dhash_service.extraction.limits import BudgetedReader, ItemBudget
from dhash_service.extraction.model import (
    INPUT_IMAGE,
    KIND_ANIMATION_FRAME,
    KIND_IMAGE,
    KIND_TIFF_PAGE,
    ExtractedImage,
    Extraction,
    ItemFailure,
)
from dhash_service.extraction.sniff import IMAGE_FORMATS
from dhash_service.hashing import to_grayscale

warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

# Pillow's bomb message: "Image size (10000000000 pixels) exceeds limit of 178956970 pixels, ...".
_PILLOW_BOMB_PIXELS = re.compile(r"Image size \((\d+) pixels\)")

# Formats whose extra frames are an animation. An MPO (a JPEG carrying a second, preview or
# stereo image) is one photo: only its primary image is hashed.
_ANIMATED_FORMATS = frozenset({"GIF", "PNG", "WEBP", "AVIF"})

# What Pillow's plugins raise on malformed data; all of it means "corrupt input" to us. Pillow
# also *warns* about some damage and carries on; where warnings are errors (the test suite) those
# surface as exceptions and mean the same thing.
DECODE_ERRORS: tuple[type[Exception], ...] = (
    Warning,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    RuntimeError,  # the AVIF plugin's "Failed to decode image"
)


def open_image(data: bytes, ctx: Context, budget: ItemBudget, what: str) -> Image.Image:
    """Open (not decode) one image; its pixels are decoded later, under the same budget."""
    try:
        with budget.running():
            image = Image.open(BudgetedReader(data, budget), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(what, exc, ctx.limits.max_image_pixels) from None
    except UnidentifiedImageError:
        raise CorruptInput(f"{what} looks like an image but cannot be read") from None
    except DECODE_ERRORS as exc:
        raise CorruptInput(f"{what} cannot be read: {exc}") from None
    ctx.check_pixels(*image.size, what)
    return image


def _bomb_error(what: str, exc: Exception, limit: int) -> LimitExceeded:
    """Pillow's bomb check runs inside ``Image.open``, before our own header check can, for any
    claim above its ceiling; say it in terms of *our* limit, which is never above that ceiling
    (``Limits`` refuses it), so the message and ``detail["limit"]`` agree."""
    claimed = _PILLOW_BOMB_PIXELS.search(str(exc))
    if claimed is None:
        return LimitExceeded(
            f"{what} claims more pixels than the limit of {limit}", detail={"limit": limit}
        )
    pixels = int(claimed.group(1))
    return LimitExceeded(
        f"{what} claims {pixels} pixels; the limit is {limit}",
        detail={"pixels": pixels, "limit": limit},
    )


def decode_error(what: str, exc: BaseException) -> CorruptInput:
    return CorruptInput(f"{what} cannot be decoded: {exc or type(exc).__name__}")


def extract_image(data: bytes, format_name: str, ctx: Context) -> Extraction:
    budget = ctx.new_budget()
    image = open_image(data, ctx, budget, f"{format_name} image")
    try:
        with budget.running():
            multi = bool(getattr(image, "is_animated", False))
    except DECODE_ERRORS:
        multi = False  # a damaged second frame must not cost us the first
    if multi and image.format == "TIFF":
        return _tiff_pages(data, ctx)
    if multi and image.format in _ANIMATED_FORMATS and ctx.limits.animation_frame_step > 0:
        return _animation_frames(image, ctx)
    ctx.count_item()
    return Extraction(INPUT_IMAGE, [ExtractedImage(image, "", KIND_IMAGE, budget)])


def _tiff_pages(data: bytes, ctx: Context) -> Extraction:
    """Each page is opened lazily on its own, so pages are decoded one at a time when hashed."""
    result = Extraction(INPUT_IMAGE)
    pages = _count_tiff_pages(data, ctx, result)
    for index in range(pages):
        locator = f"page={index + 1}"
        budget = ctx.new_budget()
        ctx.count_item()
        try:
            page = open_image(data, ctx, budget, "TIFF image")
            with budget.running():
                page.seek(index)
            ctx.check_pixels(*page.size, f"TIFF page {index + 1}")
        except InputError as err:
            result.failures.append(ItemFailure(locator, err))
            continue
        except DECODE_ERRORS as exc:
            result.failures.append(
                ItemFailure(locator, decode_error(f"TIFF page {index + 1}", exc))
            )
            continue
        result.items.append(ExtractedImage(page, locator, KIND_TIFF_PAGE, budget))
    return result


def _count_tiff_pages(data: bytes, ctx: Context, result: Extraction) -> int:
    budget = ctx.new_budget()
    probe = open_image(data, ctx, budget, "TIFF image")
    pages = 1
    while True:
        try:
            with budget.running():
                probe.seek(pages)
        except EOFError:
            return pages
        except DECODE_ERRORS as exc:
            result.failures.append(
                ItemFailure(f"page={pages + 1}", decode_error(f"TIFF page {pages + 1}", exc))
            )
            return pages
        pages += 1
        if pages > ctx.limits.max_image_frames:
            raise LimitExceeded(
                f"TIFF has more than {ctx.limits.max_image_frames} pages",
                detail={"limit": ctx.limits.max_image_frames},
            )


def _animation_frames(image: Image.Image, ctx: Context) -> Extraction:
    """Every Nth frame, decoded now (frames are composited in order, so they cannot be lazy)."""
    result = Extraction(INPUT_IMAGE)
    step = ctx.limits.animation_frame_step
    index = 0
    while True:
        locator = f"frame={index}"
        budget = ctx.new_budget()
        try:
            with budget.running():
                image.seek(index)
                if len(result.items) >= ctx.limits.max_image_frames:
                    raise LimitExceeded(
                        f"animation yields more than {ctx.limits.max_image_frames} frames "
                        f"at one every {step}",
                        detail={"limit": ctx.limits.max_image_frames, "step": step},
                    )
                ctx.count_item()
                ctx.count_decoded(*image.size)
                frame = to_grayscale(image)
                if frame is image:
                    frame = image.copy()  # the next seek would overwrite it in place
            budget.check()
        except EOFError:
            break
        except LimitExceeded:
            raise
        except InputError as err:
            result.failures.append(ItemFailure(locator, err))
            break
        except DECODE_ERRORS as exc:
            result.failures.append(ItemFailure(locator, decode_error(f"frame {index}", exc)))
            break
        result.items.append(ExtractedImage(frame, locator, KIND_ANIMATION_FRAME, budget))
        index += step
    return result

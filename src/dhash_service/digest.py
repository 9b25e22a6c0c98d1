"""Bytes to hashes: extract every image, hash each under its time budget, keep the failures.

This is what the API and the CLI call. Items are decoded one at a time and released as soon as
they are hashed, so memory follows the largest item, not the whole input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from dhash_service import faults
from dhash_service.errors import (
    ClientDisconnected,
    CorruptInput,
    InputError,
    LimitExceeded,
    TimeBudgetExceeded,
)
from dhash_service.extraction import ExtractedImage, ItemFailure, Limits, extract
from dhash_service.extraction.images import DECODE_ERRORS
from dhash_service.extraction.limits import RequestBudget
from dhash_service.hashing import ImageHash, algorithm_spec, hash_image
from dhash_service.thumbnails import MAX_THUMBNAIL_BYTES_PER_INPUT, Thumbnail, thumbnail_of


@dataclass
class HashedItem:
    locator: str
    kind: str
    width: int
    height: int
    hash: ImageHash
    seconds: float  # wall time spent on this item: extraction share, decoding and hashing
    thumbnail: Thumbnail | None = None  # made after the hash, from the same decoded image


@dataclass
class DigestResult:
    input_kind: str
    items: list[HashedItem] = field(default_factory=list)
    failures: list[ItemFailure] = field(default_factory=list)


def digest(
    data: bytes,
    *,
    filename: str | None = None,
    algorithm: str = "dhash64",
    limits: Limits,
    request: RequestBudget | None = None,
) -> DigestResult:
    """Hash every image in ``data``.

    Raises ``InputError`` when the input as a whole is refused, and also when it held images but
    not one could be hashed (the error of the first failure, all of them in ``detail``): an
    empty success would hide the problem. Partial failures are returned in ``failures``.
    """
    algorithm_spec(algorithm)  # refuse an unknown algorithm before any decoding
    extraction = extract(data, filename=filename, limits=limits, request=request)
    result = DigestResult(extraction.input_kind, failures=list(extraction.failures))
    previews = 0  # bytes of thumbnails kept for this input: bounded like everything else
    try:
        for item in extraction.items:
            try:
                if request is not None:
                    request.check()
                side = limits.thumbnail_side if previews < MAX_THUMBNAIL_BYTES_PER_INPUT else 0
                hashed = _hash_item(item, algorithm, side)
                previews += len(hashed.thumbnail.data) if hashed.thumbnail else 0
                result.items.append(hashed)
            except (TimeBudgetExceeded, ClientDisconnected) as err:
                if request is not None and (request.cancelled.is_set() or request.remaining < 0):
                    raise  # the request's budget, not the item's: the whole input is refused
                result.failures.append(ItemFailure(item.locator, err))
            except InputError as err:
                result.failures.append(ItemFailure(item.locator, err))
            finally:
                item.image.close()  # frees the decoded pixels now, not at garbage collection
    finally:
        for item in extraction.items:
            item.image.close()
    if not result.items and result.failures:
        raise _nothing_hashed(result.failures)
    return result


def _hash_item(item: ExtractedImage, algorithm: str, thumbnail_side: int = 0) -> HashedItem:
    width, height = item.image.size  # before a fast hash reduces the JPEG on load
    what = item.locator or "image"
    try:
        with item.budget.running():
            faults.while_hashing(what)
            # The item's budget (and the request's) is checked between the resize's blocks too,
            # so a long strip stops when its time is spent, not after the whole resize.
            image_hash = hash_image(item.image, algorithm, item.budget.check)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise LimitExceeded(f"{what}: {exc}") from None
    except DECODE_ERRORS as exc:
        raise CorruptInput(f"{what} cannot be decoded: {exc or type(exc).__name__}") from None
    item.budget.check()
    try:
        preview = thumbnail_of(item.image, thumbnail_side)
    except (OSError, ValueError):
        preview = None  # the hash is what matters; a preview that cannot be made is left out
    return HashedItem(
        locator=item.locator,
        kind=item.kind,
        width=width,
        height=height,
        hash=image_hash,
        seconds=item.budget.spent,
        thumbnail=preview,
    )


def _nothing_hashed(failures: list[ItemFailure]) -> InputError:
    first = failures[0].error
    if len(failures) == 1 and not failures[0].locator:
        return first  # a plain image: its own error says it all
    return type(first)(
        f"no image could be hashed; first failure at {failures[0].locator or 'image'}: "
        f"{first.message}",
        detail={
            "failures": [
                {"locator": f.locator, "error": f.error.code, "message": f.error.message}
                for f in failures
            ]
        },
    )

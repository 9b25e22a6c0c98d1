"""Bytes in, extracted images out: recognise the input, enforce the input-wide limits, route."""

from __future__ import annotations

from dhash_service.errors import (
    EmptyInput,
    InputError,
    InputTooLarge,
    LimitExceeded,
    UnsupportedFormat,
)
from dhash_service.extraction.context import Context
from dhash_service.extraction.limits import Limits, RequestBudget
from dhash_service.extraction.model import Extraction
from dhash_service.extraction.sniff import IMAGE_FORMATS, sniff


def extract(
    data: bytes,
    *,
    filename: str | None = None,
    limits: Limits,
    request: RequestBudget | None = None,
) -> Extraction:
    """Extract every image from one input.

    Raises an ``InputError`` subclass when the input as a whole is refused (empty, too large,
    unsupported, corrupt, over a limit, unsafe); failures of single items (one page, one frame,
    one archive member) are recorded in ``Extraction.failures`` and the rest is still returned.
    The content decides the format; the file name is only recorded in a refusal's ``detail``.
    """
    try:
        return _extract(data, Context(limits, request=request))
    except InputError as err:
        if filename:
            err.detail.setdefault("filename", filename)
        raise


def _extract(data: bytes, ctx: Context) -> Extraction:
    limits = ctx.limits
    if not data:
        raise EmptyInput("input is empty")
    if len(data) > limits.max_input_bytes:
        raise InputTooLarge(
            f"input is {len(data)} bytes; the limit is {limits.max_input_bytes}",
            detail={"bytes": len(data), "limit": limits.max_input_bytes},
        )
    seen = sniff(data)
    if seen.kind == "image":
        from dhash_service.extraction.images import extract_image

        return extract_image(data, seen.name, ctx)
    if seen.kind == "pdf":
        from dhash_service.extraction.pdf import extract_pdf

        return extract_pdf(data, ctx)
    if seen.kind == "video":
        from dhash_service.extraction.video import extract_video

        return extract_video(data, seen.name, ctx)
    if seen.kind == "zip":
        from dhash_service.extraction.archive import extract_zip

        if ctx.depth + 1 > limits.max_nesting:
            raise LimitExceeded(
                f"archives are nested more than {limits.max_nesting} deep",
                detail={"limit": limits.max_nesting},
            )
        return extract_zip(data, ctx, _extract)
    accepted = ", ".join(IMAGE_FORMATS) + ", PDF, MP4/MOV, MKV/WebM, AVI, MPEG-TS, ZIP"
    raise UnsupportedFormat(
        f"unsupported format ({seen.name}); accepted: {accepted}",
        detail={"detected": seen.name},
    )

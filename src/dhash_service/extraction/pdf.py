"""PDF: every embedded image and a render of every page, through PDFium (pypdfium2).

pypdfium2 is Apache-2.0/BSD (PyMuPDF would make us AGPL). PDFium is not thread-safe, so all
PDFium calls in the process run under one lock and nothing PDFium owns outlives ``extract_pdf``:
embedded JPEGs are handed on as their original bytes (lazily opened, so the JPEG fast path and
the imagehash-compatible hash of the original file both still apply), everything else is copied
into Pillow as 8-bit grayscale.
"""

from __future__ import annotations

import threading

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from dhash_service.errors import CorruptInput, InputError, LimitExceeded, UnsupportedFormat
from dhash_service.extraction.context import Context
from dhash_service.extraction.images import open_image
from dhash_service.extraction.limits import ItemBudget
from dhash_service.extraction.model import (
    INPUT_PDF,
    KIND_PDF_IMAGE,
    KIND_PDF_PAGE,
    ExtractedImage,
    Extraction,
    ItemFailure,
)

_PDFIUM_LOCK = threading.Lock()
# What reading a damaged page raises: PDFium's errors, and ValueError (a UnicodeDecodeError from
# garbled filter names, for one) from pypdfium2's own parsing of what PDFium hands back.
_PAGE_ERRORS = (pdfium.PdfiumError, ValueError)


def extract_pdf(data: bytes, ctx: Context) -> Extraction:
    with _PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
                raise UnsupportedFormat("PDF is password-protected") from None
            raise CorruptInput(f"PDF cannot be read: {exc}") from None
        try:
            return _extract_document(document, ctx)
        finally:
            document.close()


def _extract_document(document: pdfium.PdfDocument, ctx: Context) -> Extraction:
    pages = len(document)
    if pages > ctx.limits.max_pdf_pages:
        raise LimitExceeded(
            f"PDF has {pages} pages; the limit is {ctx.limits.max_pdf_pages}",
            detail={"pages": pages, "limit": ctx.limits.max_pdf_pages},
        )
    result = Extraction(INPUT_PDF)
    for index in range(pages):
        number = index + 1
        try:
            page = document[index]
        except pdfium.PdfiumError as exc:
            result.failures.append(
                ItemFailure(f"page={number}", CorruptInput(f"page {number}: {exc}"))
            )
            continue
        try:
            _page_images(page, number, ctx, result)
            _page_render(page, number, ctx, result)
        finally:
            page.close()
    return result


def _page_images(page: pdfium.PdfPage, number: int, ctx: Context, result: Extraction) -> None:
    objects = page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,))
    for position, obj in enumerate(objects, start=1):
        locator = f"page={number}/image={position}"
        budget = ctx.new_budget()
        ctx.count_item()
        try:
            with budget.running():
                item = _embedded_image(obj, locator, ctx, budget)
            budget.check()
        except InputError as err:
            if ctx.totals.exhausted:
                raise
            result.failures.append(ItemFailure(locator, err))
            continue
        except _PAGE_ERRORS as exc:
            result.failures.append(ItemFailure(locator, CorruptInput(f"{locator}: {exc}")))
            continue
        result.items.append(item)


def _embedded_image(
    obj: pdfium.PdfImage, locator: str, ctx: Context, budget: ItemBudget
) -> ExtractedImage:
    width, height = obj.get_px_size()
    ctx.check_pixels(width, height, f"PDF image {locator}")
    complex_filters = [f for f in obj.get_filters() if f not in pdfium.PdfImage.SIMPLE_FILTERS]
    if complex_filters == ["DCTDecode"]:
        jpeg = bytes(obj.get_data(decode_simple=True))
        ctx.count_unpacked(len(jpeg), "PDF")
        return ExtractedImage(
            open_image(jpeg, ctx, budget, "PDF image"), locator, KIND_PDF_IMAGE, budget
        )
    bitmap = obj.get_bitmap(render=False)
    try:
        ctx.count_decoded(bitmap.width, bitmap.height)
        gray = bitmap.to_pil().convert("L")  # a copy: PDFium's buffer is freed below
    finally:
        bitmap.close()
    return ExtractedImage(gray, locator, KIND_PDF_IMAGE, budget)


def _page_render(page: pdfium.PdfPage, number: int, ctx: Context, result: Extraction) -> None:
    locator = f"page={number}"
    budget = ctx.new_budget()
    ctx.count_item()
    try:
        with budget.running():
            width_pt, height_pt = page.get_size()
            longest = max(width_pt, height_pt, 1.0)
            scale = ctx.limits.pdf_render_max_side / longest
            width, height = round(width_pt * scale), round(height_pt * scale)
            ctx.check_pixels(width, height, f"render of page {number}")
            ctx.count_decoded(width, height)
            bitmap = page.render(scale=scale, grayscale=True)
            try:
                gray = bitmap.to_pil().convert("L")
            finally:
                bitmap.close()
        budget.check()
    except InputError as err:
        if ctx.totals.exhausted:
            raise
        result.failures.append(ItemFailure(locator, err))
        return
    except _PAGE_ERRORS as exc:
        result.failures.append(ItemFailure(locator, CorruptInput(f"page {number}: {exc}")))
        return
    result.items.append(ExtractedImage(gray, locator, KIND_PDF_PAGE, budget))

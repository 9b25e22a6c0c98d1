"""Input bytes to images: still and animated images, TIFF pages, PDFs, video keyframes, ZIPs.

Every input is bounded by ``Limits``; whole-input refusals raise ``InputError`` subclasses, and a
failing page, frame or member is recorded without aborting the others.
"""

from dhash_service.extraction.dispatch import extract
from dhash_service.extraction.limits import ItemBudget, Limits
from dhash_service.extraction.model import (
    INPUT_IMAGE,
    INPUT_PDF,
    INPUT_VIDEO,
    INPUT_ZIP,
    KIND_ANIMATION_FRAME,
    KIND_IMAGE,
    KIND_PDF_IMAGE,
    KIND_PDF_PAGE,
    KIND_TIFF_PAGE,
    KIND_VIDEO_FRAME,
    ExtractedImage,
    Extraction,
    ItemFailure,
)
from dhash_service.extraction.sniff import IMAGE_FORMATS

__all__ = [
    "IMAGE_FORMATS",
    "INPUT_IMAGE",
    "INPUT_PDF",
    "INPUT_VIDEO",
    "INPUT_ZIP",
    "KIND_ANIMATION_FRAME",
    "KIND_IMAGE",
    "KIND_PDF_IMAGE",
    "KIND_PDF_PAGE",
    "KIND_TIFF_PAGE",
    "KIND_VIDEO_FRAME",
    "ExtractedImage",
    "Extraction",
    "ItemBudget",
    "ItemFailure",
    "Limits",
    "extract",
]

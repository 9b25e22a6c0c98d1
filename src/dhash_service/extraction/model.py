"""What extraction produces: images with a locator saying where in the input each came from."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from dhash_service.errors import InputError
from dhash_service.extraction.limits import ItemBudget

# ``ExtractedImage.kind`` values.
KIND_IMAGE = "image"
KIND_ANIMATION_FRAME = "animation-frame"
KIND_TIFF_PAGE = "tiff-page"
KIND_PDF_IMAGE = "pdf-image"
KIND_PDF_PAGE = "pdf-page"
KIND_VIDEO_FRAME = "video-frame"

# ``Extraction.input_kind`` values.
INPUT_IMAGE = "image"
INPUT_PDF = "pdf"
INPUT_VIDEO = "video"
INPUT_ZIP = "zip"


@dataclass
class ExtractedImage:
    """One image to hash.

    ``image`` is left unloaded when it comes straight from encoded bytes, so a fast hash can still
    ask the JPEG decoder to reduce on load; frames, pages and renders that had to be decoded
    during extraction are kept as 8-bit grayscale, which hashes exactly like the colour original
    (dhash converts to grayscale first) at a third of the memory.

    ``locator`` says where it came from: ``""`` for a plain image, ``"frame=12"``, ``"page=3"``,
    ``"page=3/image=2"``, ``"photos/a.jpg"``, and ``"inner.zip!photos/a.jpg"`` inside archives.
    """

    image: Image.Image
    locator: str
    kind: str
    budget: ItemBudget = field(default_factory=lambda: ItemBudget(float("inf")), repr=False)


@dataclass
class ItemFailure:
    """One item that could not be extracted or hashed; the others are still returned."""

    locator: str
    error: InputError


@dataclass
class Extraction:
    input_kind: str
    items: list[ExtractedImage] = field(default_factory=list)
    failures: list[ItemFailure] = field(default_factory=list)

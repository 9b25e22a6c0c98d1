"""The difference hash, bit-identical to ``imagehash.dhash``, plus its JPEG fast path.

``dhash64`` does exactly what imagehash does (``convert("L")``, LANCZOS resize to
``(size + 1) x size``, compare each pixel with its right neighbour, row-major, first bit most
significant), so hashes computed by imagehash elsewhere can be imported and compared. The resize
is Pillow's, reproduced bit for bit as a matrix product (``resample.py``), because Pillow's own
loop is most of the cost of a hash after the decode.

``dhash64-fast`` asks libjpeg to decode a JPEG straight to grayscale at 1/2, 1/4 or 1/8 scale
(``Image.draft``) before the same resize; the IDCT does the downscaling, so most of the decode
and the colour conversion are skipped. Inputs that are not unloaded JPEGs take the exact path.

Hashing is pure (no global state) and thread-safe for distinct image objects; Pillow releases
the GIL while decoding and resizing, so a thread pool scales across cores. A caller's time budget
comes in as ``check``, a callable that raises when the budget is spent: the resize calls it between
its blocks, so a hash past its budget stops there instead of running to its end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from PIL import Image

from dhash_service.errors import InputError
from dhash_service.hashing.algorithms import DHASH64, AlgorithmSpec, algorithm_spec
from dhash_service.hashing.resample import resize_lanczos

# Fast mode never reduces a JPEG below DRAFT_FACTOR times the resize target on either side, so
# the LANCZOS filter still sees several source pixels per output pixel (measured in bench/).
DRAFT_FACTOR = 8

# Low-information thresholds, on the (size + 1) x size grayscale thumbnail the hash is read from:
# a thumbnail whose brightness spread is at most FLAT_SPREAD grey levels is near-flat, and one
# where more than a quarter of the neighbour pairs differ by at most UNSTABLE_DIFF grey levels has
# bits that a re-encode can flip. Either way a match on it deserves less confidence.
FLAT_SPREAD = 6
UNSTABLE_DIFF = 1
UNSTABLE_SHARE = 0.25

_JPEG_FORMATS = frozenset({"JPEG", "MPO"})


@dataclass(frozen=True, slots=True)
class ImageHash:
    """A hash and the algorithm that made it; only hashes of the same algorithm compare."""

    value: int
    algorithm: str
    bits: int
    low_information: bool = False

    def hex(self) -> str:
        """Zero-padded lowercase hex, the same text as ``str(imagehash.dhash(img))``."""
        return f"{self.value:0{self.bits // 4}x}"

    @classmethod
    def from_hex(cls, text: str, algorithm: str = DHASH64) -> ImageHash:
        """Parse a stored hex hash; raises ``InputError`` on bad characters or length."""
        spec = algorithm_spec(algorithm)
        digits = spec.bits // 4
        cleaned = text.strip().lower()
        if len(cleaned) != digits or any(c not in "0123456789abcdef" for c in cleaned):
            raise InputError(
                f"{algorithm} hash must be {digits} hex digits, got {text!r}",
                detail={"algorithm": algorithm, "expected_hex_digits": digits},
            )
        return cls(value=int(cleaned, 16), algorithm=algorithm, bits=spec.bits)

    def distance(self, other: ImageHash) -> int:
        """Hamming distance; comparing hashes of different algorithms is a bug, so it raises."""
        if other.algorithm != self.algorithm:
            raise InputError(
                f"cannot compare a {self.algorithm} hash with a {other.algorithm} hash",
                detail={"algorithms": [self.algorithm, other.algorithm]},
            )
        return hamming(self.value, other.value)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hash values."""
    return (a ^ b).bit_count()


def hash_image(
    image: Image.Image, algorithm: str = DHASH64, check: Callable[[], None] | None = None
) -> ImageHash:
    """Hash one image.

    In a fast mode an unloaded JPEG is reduced on load, which changes that image object's size and
    mode (``Image.draft``); read ``image.size`` first if you need the original dimensions.
    ``check`` is called between the resize's blocks and may raise to stop the hash (a budget).
    """
    spec = algorithm_spec(algorithm)
    width, height = image.size
    if spec.fast:
        _reduce_jpeg_on_load(image, spec)
    rows = resize_lanczos(to_grayscale(image), spec.size + 1, spec.size, check).tolist()
    # 72 (or 272) small ints: plain Python beats a dozen numpy calls on arrays this small, and the
    # bits and the low-information test share one walk over the neighbour pairs.
    value = 0
    near_ties = 0
    for row in rows:
        for left, right in pairwise(row):
            value = (value << 1) | (right > left)  # first bit most significant, as imagehash
            near_ties += abs(right - left) <= UNSTABLE_DIFF
    return ImageHash(
        value=value,
        algorithm=spec.name,
        bits=spec.bits,
        low_information=_is_low_information(rows, near_ties, width, height, spec),
    )


def _reduce_jpeg_on_load(image: Image.Image, spec: AlgorithmSpec) -> None:
    if image.format not in _JPEG_FORMATS or not getattr(image, "tile", None):
        return  # not a JPEG, or already decoded: nothing left to save
    image.draft("L", ((spec.size + 1) * DRAFT_FACTOR, spec.size * DRAFT_FACTOR))


def to_grayscale(image: Image.Image) -> Image.Image:
    """The 8-bit grayscale dhash reads, exactly ``image.convert("L")`` (as imagehash does)."""
    if image.mode == "L":
        return image
    if image.mode == "P" and isinstance(image.info.get("transparency"), bytes):
        # Pillow would warn and then ignore per-entry palette alpha; drop it up front on a copy
        # so the pixels (and the hash) are exactly imagehash's, without the warning.
        image = image.copy()
        del image.info["transparency"]
    return image.convert("L")


def _is_low_information(
    rows: list[list[int]], near_ties: int, width: int, height: int, spec: AlgorithmSpec
) -> bool:
    if width < spec.size + 1 or height < spec.size:
        return True  # upscaled: the hash holds no more information than the few source pixels
    spread = max(map(max, rows)) - min(map(min, rows))
    if spread <= FLAT_SPREAD:
        return True
    return near_ties > UNSTABLE_SHARE * spec.bits

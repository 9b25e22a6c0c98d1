import io

import imagehash
from PIL import Image

from dhash_rollout.checks.known_image import KNOWN_DHASH64, known_image, known_image_png


def test_known_image_is_drawn_identically_every_time() -> None:
    assert known_image().tobytes() == known_image().tobytes()


def test_committed_hash_matches_imagehash_dhash_of_the_decoded_png() -> None:
    decoded = Image.open(io.BytesIO(known_image_png()))
    assert str(imagehash.dhash(decoded)) == KNOWN_DHASH64


def test_committed_hash_is_not_degenerate() -> None:
    bits = bin(int(KNOWN_DHASH64, 16)).count("1")
    assert 8 < bits < 56


def test_committed_hash_matches_the_service_hashing() -> None:
    from dhash_service.hashing import hash_image

    decoded = Image.open(io.BytesIO(known_image_png()))
    assert hash_image(decoded).hex() == KNOWN_DHASH64

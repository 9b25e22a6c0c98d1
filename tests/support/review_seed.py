"""Review queues for the console's tests and benchmark, made of real photos and real hashes.

``review_band_pair`` gives a library photo and a cropped copy whose dhash is 5..10 bits away
(the review band), found in-process; ``seed_via_api`` ingests such pairs through the real API
(so the thumbnails are the ones ingest makes); ``decide_reviews`` has a reviewer confirm one and
reject another (the decisions a restore must carry over) and ``review_states`` reads them back
from the database. ``seed_store`` writes a large queue straight into
the store through the repository (the benchmark's 5,000 items with 10 candidates each): the
same rows ingest writes, thumbnails made by ``thumbnail_of`` from photos, cycled from a pool.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Iterator

import httpx
from PIL import Image
from sqlalchemy import create_engine, text

from dhash_service.hashing import hash_image
from dhash_service.store import schema
from dhash_service.store.repository import (
    NewContent,
    NewImage,
    NewMatch,
    NewReview,
    NewThumbnail,
    Repository,
    StoredHash,
)
from dhash_service.thumbnails import thumbnail_of
from tests.support.api import AUTH
from tests.support.corpus import encode, realistic_photo

CROPS = (0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.12)


def _hash(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return hash_image(image).value


@functools.cache
def review_band_pair(seed: int) -> tuple[bytes, bytes, int] | None:
    """(library photo, a crop of it 5..10 bits away, the distance); None for a photo no crop
    of which lands in the band. The pictures of ``tests.support.api.photo``, at 320x240."""
    base = realistic_photo(320, 240, seed)
    original = encode(base, "JPEG", quality=90)
    reference = _hash(original)
    w, h = base.size
    for crop in CROPS:
        cropped = base.crop((int(w * crop), int(h * crop), w, h)).resize((w, h), Image.BICUBIC)
        candidate = encode(cropped, "JPEG", quality=90)
        distance = (_hash(candidate) ^ reference).bit_count()
        if 4 < distance <= 10:
            return original, candidate, distance
    return None


def review_band_pairs(count: int, first_seed: int = 1) -> Iterator[tuple[bytes, bytes, int]]:
    """``count`` pairs from consecutive seeds, skipping the photos that have none."""
    seed = first_seed
    made = 0
    while made < count:
        pair = review_band_pair(seed)
        seed += 1
        if pair is not None:
            made += 1
            yield pair


def seed_via_api(
    base_url: str, pairs: Iterable[tuple[bytes, bytes, int]], source: str
) -> list[int]:
    """Ingest a library photo and its review-band copy per pair; the review ids, oldest first."""
    ids = []
    with httpx.Client(base_url=base_url, timeout=30, headers=AUTH) as client:
        for seed, (original, copy, _) in enumerate(pairs):
            files = {"file": (f"lib-{seed}.jpg", original)}
            made = client.post(
                "/v1/images", params={"library": "true", "source": "library"}, files=files
            )
            assert made.status_code == 201, made.text
            files = {"file": (f"copy-{seed}.jpg", copy)}
            copied = client.post("/v1/images", params={"source": source}, files=files)
            assert copied.status_code == 201, copied.text
            [item] = copied.json()["items"]
            assert item["decision"] == "review", item
            ids.append(int(item["review_id"]))
    return ids


def decide_reviews(
    base_url: str, headers: dict[str, str], reviewer: str, first_seed: int, prefix: str
) -> tuple[set[int], dict[int, tuple[str, str]]]:
    """Two review items (a library photo and a crop of it in the review band, ingested through
    the API at ``base_url``), one confirmed and one rejected by ``reviewer``: decisions a 2xx
    acknowledged, which a later restore must carry over. The images stored, and each decided
    item's (status, reviewer)."""
    stored: set[int] = set()
    decided: dict[int, tuple[str, str]] = {}
    pairs = zip(review_band_pairs(2, first_seed), ("confirm", "reject"), strict=True)
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        for n, ((original, copy, _), action) in enumerate(pairs):
            made = client.post(
                "/v1/images",
                params={"library": "true", "source": "library"},
                files={"file": (f"{prefix}lib-{n}.jpg", original)},
            )
            assert made.status_code == 201, made.text
            copied = client.post("/v1/images", files={"file": (f"{prefix}copy-{n}.jpg", copy)})
            assert copied.status_code == 201, copied.text
            [item] = copied.json()["items"]
            assert item["decision"] == "review", item
            stored |= {int(i["image_id"]) for i in (*made.json()["items"], item)}
            review = int(item["review_id"])
            body = {"action": action, "reviewer": reviewer}
            answer = client.post(f"/v1/review/{review}", json=body)
            assert answer.status_code == 200, answer.text
            decided[review] = (str(answer.json()["status"]), reviewer)
    return stored, decided


def review_states(database_url: str, ids: set[int]) -> dict[int, tuple[str, str]]:
    """The (status, reviewer) of the review items ``ids``, read from the database itself."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, status, reviewer FROM review_items"))
            return {int(r[0]): (str(r[1]), str(r[2])) for r in rows if int(r[0]) in ids}
    finally:
        engine.dispose()


def _preview(data: bytes) -> NewThumbnail:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        made = thumbnail_of(image, 256)
    assert made is not None
    return NewThumbnail(made.data, made.width, made.height, made.media_type)


def seed_store(database_url: str, items: int, candidates: int = 10, pool: int = 24) -> int:
    """``items`` pending review items, each with ``candidates`` stored library candidates and a
    thumbnail on every image; returns the library size. The schema must be at head."""
    engine = schema.create_engine_for(database_url)
    repository = Repository(engine)
    pairs = list(review_band_pairs(pool))
    library_ids: list[int] = []
    for index, (original, _copy, _) in enumerate(pairs):
        value = _hash(original)
        repository.save_content(
            NewContent(
                sha256=f"{index:064x}",
                input_kind="image",
                size_bytes=len(original),
                filename=f"library-{index}.jpg",
                source="library",
                failures=[],
                images=[
                    NewImage(
                        locator="",
                        kind="image",
                        width=480,
                        height=360,
                        hash=StoredHash(value, "dhash64", 64, False),
                        decision="new",
                        confidence=1.0,
                        thumbnail=_preview(original),
                    )
                ],
                library=True,
            )
        )
    with engine.connect() as connection:
        library_ids = [
            int(i)
            for i in connection.exec_driver_sql(
                "SELECT image_id FROM library_members ORDER BY id"
            ).scalars()
        ]
    previews = [_preview(copy) for _, copy, _ in pairs]
    hashes = [_hash(copy) for _, copy, _ in pairs]
    for n in range(items):
        k = n % len(pairs)
        nearest = pairs[k][2]
        chosen = [library_ids[(k + j) % len(library_ids)] for j in range(candidates)]
        repository.save_content(
            NewContent(
                sha256=f"{n + 1_000_000:064x}",
                input_kind="image",
                size_bytes=10_000,
                filename=f"upload-{n}.jpg",
                source=f"bench-upload-{n % 7}",
                failures=[],
                images=[
                    NewImage(
                        locator="",
                        kind="image",
                        width=480,
                        height=360,
                        hash=StoredHash(hashes[k], "dhash64", 64, False),
                        decision="review",
                        confidence=0.5,
                        matches=[
                            NewMatch(image_id, rank, nearest + rank, 0.5 - rank * 0.04)
                            for rank, image_id in enumerate(chosen)
                        ],
                        review=NewReview(chosen[0], nearest, 0.5, "review_band"),
                        thumbnail=previews[k],
                    )
                ],
                library=False,
            )
        )
    engine.dispose()
    return len(library_ids)

"""Data and settings shared by the API, metrics and serve tests."""

from __future__ import annotations

from pathlib import Path

import httpx
from PIL import Image

from dhash_service.client import DhashClient
from dhash_service.config import Settings
from tests.support.corpus import encode, realistic_photo

TOKEN = "test-token-2d1f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPLOAD_LIMIT = 1_000_000


def settings_for(url: str, tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": url,
        "data_dir": tmp,
        "api_tokens": [TOKEN],
        "auto_migrate": True,
        "env": "test",
        "index_sync_seconds": 0.2,
        "max_upload_bytes": UPLOAD_LIMIT,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def photo(seed: int, *, crop: float = 0.0, quality: int = 90) -> bytes:
    image = realistic_photo(480, 360, seed)
    if crop:
        w, h = image.size
        image = image.crop((int(w * crop), int(h * crop), w, h)).resize((w, h), Image.BICUBIC)
    return encode(image, "JPEG", quality=quality)


def hash_of(client: httpx.Client | DhashClient, data: bytes) -> int:
    if isinstance(client, DhashClient):
        return int(client.hash(data).items[0].hash, 16)
    return int(client.post("/v1/hash", content=data).json()["items"][0]["hash"], 16)


def near_copy(client: httpx.Client | DhashClient, seed: int) -> bytes:
    """A cropped copy of ``photo(seed)`` in the review band (5..10 bits away by default)."""
    original = hash_of(client, photo(seed))
    for crop in (0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1):
        candidate = photo(seed, crop=crop)
        if 4 < (hash_of(client, candidate) ^ original).bit_count() <= 10:
            return candidate
    raise AssertionError(f"no crop of photo({seed}) lands in the review band")


def ingest(client: httpx.Client, data: bytes, **params: object) -> httpx.Response:
    return client.post("/v1/images", params=params, files={"file": ("p.jpg", data)}, headers=AUTH)


def assert_error_body(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text

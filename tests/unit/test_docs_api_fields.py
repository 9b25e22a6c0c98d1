"""Every field an answer carries is named in that route's section of docs/api.md.

An integrator who reads only the docs must find each key the server sends; a field added to a
model without a word in the docs (or a route section that lists only some) fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from dhash_service.api.models import ErrorBody
from dhash_service.schemas import (
    FailureOut,
    HashedItemOut,
    HashReport,
    ImageOut,
    IngestReport,
    ItemOut,
    MatchOut,
    ReviewItemOut,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def section(heading: str) -> str:
    """The text from a `##`/`###` heading to the next heading of any level."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(heading)
    following = re.search(r"^#{2,3} ", text[start + len(heading) :], flags=re.MULTILINE)
    end = start + len(heading) + following.start() if following else len(text)
    return text[start:end]


CASES: list[tuple[str, tuple[type[BaseModel], ...]]] = [
    ("### `POST /v1/images`", (IngestReport, ItemOut, MatchOut, FailureOut)),
    ("### `POST /v1/hash`", (HashReport, HashedItemOut, FailureOut)),
    ("### `GET /v1/images/{image_id}`", (ImageOut,)),
    ("### `GET /v1/search`", (MatchOut,)),
    ("### `GET /v1/review`", (ReviewItemOut,)),
    ("## Errors", (ErrorBody,)),
]


@pytest.mark.parametrize(("heading", "models"), CASES, ids=[case[0] for case in CASES])
def test_every_answer_field_is_named_in_its_route_section(
    heading: str, models: tuple[type[BaseModel], ...]
) -> None:
    text = section(heading)
    missing = [
        f"{model.__name__}.{name}"
        for model in models
        for name in model.model_fields
        if f"`{name}`" not in text and f'"{name}"' not in text
    ]
    assert not missing, f"{heading} does not name {missing}"

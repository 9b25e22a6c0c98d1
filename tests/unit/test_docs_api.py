"""Every route the app serves is described in docs/api.md (as a `METHOD /path` heading)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_service.api.app import create_app
from dhash_service.config import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def served_routes() -> list[str]:
    """From the app's own OpenAPI document, plus the document's route itself."""
    app = create_app(Settings(api_tokens=["unused"]))  # builds everything, connects to nothing
    routes = [
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    ]
    assert app.openapi_url is not None
    return [*routes, f"GET {app.openapi_url}"]


def test_the_route_list_is_what_the_app_serves() -> None:
    routes = served_routes()
    assert {"POST /v1/images", "GET /v1/images/{image_id}", "GET /openapi.json"} <= set(routes)


@pytest.mark.parametrize("route", served_routes())
def test_every_route_has_a_section_in_the_api_doc(route: str) -> None:
    assert f"### `{route}`" in DOC.read_text(encoding="utf-8"), f"{route} missing from {DOC.name}"

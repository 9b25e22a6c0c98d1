"""The HTTP API: JSON routes under ``/v1``, probes, metrics; ``create_app`` builds it.

``create_app`` is imported lazily so that ``dhash_service.api.models`` (used by the HTTP client)
does not pull in the whole service.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from dhash_service.api.app import create_app

        return create_app
    raise AttributeError(name)

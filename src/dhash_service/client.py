"""A small typed client of the HTTP API, for the rollout's smoke tests and monitor (and people).

Answers come back as the API's own pydantic models. An error answer is raised as the same
``DhashError`` subclass the server raised (matched by its ``error`` code), with the HTTP status
and request id in ``detail``; a server that cannot be reached raises ``Unavailable``. ``ready()``
is the exception: "not ready" is an answer, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from dhash_service.api.models import Health, ReviewDecision, ReviewListOut, SearchOut
from dhash_service.errors import DhashError, Unavailable
from dhash_service.schemas import (
    HashReport,
    ImageOut,
    IngestReport,
    MatchOut,
    Readiness,
    ReviewItemOut,
)

Model = TypeVar("Model", bound=BaseModel)

DEFAULT_TIMEOUT_SECONDS = 30.0


def _error_classes() -> dict[str, type[DhashError]]:
    found: dict[str, type[DhashError]] = {}
    pending: list[type[DhashError]] = [DhashError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


@dataclass(frozen=True)
class ReadyAnswer:
    """What ``/ready`` said: 200 and ``ready``, or 503 with the failing checks."""

    status_code: int
    ready: bool
    checks: dict[str, str]


class DhashClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> DhashClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- probes ----------------------------------------------------------------------------------

    def health(self) -> Health:
        return self._parse(Health, self._request("GET", "/health"))

    def ready(self) -> ReadyAnswer:
        response = self._send("GET", "/ready")
        if response.status_code not in (200, Unavailable.http_status):
            self._raise(response)
        body = self._parse(Readiness, response)
        return ReadyAnswer(response.status_code, body.ready, dict(body.checks))

    def metrics_text(self) -> str:
        return self._request("GET", "/metrics").text

    # --- images ----------------------------------------------------------------------------------

    def hash(self, data: bytes, *, filename: str | None = None) -> HashReport:
        files = {"file": (filename or "upload", data, "application/octet-stream")}
        return self._parse(HashReport, self._request("POST", "/v1/hash", files=files))

    def ingest(
        self,
        data: bytes,
        *,
        filename: str | None = None,
        library: bool = False,
        source: str | None = None,
    ) -> IngestReport:
        params: dict[str, Any] = {"library": str(library).lower()}
        if source is not None:
            params["source"] = source
        files = {"file": (filename or "upload", data, "application/octet-stream")}
        response = self._request("POST", "/v1/images", params=params, files=files)
        return self._parse(IngestReport, response)

    def image(self, image_id: int) -> ImageOut:
        return self._parse(ImageOut, self._request("GET", f"/v1/images/{image_id}"))

    def search(
        self, hash_hex: str, *, radius: int = 4, algorithm: str | None = None, limit: int = 100
    ) -> list[MatchOut]:
        params: dict[str, Any] = {"hash": hash_hex, "radius": radius, "limit": limit}
        if algorithm is not None:
            params["algorithm"] = algorithm
        response = self._request("GET", "/v1/search", params=params)
        return self._parse(SearchOut, response).matches

    # --- review ----------------------------------------------------------------------------------

    def review_items(
        self, *, status: str = "pending", limit: int = 100, offset: int = 0
    ) -> list[ReviewItemOut]:
        params = {"status": status, "limit": limit, "offset": offset}
        return self._parse(ReviewListOut, self._request("GET", "/v1/review", params=params)).items

    def resolve_review(
        self,
        item_id: int,
        action: Literal["confirm", "reject"],
        *,
        reviewer: str | None = None,
    ) -> ReviewItemOut:
        body = ReviewDecision(action=action, reviewer=reviewer).model_dump(exclude_none=True)
        response = self._request("POST", f"/v1/review/{item_id}", json=body)
        return self._parse(ReviewItemOut, response)

    # --- plumbing --------------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(
                f"cannot reach {self.base_url}{path}: {type(exc).__name__}: {exc}",
                detail={"url": f"{self.base_url}{path}"},
            ) from exc

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, **kwargs)
        if response.is_error:
            self._raise(response)
        return response

    def _raise(self, response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            raise DhashError(
                f"HTTP {status} from {response.request.url.path}", detail={"status": status}
            )
        cls = _error_classes().get(body["error"], DhashError)
        detail: dict[str, object] = dict(body.get("detail") or {})
        detail.update(status=status, request_id=body.get("request_id"), error=body["error"])
        raise cls(str(body.get("message", body["error"])), detail=detail)

    @staticmethod
    def _parse(model: type[Model], response: httpx.Response) -> Model:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise DhashError(
                f"unexpected answer from {response.request.url.path}: {exc.error_count()} "
                "field(s) do not match",
                detail={"status": response.status_code},
            ) from None

"""Reading an upload with the size limit enforced while it streams in.

The body is counted chunk by chunk, so an upload over ``DHASH_MAX_UPLOAD_BYTES`` is refused (413)
as soon as the limit is crossed, without being buffered; a ``Content-Length`` over the limit is
refused before a byte is read. Two shapes are accepted: ``multipart/form-data`` with the file in
the field ``file`` (what browsers and ``curl -F file=@x.jpg`` send), or the raw bytes as the body.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from dhash_service.errors import InputError, InputTooLarge

FILE_FIELD = "file"
# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024

# The request body as documented in OpenAPI (the route reads it itself, so FastAPI cannot infer it).
UPLOAD_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {FILE_FIELD: {"type": "string", "format": "binary"}},
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str | None


def _too_large(limit: int) -> InputTooLarge:
    return InputTooLarge(
        f"upload is larger than the limit of {limit} bytes", detail={"max_upload_bytes": limit}
    )


async def _limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(limit)
            yield chunk
    except ClientDisconnect:
        raise InputError("the client disconnected before the upload was complete") from None


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError("Content-Length is not a number") from None


async def read_upload(request: Request, limit: int) -> Upload:
    """The uploaded bytes and the client's file name, or ``InputTooLarge`` past ``limit``."""
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
    body_limit = limit + MULTIPART_OVERHEAD if multipart else limit
    declared = _declared_length(request)
    if declared is not None and declared > body_limit:
        raise _too_large(limit)
    if not multipart:
        chunks = [chunk async for chunk in _limited(request, body_limit)]
        return Upload(b"".join(chunks), None)
    parser = MultiPartParser(
        request.headers, _limited(request, body_limit), max_files=1, max_fields=16
    )
    parser.spool_max_size = body_limit  # keep the part in memory: it is bounded, and hashed next
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InputError(f"malformed multipart body: {exc.message}") from None
    try:
        part = form.get(FILE_FIELD)
        if not isinstance(part, UploadFile):
            raise InputError(f"multipart body has no file in the field {FILE_FIELD!r}")
        data = await part.read()
        if len(data) > limit:
            raise _too_large(limit)
        return Upload(data, part.filename or None)
    finally:
        await form.close()

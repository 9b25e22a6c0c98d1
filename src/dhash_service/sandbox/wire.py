"""The small pipe protocol between a worker and its decoder children.

A frame is a 4-byte big-endian length and that many bytes. A request is two frames: a JSON
header (algorithm, file name, limits, CPU seconds) and the input's bytes. A reply is one JSON
frame: the digest result, or the typed error that refused the input. JSON, not pickle: the
worker never unpickles what a process that parsed hostile input wrote.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import asdict
from typing import IO, Any

from dhash_service import errors
from dhash_service.digest import DigestResult, HashedItem
from dhash_service.extraction import ItemFailure, Limits
from dhash_service.hashing import ImageHash
from dhash_service.thumbnails import MAX_THUMBNAIL_BYTES, Thumbnail

_LENGTH = struct.Struct(">I")


class ChildGone(Exception):
    """The pipe closed mid-frame: the child died (a limit, a crash) or was killed."""


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)


def read_frame(stream: IO[bytes]) -> bytes:
    header = _read_exactly(stream, _LENGTH.size)
    (length,) = _LENGTH.unpack(header)
    return _read_exactly(stream, length)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    chunks = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise ChildGone("the pipe closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def request_header(
    *,
    algorithm: str,
    filename: str | None,
    limits: Limits,
    cpu_seconds: float,
    request_seconds: float,
) -> bytes:
    body = {
        "algorithm": algorithm,
        "filename": filename,
        "limits": asdict(limits),
        "cpu_seconds": cpu_seconds,
        "request_seconds": request_seconds,
    }
    return json.dumps(body).encode()


def error_to_json(err: errors.InputError) -> dict[str, Any]:
    return {"class": type(err).__name__, "message": err.message, "detail": err.detail}


def error_from_json(body: dict[str, Any]) -> errors.InputError:
    cls = getattr(errors, str(body.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.InputError)):
        cls = errors.CorruptInput
    detail = body.get("detail")
    return cls(str(body.get("message")), detail=detail if isinstance(detail, dict) else None)


def result_to_json(result: DigestResult) -> bytes:
    body = {
        "input_kind": result.input_kind,
        "items": [
            {
                "locator": item.locator,
                "kind": item.kind,
                "width": item.width,
                "height": item.height,
                "hash": f"{item.hash.value:x}",
                "algorithm": item.hash.algorithm,
                "bits": item.hash.bits,
                "low_information": item.hash.low_information,
                "seconds": item.seconds,
                "thumbnail": _thumbnail_to_json(item.thumbnail),
            }
            for item in result.items
        ],
        "failures": [
            {"locator": f.locator, "error": error_to_json(f.error)} for f in result.failures
        ],
    }
    return json.dumps({"result": body}, default=str).encode()


def failure_to_json(err: errors.InputError) -> bytes:
    return json.dumps({"error": error_to_json(err)}, default=str).encode()


def reply_from_json(payload: bytes) -> DigestResult:
    """The child's answer: a ``DigestResult``, or its ``InputError`` raised here."""
    body = json.loads(payload)
    if "error" in body:
        raise error_from_json(body["error"])
    result = body["result"]
    return DigestResult(
        input_kind=str(result["input_kind"]),
        items=[
            HashedItem(
                locator=str(item["locator"]),
                kind=str(item["kind"]),
                width=int(item["width"]),
                height=int(item["height"]),
                hash=ImageHash(
                    value=int(item["hash"], 16),
                    algorithm=str(item["algorithm"]),
                    bits=int(item["bits"]),
                    low_information=bool(item["low_information"]),
                ),
                seconds=float(item["seconds"]),
                thumbnail=_thumbnail_from_json(item.get("thumbnail")),
            )
            for item in result["items"]
        ],
        failures=[
            ItemFailure(str(f["locator"]), error_from_json(f["error"])) for f in result["failures"]
        ],
    )


def _thumbnail_to_json(thumbnail: Thumbnail | None) -> dict[str, Any] | None:
    if thumbnail is None:
        return None
    return {
        "data": base64.b64encode(thumbnail.data).decode("ascii"),
        "width": thumbnail.width,
        "height": thumbnail.height,
        "media_type": thumbnail.media_type,
    }


def _thumbnail_from_json(body: Any) -> Thumbnail | None:
    if not isinstance(body, dict):
        return None
    data = base64.b64decode(str(body["data"]))
    if len(data) > MAX_THUMBNAIL_BYTES:
        return None  # the child is not trusted to keep the bound
    return Thumbnail(data, int(body["width"]), int(body["height"]), str(body["media_type"]))

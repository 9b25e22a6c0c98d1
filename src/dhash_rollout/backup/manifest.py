"""``manifest.json``: what a backup holds and the digest of every other member.

The manifest is the archive's table of contents; verification trusts nothing that it does not
list, and restore compares the restored database's row counts and content hashes with it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from dhash_service.errors import IntegrityError

FORMAT = "dhash-backup/1"
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class MemberDigest:
    sha256: str
    size: int


@dataclass(frozen=True)
class TableStats:
    """Row count and an order-independent content hash of one table."""

    rows: int
    content_hash: str


@dataclass(frozen=True)
class DatabaseInfo:
    dialect: str  # "sqlite" | "postgresql"
    member: str  # archive member holding the dump
    dump_format: str  # "sqlite3" | "pg_dump-custom"
    server_version: str
    tables: dict[str, TableStats] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    env: str
    created_at: str  # ISO-8601 UTC
    host: str
    service_version: str
    schema_revision: str | None
    database: DatabaseInfo
    members: dict[str, MemberDigest]
    release: dict[str, Any] | None = None
    format: str = FORMAT

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, *, source: str) -> Manifest:
        """Parse and type-check a manifest; anything unexpected is an integrity failure."""

        def bad(why: str) -> IntegrityError:
            return IntegrityError(
                f"{source}: invalid manifest.json: {why}", detail={"file": source}
            )

        if len(raw) > MAX_MANIFEST_BYTES:
            raise bad("too large")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise bad(f"not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f"format is not {FORMAT}")
        try:
            db = data["database"]
            members = {
                str(name): MemberDigest(sha256=_hex(m["sha256"]), size=_int(m["size"]))
                for name, m in _dict(data["members"]).items()
            }
            tables = {
                str(name): TableStats(rows=_int(t["rows"]), content_hash=_str(t["content_hash"]))
                for name, t in _dict(db.get("tables", {})).items()
            }
            release = data.get("release")
            return cls(
                env=_str(data["env"]),
                created_at=_str(data["created_at"]),
                host=_str(data["host"]),
                service_version=_str(data["service_version"]),
                schema_revision=_opt_str(data.get("schema_revision")),
                database=DatabaseInfo(
                    dialect=_str(db["dialect"]),
                    member=_str(db["member"]),
                    dump_format=_str(db["dump_format"]),
                    server_version=_str(db["server_version"]),
                    tables=tables,
                ),
                members=members,
                release=_dict(release) if release is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"missing or wrong field ({exc})") from None


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("expected an object")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError("expected a non-negative integer")
    return value


def _hex(value: Any) -> str:
    text = _str(value)
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("sha256 is not 64 lowercase hex digits")
    return text

"""SHA-256 of files and the ``sha256sum`` checksum-file format.

We write one line, ``<64 lowercase hex>  <dir>/<file>.zip``, where ``<dir>`` is the name of the
backup directory. ``sha256sum -c`` and ``shasum -a 256 -c`` resolve that name against the current
directory, so the guide's check passes verbatim from the directory holding ``backups/`` (the
checkout root). Reading is strict: exactly one entry, lowercase hex, and the name must be the
archive itself (its file name, optionally preceded by the real names of its parent directories)
so a checksum file that names another file, or ``../x``, is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dhash_service.errors import IntegrityError

CHUNK = 1024 * 1024
_LINE_RE = re.compile(r"^(?P<hex>[0-9a-f]{64}) (?P<mode>[ *])(?P<name>[^\n\\]+)\n?\Z")
MAX_CHECKSUM_FILE_BYTES = 4096


@dataclass(frozen=True)
class ChecksumEntry:
    sha256: str
    name: str


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """Hex SHA-256 of ``path``, read in 1 MiB chunks; ``on_bytes`` sees each chunk's size."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


def format_checksum_line(sha256: str, archive: Path) -> str:
    """The sidecar's content: the archive named relative to its backup directory's parent."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
    name = f"{archive.parent.name}/{archive.name}" if archive.parent.name else archive.name
    return f"{sha256}  {name}\n"


def parse_checksum_file(text: str, *, source: Path) -> ChecksumEntry:
    """The single entry of a checksum file; anything else is an integrity failure."""
    match = _LINE_RE.match(text)
    if not match:
        raise IntegrityError(
            f"{source}: malformed checksum file (expected one '<sha256>  <file>' line)",
            detail={"file": str(source)},
        )
    return ChecksumEntry(sha256=match["hex"], name=match["name"])


def read_checksum_file(path: Path, archive: Path) -> ChecksumEntry:
    """Read ``path`` and check that it names ``archive``; raise IntegrityError naming the file."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CHECKSUM_FILE_BYTES + 1)
    except FileNotFoundError:
        raise IntegrityError(
            f"{archive}: checksum file {path.name} is missing", detail={"file": str(archive)}
        ) from None
    except OSError as exc:
        raise IntegrityError(
            f"{archive}: cannot read checksum file {path.name}: {exc.strerror}",
            detail={"file": str(archive)},
        ) from None
    if len(raw) > MAX_CHECKSUM_FILE_BYTES:
        raise IntegrityError(f"{path}: checksum file is too large", detail={"file": str(path)})
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise IntegrityError(
            f"{path}: malformed checksum file (not ASCII)", detail={"file": str(path)}
        ) from None
    entry = parse_checksum_file(text, source=path)
    if not names_archive(entry.name, archive):
        raise IntegrityError(
            f"{path}: names {entry.name!r}, not {archive.name}",
            detail={"file": str(path), "named": entry.name},
        )
    return entry


def names_archive(name: str, archive: Path) -> bool:
    """True when ``name`` can only mean ``archive``: a tail of its real path, or that path."""
    raw_parts = name[1:].split("/") if name.startswith("/") else name.split("/")
    if any(part in ("", ".", "..") for part in raw_parts):
        return False  # no empty, "." or ".." components: one spelling per file
    candidate = PurePosixPath(name)
    parts = candidate.parts
    for real in {Path(os.path.abspath(archive)), archive.resolve()}:
        if candidate.is_absolute():
            if PurePosixPath(real.as_posix()) == candidate:
                return True
        elif len(parts) <= len(real.parts) and tuple(real.parts[-len(parts) :]) == parts:
            return True
    return False

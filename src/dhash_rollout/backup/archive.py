"""The zip container: written in one streaming pass, read back with suspicion.

Writing: the zip goes through :class:`HashingWriter`, which cannot seek, so :mod:`zipfile`
streams every member (data descriptors) and the archive's SHA-256 is known the moment the
last byte is written; no second read pass is needed before the ``.sha256`` exists.

Reading: every problem is an :class:`IntegrityError` (exit 4) naming the file. Member names
with ``..``, absolute paths, backslashes or drive letters, symbolic links, directories and
duplicate names are refused, sizes are bounded, and every byte read is counted against the size
the archive and the manifest declare, so a lying header cannot inflate.
"""

from __future__ import annotations

import contextlib
import hashlib
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from dhash_rollout.backup.manifest import MANIFEST_NAME, Manifest, MemberDigest
from dhash_service.errors import IntegrityError

CHUNK = 1024 * 1024
# Hard ceiling on what one archive may expand to; restore also checks the free disk space.
DEFAULT_MAX_UNCOMPRESSED = 1 << 40  # 1 TiB
MAX_MEMBERS = 64


class HashingWriter:
    """A write-only, non-seekable file object that hashes what passes through it."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._digest = hashlib.sha256()
        self._pos = 0

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self._fh.write(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def seek(self, *_args: object) -> int:
        raise OSError("not seekable")  # makes zipfile stream with data descriptors

    def flush(self) -> None:
        self._fh.flush()

    @property
    def size(self) -> int:
        return self._pos

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class MemberWriter:
    """Writes one archive member from chunks, hashing it for the manifest."""

    def __init__(self, zf: zipfile.ZipFile, name: str, when: datetime, *, compress: bool) -> None:
        info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        self._stream = zf.open(info, "w", force_zip64=True)
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self._stream.write(chunk)
        self.size += len(chunk)

    def close(self) -> MemberDigest:
        self._stream.close()
        return MemberDigest(sha256=self._digest.hexdigest(), size=self.size)

    def abort(self) -> None:
        """Release the zip after a failure so the original error is the one reported."""
        with contextlib.suppress(Exception):
            self._stream.close()


def add_member(
    zf: zipfile.ZipFile, name: str, chunks: Iterable[bytes], when: datetime, *, compress: bool
) -> MemberDigest:
    writer = MemberWriter(zf, name, when, compress=compress)
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


# --- reading -------------------------------------------------------------------------------


def check_member_name(name: str, *, label: str) -> None:
    """Refuse names that could escape the extraction directory or hide a different file."""
    path = PurePosixPath(name)
    bad = (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or (len(name) > 1 and name[1] == ":")
        or name.endswith("/")
        or any(part in ("..", ".", "") for part in name.split("/"))
        or path.is_absolute()
    )
    if bad:
        raise IntegrityError(f"{label}: unsafe member name {name!r}", detail={"file": label})


def _is_link(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


@dataclass(frozen=True)
class OpenedArchive:
    zf: zipfile.ZipFile
    label: str
    manifest: Manifest
    infos: dict[str, zipfile.ZipInfo]

    def read_chunks(self, name: str, expected_size: int) -> Iterator[bytes]:
        """The member's bytes, never more than ``expected_size`` of them (CRC checked at EOF)."""
        total = 0
        try:
            with self.zf.open(self.infos[name]) as stream:
                while chunk := stream.read(CHUNK):
                    total += len(chunk)
                    if total > expected_size:
                        raise IntegrityError(
                            f"{self.label}: member {name} is larger than declared",
                            detail={"file": self.label},
                        )
                    yield chunk
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise IntegrityError(
                f"{self.label}: member {name} is corrupt: {exc}", detail={"file": self.label}
            ) from None
        if total != expected_size:
            raise IntegrityError(
                f"{self.label}: member {name} is {total} bytes, expected {expected_size}",
                detail={"file": self.label},
            )


def open_archive(
    source: Path | BinaryIO,
    *,
    label: str | None = None,
    max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
) -> OpenedArchive:
    """Open ``source``, check its structure and parse its manifest (member digests not yet
    read). Raise :class:`IntegrityError` naming the file on any problem.
    """
    name = label or str(source)
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        raise IntegrityError(
            f"{name}: not a readable zip archive: {exc}", detail={"file": name}
        ) from None
    except OSError as exc:
        raise IntegrityError(
            f"{name}: cannot open: {exc.strerror}", detail={"file": name}
        ) from None
    try:
        infos = _checked_infos(zf, name, max_uncompressed)
        manifest_info = infos.get(MANIFEST_NAME)
        if manifest_info is None:
            raise IntegrityError(f"{name}: manifest.json is missing", detail={"file": name})
        try:
            raw = zf.read(manifest_info)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise IntegrityError(
                f"{name}: manifest.json is corrupt: {exc}", detail={"file": name}
            ) from None
        manifest = Manifest.from_json(raw, source=name)
        listed = set(manifest.members)
        present = set(infos) - {MANIFEST_NAME}
        if listed != present:
            raise IntegrityError(
                f"{name}: members do not match the manifest "
                f"(missing {sorted(listed - present)}, unlisted {sorted(present - listed)})",
                detail={"file": name},
            )
        for member, digest in manifest.members.items():
            check_member_name(member, label=name)
            if infos[member].file_size != digest.size:
                raise IntegrityError(
                    f"{name}: member {member} size differs from the manifest", detail={"file": name}
                )
        if manifest.database.member not in manifest.members:
            raise IntegrityError(f"{name}: the database member is missing", detail={"file": name})
        return OpenedArchive(zf=zf, label=name, manifest=manifest, infos=infos)
    except BaseException:
        zf.close()
        raise


def _checked_infos(
    zf: zipfile.ZipFile, label: str, max_uncompressed: int
) -> dict[str, zipfile.ZipInfo]:
    infos: dict[str, zipfile.ZipInfo] = {}
    entries = zf.infolist()
    if len(entries) > MAX_MEMBERS:
        raise IntegrityError(f"{label}: too many members ({len(entries)})", detail={"file": label})
    total = 0
    for info in entries:
        check_member_name(info.filename, label=label)
        if info.filename in infos:
            raise IntegrityError(
                f"{label}: duplicate member {info.filename!r}", detail={"file": label}
            )
        if _is_link(info) or info.is_dir():
            raise IntegrityError(
                f"{label}: member {info.filename!r} is not a regular file", detail={"file": label}
            )
        if info.flag_bits & 0x1:
            raise IntegrityError(
                f"{label}: member {info.filename!r} is encrypted", detail={"file": label}
            )
        total += info.file_size
        if total > max_uncompressed:
            raise IntegrityError(
                f"{label}: expands to more than {max_uncompressed} bytes", detail={"file": label}
            )
        infos[info.filename] = info
    return infos


def check_members(opened: OpenedArchive, on_bytes: Callable[[int], None] | None = None) -> None:
    """Read every listed member and compare its SHA-256 with the manifest."""
    for member, digest in sorted(opened.manifest.members.items()):
        sha = hashlib.sha256()
        for chunk in opened.read_chunks(member, digest.size):
            sha.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
        if sha.hexdigest() != digest.sha256:
            raise IntegrityError(
                f"{opened.label}: member {member} does not match its manifest SHA-256",
                detail={"file": opened.label, "member": member},
            )

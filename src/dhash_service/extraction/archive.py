"""ZIP archives of anything we accept, nested up to ``max_nesting`` archives deep.

Nothing is ever written to disk, but member names become locators that people and tools act on,
so unsafe names are refused outright: ``..`` components, absolute or drive paths, backslashes,
NUL bytes, symbolic links and duplicate names. Sizes are bounded before decompression: the member
count is read from the end-of-central-directory record before the directory is parsed, declared
sizes are summed against ``max_archive_uncompressed_bytes`` across all nesting levels, and
``zipfile`` stops at each member's declared size (a member that lies fails its CRC check).
"""

from __future__ import annotations

import io
import lzma
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable

from dhash_service.errors import (
    CorruptInput,
    EmptyInput,
    InputError,
    InputTooLarge,
    LimitExceeded,
    UnsafeArchive,
    UnsupportedFormat,
)
from dhash_service.extraction.context import Context
from dhash_service.extraction.model import INPUT_ZIP, Extraction, ItemFailure

# Extracts one member's bytes in a nested context; provided by the dispatcher (no import cycle).
ExtractMember = Callable[[bytes, Context], Extraction]

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_DRIVE = re.compile(r"^[A-Za-z]:")
# What ``zipfile`` and the decompressors it drives raise on a damaged or unusual archive: the
# decompressors' own errors are not ``OSError`` subclasses, and an unknown ZIP version or method
# is ``NotImplementedError``. Each is the sender's problem: ``CorruptInput``, never a 500.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    ValueError,
    EOFError,
    NotImplementedError,
    zlib.error,
    lzma.LZMAError,
)
# Metadata that archivers add next to the real files; skipped, never reported as failures.
_IGNORED_PARTS = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})


def extract_zip(data: bytes, ctx: Context, extract_member: ExtractMember) -> Extraction:
    limits = ctx.limits
    declared = _declared_member_count(data)
    if declared is not None and declared > limits.max_archive_members:
        raise _too_many_members(declared, limits.max_archive_members)
    if _directory_holds_more_than(data, limits.max_archive_members):
        # zipfile reads the whole central directory, whatever the end record claims.
        raise LimitExceeded(
            f"archive's central directory holds more than {limits.max_archive_members} members "
            f"(its end record claims {declared})",
            detail={"declared": declared, "limit": limits.max_archive_members},
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise CorruptInput(f"ZIP archive cannot be read: {exc}") from None
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_archive_members:
            raise _too_many_members(len(members), limits.max_archive_members)
        _refuse_unsafe_names(members)
        files = [m for m in members if not m.is_dir() and not _ignored(m.filename)]
        if not files:
            raise EmptyInput("ZIP archive contains no files")
        _reserve_uncompressed(files, ctx)
        result = Extraction(INPUT_ZIP)
        for member in files:
            _extract_one(archive, member, ctx, extract_member, result)
        return result


def _extract_one(
    archive: zipfile.ZipFile,
    member: zipfile.ZipInfo,
    ctx: Context,
    extract_member: ExtractMember,
    result: Extraction,
) -> None:
    name = member.filename
    try:
        data = _read_member(archive, member, ctx)
        inner = extract_member(data, ctx.nested())
    except InputError as err:
        if ctx.totals.exhausted:
            raise
        result.failures.append(ItemFailure(name, err))
        return
    for item in inner.items:
        item.locator = _join(name, item.locator)
        result.items.append(item)
    for failure in inner.failures:
        result.failures.append(ItemFailure(_join(name, failure.locator), failure.error))


def _join(member: str, inner: str) -> str:
    return f"{member}!{inner}" if inner else member


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, ctx: Context) -> bytes:
    if member.flag_bits & 0x1:
        raise UnsupportedFormat(f"{member.filename} is encrypted")
    if member.file_size > ctx.limits.max_input_bytes:
        raise InputTooLarge(
            f"{member.filename} is {member.file_size} bytes; the limit is "
            f"{ctx.limits.max_input_bytes}",
            detail={"bytes": member.file_size, "limit": ctx.limits.max_input_bytes},
        )
    try:
        with archive.open(member) as handle:
            return handle.read(member.file_size + 1)
    except _ZIP_ERRORS as exc:
        raise CorruptInput(f"{member.filename} cannot be decompressed: {exc}") from None


def _reserve_uncompressed(files: list[zipfile.ZipInfo], ctx: Context) -> None:
    ctx.count_unpacked(sum(m.file_size for m in files), "archive")


def _refuse_unsafe_names(members: list[zipfile.ZipInfo]) -> None:
    seen: set[str] = set()
    for member in members:
        name = member.filename
        reason = _unsafe_reason(member)
        if reason is None and name in seen:
            reason = "appears twice"
        if reason is not None:
            raise UnsafeArchive(
                f"ZIP member {name!r} {reason}", detail={"member": name, "reason": reason}
            )
        seen.add(name)


def _unsafe_reason(member: zipfile.ZipInfo) -> str | None:
    name = member.filename
    if "\x00" in member.orig_filename:  # zipfile cuts the name there; other tools may not
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/") or _DRIVE.match(name):
        return "is an absolute path"
    if ".." in name.split("/"):
        return "climbs out of the archive with '..'"
    mode = member.external_attr >> 16
    if member.create_system == 3 and stat.S_ISLNK(mode):
        return "is a symbolic link"
    return None


def _ignored(name: str) -> bool:
    return any(part in _IGNORED_PARTS or part.startswith("._") for part in name.split("/"))


def _too_many_members(count: int, limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"archive has {count} members; the limit is {limit}",
        detail={"members": count, "limit": limit},
    )


def _directory_holds_more_than(data: bytes, limit: int) -> bool:
    """Walk the central directory's file headers, as ``zipfile`` will, stopping past ``limit``.

    An end record may claim 1 entry over a directory of 400,000 (``zipfile`` ignores the count
    and parsed them all: 2.2 s, +150 MB); this costs at most ``limit`` header reads.
    """
    position = data.rfind(_EOCD, max(0, len(data) - 65_557))
    if position < 0 or position + 22 > len(data):
        return False
    size, _ = struct.unpack_from("<II", data, position + 12)
    directory_end = position
    locator = position - 20
    if locator >= 0 and data[locator : locator + 4] == _ZIP64_LOCATOR:
        (offset,) = struct.unpack_from("<Q", data, locator + 8)
        if offset + 56 <= len(data) and data[offset : offset + 4] == _ZIP64_EOCD:
            (size,) = struct.unpack_from("<Q", data, offset + 40)
            directory_end = offset
    cursor = directory_end - size
    if cursor < 0:
        return False  # zipfile will refuse it as corrupt
    count = 0
    while cursor + 46 <= directory_end and data[cursor : cursor + 4] == b"PK\x01\x02":
        count += 1
        if count > limit:
            return True
        name, extra, comment = struct.unpack_from("<HHH", data, cursor + 28)
        cursor += 46 + name + extra + comment
    return False


def _declared_member_count(data: bytes) -> int | None:
    """Entry count from the end-of-central-directory record, read before zipfile parses anything.

    ``zipfile`` builds an object per entry while opening; a tiny archive can declare millions.
    """
    position = data.rfind(_EOCD, max(0, len(data) - 65_557))
    if position < 0 or position + 22 > len(data):
        return None
    (entries,) = struct.unpack_from("<H", data, position + 10)
    if entries != 0xFFFF:
        return int(entries)
    locator = position - 20
    if locator < 0 or data[locator : locator + 4] != _ZIP64_LOCATOR:
        return int(entries)
    (offset,) = struct.unpack_from("<Q", data, locator + 8)
    if offset + 40 > len(data) or data[offset : offset + 4] != _ZIP64_EOCD:
        return None
    (entries64,) = struct.unpack_from("<Q", data, offset + 32)
    return int(entries64)

"""Log rotation and archival for the monthly maintenance window.

Closed log files (not modified for ``archive_after_days``) are gzipped into ``<dir>/archive/``
and the original removed only after the archive has been written, synced and read back with the
same SHA256. A file still being written is never touched: a file modified recently is by
definition not closed, and a file some process holds open (the process manager writing a
service's output, an idle service's own log) or named in ``keep`` is skipped whatever its age.
Archives are kept; deleting history is not this job's decision.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ARCHIVE_DIR = "archive"
_LOG_SUFFIXES = (".log", ".jsonl")
_DAY = 86400.0


@dataclass(frozen=True)
class LogFile:
    path: Path
    mtime: float
    size: int


def is_log_name(name: str) -> bool:
    """``x.log``, ``x.jsonl`` and numbered rotations such as ``x.log.1``."""
    if name.endswith(_LOG_SUFFIXES):
        return True
    stem, dot, number = name.rpartition(".")
    return bool(dot) and number.isdigit() and stem.endswith(_LOG_SUFFIXES)


def plan_archival(
    files: Iterable[LogFile], *, now: float, archive_after_days: float, keep: Collection[Path]
) -> list[LogFile]:
    """Which files to archive: log-named, not kept, untouched for the given number of days."""
    cutoff = now - archive_after_days * _DAY
    kept = {p.resolve() for p in keep}
    return sorted(
        (
            f
            for f in files
            if is_log_name(f.path.name) and f.mtime < cutoff and f.path.resolve() not in kept
        ),
        key=lambda f: f.path,
    )


def scan(log_dir: Path) -> list[LogFile]:
    """Regular files directly in ``log_dir`` (the archive directory itself is not rescanned)."""
    if not log_dir.is_dir():
        return []
    found = []
    for entry in os.scandir(log_dir):
        if entry.is_file(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            found.append(LogFile(Path(entry.path), st.st_mtime, st.st_size))
    return found


def open_paths(proc: Path = Path("/proc")) -> set[Path]:
    """Files any process we can see holds open (Linux ``/proc``; empty where there is none)."""
    found: set[Path] = set()
    if not proc.is_dir():
        return found
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("/"):
                found.add(Path(target))
    return found


def _sha256(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _read_chunks(stream: _Readable, size: int = 1 << 20) -> Iterable[bytes]:
    while chunk := stream.read(size):
        yield chunk


def archive_file(path: Path) -> Path:
    """gzip ``path`` into ``archive/`` next to it, verify, then remove the original."""
    target_dir = path.parent / ARCHIVE_DIR
    target_dir.mkdir(exist_ok=True)
    target = target_dir / f"{path.name}.gz"
    n = 1
    while target.exists():
        target = target_dir / f"{path.name}.{n}.gz"
        n += 1
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".gz.tmp", dir=target_dir)
    tmp = Path(tmp_name)
    try:
        with path.open("rb") as src:
            original = _sha256(_read_chunks(src))
            src.seek(0)
            with os.fdopen(fd, "wb") as raw:
                with gzip.GzipFile(filename=path.name, fileobj=raw, mode="wb") as gz:
                    shutil.copyfileobj(src, gz)
                raw.flush()
                os.fsync(raw.fileno())
        with gzip.open(tmp, "rb") as check:
            if _sha256(_read_chunks(check)) != original:
                raise OSError(f"archive of {path.name} does not read back identically")
        st = path.stat()
        os.utime(tmp, (st.st_atime, st.st_mtime))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    path.unlink()
    return target

"""Crash-safe file creation: write a temp file, fsync it, rename it, fsync the directory.

A reader therefore sees either nothing or the whole file, never a prefix, whatever moment the
writer dies at; the temp names start with a dot and end in ``.tmp`` so globs never match them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dhash_rollout.backup.naming import temp_name


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(final: Path, *, durable: bool = True) -> Iterator[tuple[Path, BinaryIO]]:
    """Yield ``(temp_path, handle)``; on clean exit fsync, rename onto ``final``, fsync the dir.

    On any error (including KeyboardInterrupt) the temp file is removed and ``final`` is left
    exactly as it was. ``durable=False`` skips the fsyncs: still all-or-nothing for a process
    crash, but not across a power loss (for advisory files only).
    """
    temp = final.with_name(temp_name(final.name, secrets.token_hex(4)))
    fh = temp.open("xb")
    try:
        yield temp, fh
        fh.flush()
        if durable:
            os.fsync(fh.fileno())
        fh.close()
        os.replace(temp, final)
        if durable:
            fsync_dir(final.parent)
    except BaseException:
        fh.close()
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


def write_atomically(final: Path, data: bytes, *, durable: bool = True) -> None:
    with atomic_file(final, durable=durable) as (_temp, fh):
        fh.write(data)

"""Durable atomic writes: a file appears whole under its name, or not at all, even after a power loss.

Write to a temporary sibling, flush and fsync it, rename it into place, then fsync the folder (the
rename is a change of the folder: without that, a crash can leave the new name pointing at an empty
file). On any failure the temporary file is removed, so nothing half-written is left behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def tmp_name(path: Path) -> Path:
    """Temporary sibling of `path`, unique per process, matching the `*.tmp-*` clean-up glob."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_and_rename(tmp: Path, final: Path) -> None:
    """Make a complete temporary file durable and give it its final name."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def write_with(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create `path` atomically and durably from what `write(handle)` writes."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Create `path` holding `data`, atomically and durably."""
    write_with(path, lambda handle: handle.write(data))

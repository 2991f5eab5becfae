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


def named(error: OSError, path: Path) -> OSError:
    """The error with `path` as its file when it names none: a write() on a full disk raises ENOSPC without a
    file name, and the user must learn which file (and so which disk) it was."""
    if error.filename is None and error.errno is not None:
        return type(error)(error.errno, error.strerror, str(path))
    return error


def _write_tmp(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise named(error, path) from None
    except RuntimeError as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error.__context__, OSError):  # torch.save wraps its file's OSError (a full disk) in this
            raise named(error.__context__, path) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_with(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create `path` atomically and durably from what `write(handle)` writes."""
    path = Path(path)
    tmp = _write_tmp(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_set(files: dict[Path, bytes]) -> None:
    """Create several files that belong together (results.txt, its picture, results.json): all are written to
    temporary names first, and only when every one is whole are they renamed, in the given order (put the file
    that marks the set complete last). A failed write leaves none of them, and a failed rename removes those of
    the set already renamed: never a part of a set."""
    tmps: list[tuple[Path, Path]] = []
    renamed: list[Path] = []
    try:
        for path, data in files.items():
            tmps.append((_write_tmp(Path(path), lambda handle, data=data: handle.write(data)), Path(path)))
        for tmp, path in tmps:
            os.replace(tmp, path)
            renamed.append(path)
    except BaseException:
        for path in renamed:
            path.unlink(missing_ok=True)
        raise
    finally:
        for tmp, _ in tmps:
            tmp.unlink(missing_ok=True)
    for folder in {path.parent for _, path in tmps}:
        fsync_dir(folder)


def write_atomic(path: Path, data: bytes) -> None:
    """Create `path` holding `data`, atomically and durably."""
    write_with(path, lambda handle: handle.write(data))

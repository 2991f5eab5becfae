"""Reading the text files users give (list files, class names, TSVs, configs).

UTF-8, with a byte-order mark at the start allowed (Windows editors write one; left in, it becomes part of
the first path or class name, and the error then blames a file that exists). A file that is not UTF-8
(Latin-1 names, an image passed as a TSV) is one error line naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path

from mseg_fast.errors import UserError


def decode_text(data: bytes, path: Path, what: str) -> str:
    """`data` (the bytes of `path`) as text; `what` says what the file should be, for the error line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
                        f"a {what} is a UTF-8 text file: save it as UTF-8, or check that this is the right file"
                        ) from None


def read_text(path: Path, what: str) -> str:
    """The text of `path` (see decode_text); OSError (a missing file) is left to the caller, which knows the hint."""
    return decode_text(Path(path).read_bytes(), Path(path), what)

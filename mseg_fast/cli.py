"""What every command line shares: argument types with ranges, and one error line for the user's mistakes.

The rule (README): a user's mistake is one `error:` line naming the file or value and what to do, and
exit status 2; a traceback means a bug in mseg-fast.
"""

from __future__ import annotations

import argparse
import sys

from mseg_fast.errors import UserError


def at_least(low: int):
    """An argparse type: an integer >= low (argparse then prints one error line and exits 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: give {low} or more")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def error_line(error: Exception) -> str:
    """The user-facing line for a UserError or a file-system error (unwritable folder, disk full, ...)."""
    if isinstance(error, OSError) and not isinstance(error, UserError):
        where = f"{error.filename}: " if error.filename else ""
        return f"error: {where}{error.strerror or error}; check the path and that you can write there"
    return f"error: {error}"


def fail(error: Exception) -> int:
    print(error_line(error), file=sys.stderr)
    return 2


USER_ERRORS = (UserError, OSError)

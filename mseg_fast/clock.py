"""How durations and moments are written in logs: one spelling for every command."""

from __future__ import annotations

import math
import re
import time

_STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def clock(seconds: float) -> str:
    """A duration as h:mm:ss (`0:04:07`, `31:00:00`): readable for a minute and for a week."""
    if not math.isfinite(seconds):
        return "?:??:??"
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def stamp() -> str:
    """The local time a log line is written, to the second (`2026-12-07 10:01:02`)."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def unstamped(line: str) -> str:
    """A log line without the time `stamp()` put before it (a line without one as it is)."""
    found = _STAMP.match(line)
    return line[found.end():] if found else line

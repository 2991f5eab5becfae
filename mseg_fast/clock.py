"""How durations and moments are written in logs: one spelling for every command."""

from __future__ import annotations

import math
import time


def clock(seconds: float) -> str:
    """A duration as h:mm:ss (`0:04:07`, `31:00:00`): readable for a minute and for a week."""
    if not math.isfinite(seconds):
        return "?:??:??"
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def stamp() -> str:
    """The local time a log line is written, to the second (`2026-12-07 10:01:02`)."""
    return time.strftime("%Y-%m-%d %H:%M:%S")

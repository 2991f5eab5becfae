"""Run one check in a process of its own, so that a crash (a decoder's SIGSEGV, an abort in a CUDA
library) or a hang is that check's result and the next check still runs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path


def run_isolated(command: list[str], result_path: Path, timeout: float) -> dict:
    """Run `command`, which writes its result as JSON to `result_path`.

    Returns:
        {"status": "ok" | "fail" | "crash" | "timeout", "seconds", "result" (what it wrote, if anything),
        "error" (for crash and timeout: the signal or exit code and the end of its stderr)}.
    """
    result_path.unlink(missing_ok=True)
    start = time.monotonic()
    try:
        process = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        tail = (expired.stderr or b"")[-1500:]
        return {"status": "timeout", "seconds": round(time.monotonic() - start, 1),
                "error": f"no result after {timeout:.0f} s: {tail.decode(errors='replace') if isinstance(tail, bytes) else tail}"}
    seconds = round(time.monotonic() - start, 1)
    if result_path.exists():
        result = json.loads(result_path.read_text())
        return {"status": "ok" if result.get("ok") else "fail", "seconds": seconds, "result": result}
    if process.returncode < 0:
        how = f"killed by {signal.Signals(-process.returncode).name}"
    else:
        how = f"exit code {process.returncode}"
    return {"status": "crash", "seconds": seconds, "error": f"{how}: {process.stderr[-1500:]}"}

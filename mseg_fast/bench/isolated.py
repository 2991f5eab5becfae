"""Run one check in a process of its own, so that a crash (a decoder's SIGSEGV, an abort in a CUDA
library) or a hang is that check's result and the next check still runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the check's whole process group: a check that started train.py (or DataLoader workers) would
    otherwise leave them running on the GPU after its own end."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_isolated(command: list[str], result_path: Path, timeout: float) -> dict:
    """Run `command`, which writes its result as JSON to `result_path`, in a session of its own.

    Returns:
        {"status": "ok" | "fail" | "crash" | "timeout", "seconds", "result" (what it wrote, if anything),
        "error" (for crash and timeout: the signal or exit code and the end of its stderr)}.
    """
    result_path.unlink(missing_ok=True)
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        _, stderr = process.communicate()
        return {"status": "timeout", "seconds": round(time.monotonic() - start, 1),
                "error": f"no result after {timeout:.0f} s (its process group was killed): {stderr[-1500:]}"}
    finally:
        _kill_group(process)  # whatever it left behind
    seconds = round(time.monotonic() - start, 1)
    if result_path.exists():
        result = json.loads(result_path.read_text())
        return {"status": "ok" if result.get("ok") else "fail", "seconds": seconds, "result": result}
    if process.returncode < 0:
        how = f"killed by {signal.Signals(-process.returncode).name}"
    else:
        how = f"exit code {process.returncode}"
    return {"status": "crash", "seconds": seconds, "error": f"{how}: {stderr[-1500:]}"}

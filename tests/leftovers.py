"""What a run leaves behind: its processes (found by a marker in their environment, which every
descendant inherits, re-parented or not) and new entries in /dev/shm.

As a command, it runs another command with a fresh marker and fails when anything of it outlives it:
    python tests/leftovers.py -- python -m pytest -q tests      (what `make test` runs)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

MARK_VAR = "MSEG_FAST_RUN_MARK"
SHM = Path("/dev/shm")


def new_mark() -> str:
    return uuid.uuid4().hex


def marked(mark: str, exclude: set[int] = frozenset()) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose environment holds the marker."""
    needle = f"{MARK_VAR}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":  # a zombie holds nothing; its parent reaps it
                    found.append((int(entry.name), command[:160]))
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return found


def wait_until_gone(mark: str, seconds: float, exclude: set[int] = frozenset()) -> list[tuple[int, str]]:
    """The marked processes still alive after waiting up to `seconds` for them to end."""
    deadline = time.monotonic() + seconds
    while (left := marked(mark, exclude)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def trainer_of_rank(mark: str, rank: int) -> int:
    """The pid of the marked run's train.py process of global rank `rank` (not torchrun, not a loader helper)."""
    pids = [pid for pid, command in marked(mark) if "train.py" in command and "torch.distributed.run" not in command
            and "multiprocessing" not in command
            and f"RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")]
    assert len(pids) == 1, marked(mark)
    return pids[0]


def read_until(process: subprocess.Popen, text: str) -> str:
    """The process's output up to and including the first line holding `text`."""
    output = ""
    while True:
        line = process.stdout.readline()
        output += line
        assert line, f"the run ended before printing {text!r}:\n{output}"
        if text in line:
            return output


def shm_entries() -> set[str]:
    return set(os.listdir(SHM)) if SHM.is_dir() else set()


class MarkedRun:
    """A command whose processes carry a marker, with a temporary folder of its own."""

    def __init__(self, tmp_path: Path):
        self.mark = new_mark()
        self.tmpdir = tmp_path / "tmp"
        self.tmpdir.mkdir()
        self.shm_before = shm_entries()
        self.env = {**os.environ, MARK_VAR: self.mark, "TMPDIR": str(self.tmpdir)}

    def start(self, command: list[str]) -> subprocess.Popen:
        return subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def assert_nothing_left(self) -> None:
        left = wait_until_gone(self.mark, 10)
        for pid, _ in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"processes of the run still alive 10 s after it ended: {left}"
        assert not sorted(shm_entries() - self.shm_before), "the run left entries in /dev/shm"
        # torchinductor_<user> is PyTorch's compile cache, made once and shared by every run: not a leftover.
        left_files = [p.name for p in self.tmpdir.iterdir() if not p.name.startswith("torchinductor_")]
        assert not left_files, f"the run left files in its temporary folder: {left_files}"


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: leftovers.py -- COMMAND...", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1:]
    mark, before = new_mark(), shm_entries()
    code = subprocess.call(command, env={**os.environ, MARK_VAR: mark})
    left = wait_until_gone(mark, 10)
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    shm = sorted(shm_entries() - before)
    if left or shm:
        print(f"leftovers: {len(left)} processes outlived the run: {left}; new in /dev/shm: {shm}", file=sys.stderr)
        return code or 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

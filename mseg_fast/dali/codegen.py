"""Where DALI's conditionals put the code they generate: a folder of this build's own, removed at once.

Why: a pipeline built with `enable_conditionals=True` has its function rewritten by DALI's copy of
autograph, which writes the result as `__autograph_generated_file*.py` into the system temporary
folder and deletes it only at interpreter exit (atexit). A killed process never gets there, so every
killed run left a file per pipeline built (80 after a day of runs, issue 12). The generated module
is imported while the pipeline is defined, so the file is not needed once `build()` returns: the
files go into a private folder that is removed right after, and a folder left by a process killed
during a build is removed by the next build.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

PREFIX = "mseg-fast-dali-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim_stale(root: Path) -> None:
    """Remove the code folders of processes that no longer exist."""
    for folder in root.glob(f"{PREFIX}*"):
        pid = folder.name[len(PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def private_codegen_dir() -> Iterator[Path]:
    """Within this block, files made through `tempfile` (DALI's generated code) go to a private folder,
    which is removed when the block ends."""
    root = Path(tempfile.gettempdir())
    reclaim_stale(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
    # tempfile has no other hook: autograph calls NamedTemporaryFile() without a `dir`. Restored below.
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(folder, ignore_errors=True)

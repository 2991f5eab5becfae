"""Helper processes that end with the process they serve, however it dies (SIGKILL included).

Why: loader workers start through the forkserver (a fork of the threaded trainer could inherit
locked mutexes), so their parent is the forkserver, not the trainer. PyTorch's worker watchdog
watches the parent and so never fires, and the forkserver stays alive while any of its children
holds its 'alive' pipe: after `kill -9` of the trainer, workers and forkserver kept each other
alive for hours (issue 12). A worker that watches the trainer itself breaks that cycle; once the
workers are gone, the forkserver sees its pipe close and leaves, and then Python's resource
tracker unlinks the run's named semaphores.
"""

from __future__ import annotations

import multiprocessing.util
import os
import select
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Owner:
    """The process a helper serves: its pid and multiprocessing's temporary folder (its sockets)."""

    pid: int
    tmp: str


def owner() -> Owner:
    """This process, as the helpers it starts should know it (taken before they start)."""
    return Owner(os.getpid(), multiprocessing.util.get_temp_dir())


def _alive(pid: int, fd: int | None) -> bool:
    if fd is not None:
        return not select.select([fd], [], [], 0)[0]
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the pid now belongs to someone else
        return False
    return True


def _remove(paths: Sequence[str]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _watch(pid: int, fd: int | None, remove: Sequence[str]) -> None:
    if fd is not None:
        select.select([fd], [], [])  # a pidfd becomes readable when its process has ended
    else:
        while _alive(pid, None):  # kernels before 5.3 have no pidfd: poll, coarsely
            time.sleep(0.5)
    _remove(remove)
    os._exit(1)


def _remove_if_gone(pid: int, fd: int | None, remove: Sequence[str]) -> None:
    """At this helper's own exit: the folders go too if the process served is gone (never while it lives:
    they hold its sockets)."""
    if not _alive(pid, fd):
        _remove(remove)


def exit_with(served: Owner) -> None:
    """End this process as soon as the process it serves has ended, removing multiprocessing's temporary
    folders first: the served process's and this one's.

    The end is os._exit: the process served is gone, nothing of this one's work is wanted, and its
    own exit handlers could block on pipes to the dead process.

    Args:
        served: `owner()` of the process served, taken before this helper started.
    """
    remove = (served.tmp, multiprocessing.util.get_temp_dir())
    try:
        fd = os.pidfd_open(served.pid)
    except ProcessLookupError:  # it died while this helper was starting
        _remove(remove)
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd_open (old kernel or Python): poll instead
        fd = None
    # The helper may also end on its own first (a DataLoader worker whose queue hit EOF when the trainer
    # died), through multiprocessing's exit handlers: those remove the folders then, if the process is gone.
    multiprocessing.util.Finalize(None, _remove_if_gone, args=(served.pid, fd, remove), exitpriority=0)
    threading.Thread(target=_watch, args=(served.pid, fd, remove), daemon=True, name="lifeline").start()

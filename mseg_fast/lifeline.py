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
from typing import Sequence


def _leave(remove: Sequence[str]) -> None:
    for path in remove:
        shutil.rmtree(path, ignore_errors=True)
    os._exit(1)


def _watch_pidfd(fd: int, remove: Sequence[str]) -> None:
    select.select([fd], [], [])  # a pidfd becomes readable when its process has ended
    _leave(remove)


def _watch_poll(pid: int, remove: Sequence[str]) -> None:
    while True:  # kernels before 5.3 have no pidfd: poll, coarsely
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):  # gone, or the pid now belongs to someone else
            _leave(remove)


def _alive(pid: int, fd: int | None) -> bool:
    if fd is not None:
        return not select.select([fd], [], [], 0)[0]
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _remove_if_gone(pid: int, fd: int | None, remove: Sequence[str]) -> None:
    """At this helper's own exit: the folders go too if the process served is gone (never while it lives:
    they hold its sockets)."""
    if not _alive(pid, fd):
        for path in remove:
            shutil.rmtree(path, ignore_errors=True)


def exit_with(pid: int, remove: Sequence[str] = ()) -> None:
    """End this process as soon as process `pid` has ended, removing the folders `remove` first.

    The end is os._exit: the process served is gone, nothing of this one's work is wanted, and its
    own exit handlers could block on pipes to the dead process. Folders that those handlers would
    have removed, and those of the dead process, are named in `remove` instead.

    Args:
        pid: the process served, e.g. the trainer's `os.getpid()` taken before the helper started.
        remove: temporary folders to delete before leaving (missing ones are fine).
    """
    remove = tuple(remove)
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        _leave(remove)  # it died while this helper was starting
    except (AttributeError, OSError):  # no pidfd_open (old kernel or Python): poll instead
        fd = None
    # The helper may also end on its own first (a DataLoader worker whose queue hit EOF when the trainer
    # died), through multiprocessing's exit handlers: those remove the folders then, if the process is gone.
    multiprocessing.util.Finalize(None, _remove_if_gone, args=(pid, fd, remove), exitpriority=0)
    if fd is None:
        threading.Thread(target=_watch_poll, args=(pid, remove), daemon=True, name="lifeline").start()
    else:
        threading.Thread(target=_watch_pidfd, args=(fd, remove), daemon=True, name="lifeline").start()

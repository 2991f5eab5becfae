"""User-facing errors.

A `UserError` is bad input or configuration: the CLIs print its message (which names the
file, the value and what to do) without a traceback and exit with status 2.
"""

import errno


class UserError(Exception):
    """Bad input that the user can fix; the message says how."""


class SampleError(UserError):
    """One sample of a dataset list cannot be used (missing, undecodable, inconsistent).

    Args:
        path: the file at fault (absolute path as a string).
        problem: what is wrong with it, with the offending value.
        hint: what the user can do about it.
    """

    def __init__(self, path: str, problem: str, hint: str):
        self.path = path
        self.problem = problem
        self.hint = hint
        super().__init__(f"{path}: {problem}. {hint}")

    def __reduce__(self):
        # Worker processes raise it; the parent must be able to unpickle it.
        return (SampleError, (self.path, self.problem, self.hint))


# What to do about a file-system error, by its cause: a missing file is not a permission problem, and a
# full disk needs space, not another path.
_OS_HINTS = {
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "it is a folder; give a file",
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.ENOSPC: "free space on that disk or write somewhere else",
    errno.EDQUOT: "your disk quota is used up; free space or write somewhere else",
    errno.ELOOP: "the path is a loop of symbolic links; fix the links",
    errno.EIO: "the disk reported a read or write error; check the disk and copy the file again",
    errno.ENAMETOOLONG: "give a shorter path",
}


def os_hint(number: int | None) -> str:
    """What to do about a file-system error of this errno."""
    return _OS_HINTS.get(number, "check the path and its permissions")

"""User-facing errors.

A `UserError` is bad input or configuration: the CLIs print its message (which names the
file, the value and what to do) without a traceback and exit with status 2.
"""


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

"""What every command line shares: argument types with ranges, and one error line for the user's mistakes.

The rule (README): a user's mistake is one `error:` line naming the file or value and what to do, and
exit status 2; a traceback means a bug in mseg-fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from mseg_fast.errors import UserError, os_hint


def at_least(low: int):
    """An argparse type: an integer >= low (argparse then prints one error line and exits 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: give {low} or more")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


class _HelpFormat(argparse.RawDescriptionHelpFormatter):
    """The docstring's examples as written (not re-wrapped), and each option's default after its meaning."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or "default:" in text or "(default" in text or not action.option_strings
                or action.default in (None, False, [], argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


class ToolParser(argparse.ArgumentParser):
    """Every command's parser. Its help is the tool's docstring: the first paragraph above the options,
    the rest (the examples) below them, with every option's meaning and default."""

    def __init__(self, doc: str, **kwargs):
        head, _, rest = doc.strip().partition("\n\n")
        super().__init__(description=head, epilog=f"examples:\n{rest}" if rest else None, formatter_class=_HelpFormat,
                         **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        # An option without a meaning is our mistake: every test that runs the tool catches it.
        bare = [a.dest for a in self._actions if a.help is None]
        if bare:
            raise TypeError(f"{self.prog}: arguments without help text: {', '.join(bare)}")
        return super().parse_known_args(args, namespace)


def default_device() -> str:
    """What `--device` means when not given, for every tool: the GPU where there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_arg(text: str) -> str:
    """An argparse type: `cpu`, `cuda` or `cuda:N` naming a GPU this machine has (anything else, `tpu` or a
    typo, would otherwise run on the CPU or end in a traceback)."""
    kind, _, number = text.partition(":")
    if text == "cpu":
        return text
    if kind != "cuda" or (number and not number.isdigit()):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device: give cpu, cuda or cuda:N")
    import torch  # here, not at the top: the tools that take no device need not import torch to parse arguments

    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"'{text}': no CUDA device is available on this machine; use cpu")
    if number and int(number) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"'{text}': this machine has {torch.cuda.device_count()} GPU(s), "
                                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return text


def error_line(error: Exception) -> str:
    """The user-facing line for a UserError or a file-system error (missing file, no permission, disk full, ...)."""
    if isinstance(error, OSError) and not isinstance(error, UserError):
        where = f"{error.filename}: " if error.filename else ""
        hint = os_hint(error.errno)
        return f"error: {where}{error.strerror or error}; {hint}"
    return f"error: {error}"


def fail(error: Exception) -> int:
    """Print the error line and return exit status 2. Under torchrun only rank 0 prints: the ranks read the same
    input and would print the same line once each (torchrun then adds its own summary of the failed ranks)."""
    if os.environ.get("RANK", "0") == "0":
        print(error_line(error), file=sys.stderr)
    return 2


USER_ERRORS = (UserError, OSError)

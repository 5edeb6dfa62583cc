"""Errors that the command line reports as one line: bad input (exit code 2), a numerical
failure of a computation that ran (exit code 1) and a file the machine could not write (disk full,
permission denied, read-only file system: exit code 1, the input was fine)."""
from __future__ import annotations

import torch


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it."""


class NumericalError(Exception):
    """A computation produced values that are not finite: the message names what diverged and what
    to do. Nothing non-finite is written or scored."""


class WriteError(Exception):
    """A file could not be written: the message names the file, the operating system's reason and
    the fix. The previous version of the file, if there was one, is unchanged."""


def one_line(text: str) -> str:
    """``text`` with every character that would break or control a terminal line (newlines, carriage
    returns, other control characters, Unicode line and paragraph separators) written as an escape, so
    that a message quoting user input stays one line."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in str(text))


def check_finite(tensor: torch.Tensor, what: str, fix: str) -> torch.Tensor:
    """``tensor`` itself when every entry is finite, else :class:`NumericalError` naming ``what``
    (e.g. "the samples of images 0-31") and the remedy ``fix``."""
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        frac = float(bad.float().mean())
        raise NumericalError(f"{what} diverged ({frac:.1%} of the values are NaN or infinite); {fix}")
    return tensor

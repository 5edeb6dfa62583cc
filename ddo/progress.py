"""Progress bars that stay quiet in logs.

On a terminal, a tqdm bar redrawn in place. When standard error is not a terminal (a log file, a
pipe, CI) a redraw is a new line, so the bar writes at most one line every ``LOG_INTERVAL_S``
seconds and one at the end.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(iterable=None, *, total=None, desc: str | None = None, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total``); ``enabled=False`` shows nothing."""
    on_terminal = sys.stderr.isatty()
    if not on_terminal:
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S * 4)
    kwargs.setdefault("dynamic_ncols", on_terminal)
    kwargs.setdefault("leave", True)
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, **kwargs)


__all__ = ["progress_bar", "LOG_INTERVAL_S"]

"""The slow estimates of the PDE tasks (the inversion, the posterior, the reference draws), computed once
and kept on disk, keyed by what they are a function of.

Each estimate is a pure function of the classical routes' fit (the training pairs, the time step: the
:attr:`~ddo_conditional.pde.routes.Routes.fingerprint`), the grid, the method (with its settings) and
the observations, so the key is a SHA-256 of exactly those and of :data:`CACHE_VERSION` (raised when the
code of an estimate changes): a rerun of ``ddo task`` on the same pairs and masks reads every estimate
back, while a changed mask seed, point count, observed value, setting or training set is a new key,
never a stale entry. One file per estimate, written atomically: an interrupted evaluation keeps what it
finished and resumes from there. Each entry keeps the seconds its computation took, so a rerun reports
the estimate's cost, not the disk's.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import time
from pathlib import Path
from typing import Callable

import torch
from ddo.api import atomic_write, cache_dir

CACHE_VERSION = 2


def default_folder() -> Path:
    """``$DDO_CACHE_DIR/pde-estimates`` (default ``~/.cache/ddo/pde-estimates``)."""
    return cache_dir() / "pde-estimates"


class EstimateCache:
    """Estimates on disk under ``folder/<method>/<key>.pt``; ``folder=None`` computes every time.
    :attr:`hits` and :attr:`misses` count the lookups of this instance."""

    def __init__(self, folder: Path | None):
        self.folder = None if folder is None else Path(folder)
        self.hits = self.misses = 0

    @staticmethod
    def key(fit: str, method: str, shape, pixels: torch.Tensor, values: torch.Tensor, observed, **settings) -> str:
        """The SHA-256 of the routes' fit (``fit``, their fingerprint), the method and its settings, the grid
        and the observations (pixels as int64, values as float64, so the same observations give the same key
        whatever their dtype)."""
        h = hashlib.sha256()
        h.update(repr((CACHE_VERSION, fit, method, tuple(int(s) for s in shape), tuple(bool(o) for o in observed),
                       sorted(settings.items()))).encode())
        h.update(pixels.long().contiguous().numpy().tobytes())
        h.update(values.double().contiguous().numpy().tobytes())
        return h.hexdigest()

    def get(self, method: str, key: str, compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
        """``(estimate, seconds)``: the stored estimate of ``key`` and the seconds its computation took, else
        ``compute()`` timed, stored."""
        path = None if self.folder is None else self.folder / method / f"{key}.pt"
        if path is not None and path.exists():
            try:
                entry = torch.load(path, map_location="cpu", weights_only=True)
                self.hits += 1
                return entry["estimate"], float(entry["seconds"])
            except (OSError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError):
                pass  # an unreadable entry (a disk fault) is computed again and replaced
        self.misses += 1
        t0 = time.perf_counter()
        out = compute()
        seconds = time.perf_counter() - t0
        if path is not None:
            buffer = io.BytesIO()
            torch.save({"estimate": out.detach().cpu().contiguous(), "seconds": seconds}, buffer)
            atomic_write(path, lambda f: f.write(buffer.getvalue()))  # makes the folder; a refusal is one line
        return out, seconds


__all__ = ["EstimateCache", "default_folder", "CACHE_VERSION"]

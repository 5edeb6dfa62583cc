"""The caches of the PDE tasks' estimates: each training image's route in memory (:class:`RouteCache`),
and the slow estimates (the inversion, the posterior, the reference draws) on disk
(:class:`EstimateCache`, :func:`slow_estimate`), computed once and keyed by what they are a function of.

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

from ..data.datasets import own_context
from .datasets import PAIR_NATIVE, to_units
from .inversion import INVERSION_EVALUATIONS
from .posterior import POSTERIOR_SAMPLES
from .routes import Routes, physical_values, task_of

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


class RouteCache:
    """The route of every image, computed once: :class:`Routes` per resolution (fitted from the
    training split on first use) and each image's route keyed by its index, size, context pixels,
    observed values and channels, so a changed mask, task or image (a flipped pair of a
    reflection-invariant PDE) is a new entry, never a stale one."""

    def __init__(self, kind: str, base: str = "classical"):
        self.kind, self.base = kind, base
        self._routes: dict = {}
        self._dense: dict = {}

    def routes_at(self, resolution: int) -> Routes:
        if resolution not in self._routes:
            self._routes[resolution] = Routes.for_dataset(self.kind, resolution)
        return self._routes[resolution]

    def dense(self, batch: dict) -> torch.Tensor:
        """The routes ``(B, 2, H, W)`` of a collated batch, in the model's units."""
        h, w = batch["image"].shape[-2:]
        chans = batch["context_channels"]
        keys, todo = [], []
        for b, (pixels, observed) in enumerate(own_context(batch)):
            digest = hashlib.sha256(pixels.numpy().tobytes() + observed.numpy().tobytes()).hexdigest()
            key = (int(batch["index"][b]), h, w, digest, tuple(bool(v) for v in chans[b]))
            keys.append(key)
            if key not in self._dense:
                todo.append((key, pixels, physical_values(self.kind, observed.double())))
        if todo:
            routes = self.routes_at(h)
            out = routes.routes([t[1] for t in todo], [t[2] for t in todo], [t[0][-1] for t in todo])
            cache = EstimateCache(default_folder()) if self.base == "best" else None
            for (key, pixels, values), r in zip(todo, out):
                best = slow_estimate(routes, cache, pixels, values, key[-1]) if cache is not None else None
                self._dense[key] = to_units(self.kind, (r if best is None else best[1]).float())
        return torch.stack([self._dense[k] for k in keys])


def slow_method(routes: Routes, observed) -> str | None:
    """The estimate of seconds per pair that beats the route on the task ``observed``: Darcy's ``inversion``
    on the inverse and joint tasks, its ``posterior`` forward on the pairs' own grid; ``None`` elsewhere."""
    if routes.kind != "darcy-pair":
        return None
    if task_of(observed) != "forward":
        return "inversion"
    return "posterior" if routes.h == PAIR_NATIVE else None


def slow_estimate(routes: Routes, cache: EstimateCache, pixels: torch.Tensor, values: torch.Tensor, observed):
    """``(method, estimate (2, H, W), seconds)`` of :func:`slow_method` for one pair (``values (K, 2)``,
    physical units) through ``cache``, where the model's training (``--route-base best``) and ``ddo task``
    share its entries; ``None`` where the task has none."""
    method = slow_method(routes, observed)
    if method is None:
        return None
    if method == "posterior":
        settings, compute = {"samples": POSTERIOR_SAMPLES}, lambda: routes.posterior(pixels, values)
    else:
        settings, compute = {"evaluations": INVERSION_EVALUATIONS}, lambda: routes.inversion(pixels, values, observed)
    key = cache.key(routes.fingerprint, method, (routes.h, routes.w), pixels, values, observed, **settings)
    return (method, *cache.get(method, key, compute))


__all__ = ["EstimateCache", "RouteCache", "default_folder", "slow_method", "slow_estimate", "CACHE_VERSION"]

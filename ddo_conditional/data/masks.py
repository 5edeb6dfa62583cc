"""Fixed sparse masks: a pure function of ``(seed, index, H, W, ratios, pattern)``.

Nothing is stored per image and no global RNG is touched: every process, worker, epoch and
machine derives the same mask for the same global image index. Counts are
``K = floor(context_ratio * H * W)`` context and ``Q = floor(query_ratio * H * W)`` query pixels,
disjoint. Indices are flat positions ``y * W + x``.

A context ratio may be a range ``"lo:hi"``: each image then observes its own ratio, log-uniform on
``[lo, hi]`` and a pure function of ``(seed, index)`` (:func:`image_ratio`), so the mask of an image
is still fixed across epochs, workers and world sizes.

Field pairs (channel 0 a PDE's input, channel 1 its solution) may be observed one channel at a time:
``observe`` is ``all`` (every channel at the context pixels), a task of :data:`TASKS` (``forward``:
the input; ``inverse``: the solution; ``joint``: both), or ``tasks`` (each image its own task,
:func:`image_task`).

Patterns:
- ``random``: a random permutation; the first ``K`` pixels are context, the next ``Q`` query.
- ``grid``: context on a regular lattice (random offset), query random among the rest.
- ``block``: a missing square; query pixels inside it, context outside.
- ``lines``: missing full rows and columns; query pixels on them, context elsewhere.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

PATTERNS = ("random", "grid", "block", "lines")


class MaskError(ValueError):
    """Ratios, seeds or patterns that cannot define a mask."""


def mask_counts(h: int, w: int, context_ratio: float, query_ratio: float) -> tuple[int, int]:
    """``(K, Q)`` after checking ``0 < context``, ``0 <= query``, ``context + query <= 1``."""
    if not (math.isfinite(context_ratio) and math.isfinite(query_ratio)):
        raise MaskError("mask ratios must be finite numbers")
    if context_ratio <= 0 or query_ratio < 0 or context_ratio + query_ratio > 1:
        raise MaskError(f"mask ratios must satisfy 0 < context, 0 <= query, context + query <= 1; got "
                        f"context {context_ratio}, query {query_ratio}")
    k, q = math.floor(context_ratio * h * w), math.floor(query_ratio * h * w)
    if k < 1:
        raise MaskError(f"context ratio {context_ratio} leaves no context pixel on a {h}x{w} image")
    return k, q


def ratio_range(value) -> tuple[float, float]:
    """``(lo, hi)`` of a context ratio: a number ``r`` gives ``(r, r)``, a string ``"lo:hi"`` the range
    (refused unless ``0 < lo < hi``)."""
    if isinstance(value, str) and ":" in value:
        try:
            lo, hi = (float(v) for v in value.split(":"))
        except ValueError:
            raise MaskError(f"a context ratio range is LO:HI, like 0.01:0.3; got {value!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
            raise MaskError(f"a context ratio range LO:HI needs 0 < LO < HI, like 0.01:0.3; got {value!r}")
        return lo, hi
    try:
        r = float(value)
    except (TypeError, ValueError):
        raise MaskError(f"a context ratio is a number or a range LO:HI, like 0.1 or 0.01:0.3; got {value!r}") from None
    return r, r


class RatioError(argparse.ArgumentTypeError, MaskError):
    """A malformed ``--context-ratio`` (a flag error on the command line, a ``MaskError`` elsewhere)."""


def context_ratio_arg(text: str):
    """``--context-ratio``: a float, or a range kept as the canonical string ``"lo:hi"``."""
    try:
        lo, hi = ratio_range(text)
    except MaskError as e:
        raise RatioError(str(e)) from None
    return lo if lo == hi else f"{lo:g}:{hi:g}"


def image_ratio(seed: int, index: int, lo: float, hi: float) -> float:
    """The context ratio of image ``index``: log-uniform on ``[lo, hi]``, a pure function of ``(seed, index)``."""
    if lo == hi:
        return lo
    u = np.random.default_rng([seed, index, 0x5A710]).random()
    return float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))


def _rng(seed: int, index: int, h: int, w: int, pattern: str) -> np.random.Generator:
    if seed < 0 or index < 0:
        raise MaskError(f"mask seed and image index must be non-negative, got seed {seed}, index {index}")
    return np.random.default_rng([seed, index, h, w, PATTERNS.index(pattern)])


def _hole_split(rng, hole: np.ndarray, n: int, k: int, q: int):
    """Query pixels drawn inside ``hole`` (a boolean mask of ``n`` pixels), context outside."""
    inside, outside = np.flatnonzero(hole), np.flatnonzero(~hole)
    if len(outside) < k:
        raise MaskError(f"the missing region leaves {len(outside)} pixels for {k} context pixels; lower the ratios")
    return rng.choice(outside, k, replace=False), rng.choice(inside, min(q, len(inside)), replace=False)


def fixed_mask(seed: int, index: int, h: int, w: int, context_ratio: float = 0.1, query_ratio: float = 0.1,
               pattern: str = "random") -> tuple[np.ndarray, np.ndarray]:
    """``(context_indices (K,), query_indices (Q,))`` as sorted ``int64`` flat indices."""
    if pattern not in PATTERNS:
        raise MaskError(f"unknown mask pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    k, q = mask_counts(h, w, context_ratio, query_ratio)
    n = h * w
    rng = _rng(seed, index, h, w, pattern)
    if pattern == "random":
        perm = rng.permutation(n)
        ctx, qry = perm[:k], perm[k:k + q]
    elif pattern == "grid":
        s = max(1, math.floor(math.sqrt(n / k)))
        oy, ox = rng.integers(0, s, size=2)
        on = np.zeros((h, w), bool)
        on[oy::s, ox::s] = True
        lattice = np.flatnonzero(on)
        if len(lattice) >= k:
            ctx = rng.choice(lattice, k, replace=False)
        else:
            ctx = np.concatenate([lattice, rng.choice(np.flatnonzero(~on), k - len(lattice), replace=False)])
        rest = np.setdiff1d(np.arange(n), ctx)
        qry = rng.choice(rest, q, replace=False)
    elif pattern == "block":
        side = min(h, w, max(1, math.ceil(math.sqrt(max(q, 1)))))
        while side * min(side, w) < q and side < min(h, w):
            side += 1
        y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        hole = np.zeros((h, w), bool)
        hole[y0:y0 + side, x0:x0 + side] = True
        ctx, qry = _hole_split(rng, hole.ravel(), n, k, q)
    else:  # lines
        hole = np.zeros((h, w), bool)
        rows, cols = rng.permutation(h), rng.permutation(w)
        i = 0
        while hole.sum() < max(q, 1):
            if i % 2 == 0:
                hole[rows[i // 2], :] = True
            else:
                hole[:, cols[i // 2]] = True
            i += 1
        ctx, qry = _hole_split(rng, hole.ravel(), n, k, q)
    return np.sort(ctx).astype(np.int64), np.sort(qry).astype(np.int64)


TASKS = ("forward", "inverse", "joint")
OBSERVED = {"forward": (True, False), "inverse": (False, True), "joint": (True, True)}
OBSERVE_RULES = ("all", "tasks") + TASKS


def image_task(seed: int, index: int) -> str:
    """The task of image ``index`` under ``--observe tasks``: uniform over :data:`TASKS`, a pure
    function of ``(seed, index)``."""
    return TASKS[int(np.random.default_rng([seed, index, 0x7A5C]).integers(len(TASKS)))]


def observed_channels(rule: str, seed: int, index: int, channels: int) -> torch.Tensor:
    """``(C,)`` float: 1 on the channels image ``index`` observes at its context pixels."""
    if rule == "all":
        return torch.ones(channels)
    if channels != 2:
        raise ValueError(f"--observe {rule} needs a dataset of field pairs (2 channels), got {channels} channels")
    return torch.tensor(OBSERVED[image_task(seed, index) if rule == "tasks" else rule], dtype=torch.float32)

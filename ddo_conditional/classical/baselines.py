"""Classical interpolation of the context pixels: nearest, linear, cubic (scipy ``griddata``) and
biharmonic inpainting (scikit-image), on the same masks as the model; on request (``EXTRA_BASELINES``)
the thin-plate spline through the context pixels' centres, whose dense solve costs ``O(K^3)``."""
from __future__ import annotations

import numpy as np
import torch

BASELINES = ("nearest", "linear", "cubic", "biharmonic")
EXTRA_BASELINES = ("thin-plate", "kriging")  # kriging: the Gaussian prior's posterior (classical.kriging)


def interpolate(image: np.ndarray, context_indices: np.ndarray, method: str) -> np.ndarray:
    """Fill an ``(H, W, C)`` image from its pixels at flat ``context_indices``.

    ``linear`` and ``cubic`` are undefined outside the convex hull of the context; there the
    nearest context value is used (everywhere, when the hull is empty: fewer than three context
    pixels, or all of them on one line).
    """
    from scipy.interpolate import griddata
    from scipy.spatial import QhullError

    h, w, c = image.shape
    flat = image.reshape(h * w, c)
    pts = np.stack(np.unravel_index(context_indices, (h, w)), axis=1).astype(np.float64)
    vals = flat[context_indices]
    if method == "thin-plate":
        return thin_plate(flat[context_indices], context_indices, h, w).reshape(h, w, c)
    if method == "biharmonic":
        from skimage.restoration import inpaint_biharmonic

        missing = np.ones(h * w, bool)
        missing[context_indices] = False
        known = np.where(missing[:, None], 0.0, flat).reshape(h, w, c)
        return inpaint_biharmonic(known, missing.reshape(h, w), channel_axis=-1)
    gy, gx = np.mgrid[0:h, 0:w]
    grid = np.stack([gy.ravel(), gx.ravel()], axis=1).astype(np.float64)
    out = griddata(pts, vals, grid, method="nearest")
    if method != "nearest":
        try:
            fine = griddata(pts, vals, grid, method=method)
        except QhullError:  # fewer than three context pixels, or all on one line: the hull is empty
            return out.reshape(h, w, c)
        ok = np.isfinite(fine)
        out[ok] = fine[ok]
    return out.reshape(h, w, c)


def thin_plate(values: np.ndarray, context_indices: np.ndarray, h: int, w: int) -> np.ndarray:
    """The thin-plate spline through ``values (K, C)`` at the centres of the pixels ``context_indices``,
    on every pixel centre of the ``h x w`` grid: ``(h w, C)`` (float64; the nearest value where the
    affine part is not determined: fewer than four points, or all on one line)."""
    from ..data.points import cell_coords, grid_points
    from .thin_plate import tps_eval, tps_fit

    k = len(context_indices)
    coords = torch.from_numpy(cell_coords(context_indices, h, w))[None]
    if k < 4 or np.linalg.matrix_rank(np.c_[np.ones(k), coords[0].numpy()]) < 3:  # the affine part is undetermined
        rows, cols = np.divmod(np.arange(h * w), w)
        r, c = np.divmod(np.asarray(context_indices), w)
        nearest = ((rows[:, None] - r[None]) ** 2 + (cols[:, None] - c[None]) ** 2).argmin(1)
        return np.asarray(values, np.float64)[nearest]
    vals = torch.from_numpy(np.asarray(values, np.float64))[None]
    coef, _ = tps_fit(coords, vals, torch.ones(1, k, dtype=torch.bool))
    return tps_eval(coef, coords, grid_points(h, w, dtype=torch.float64))[0].numpy()


def baseline_batch(images01: torch.Tensor, context_indices: torch.Tensor, method: str) -> torch.Tensor:
    """``(B, C, H, W)`` reconstructions in ``[0, 1]`` of a batch by one classical method."""
    known = BASELINES + ("thin-plate",)
    if method not in known:
        raise ValueError(f"unknown interpolation {method!r}; known: {', '.join(known)}")
    out = []
    for img, idx in zip(images01.permute(0, 2, 3, 1).double().cpu().numpy(), context_indices.cpu().numpy()):
        out.append(interpolate(img, np.unique(idx), method))  # padding repeats an observed pixel
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(images01.dtype).clamp(0, 1)

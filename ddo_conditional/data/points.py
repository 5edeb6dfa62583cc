"""Point-set contexts: observations at any coordinates of the unit square, not only grid pixels.

A point set is ``coords (B, K, 2)`` in ``[0, 1]^2`` (``x`` along columns, ``y`` along rows; pixel
``(row, col)`` of an ``H x W`` grid has its centre at ``((col + 0.5) / W, (row + 0.5) / H)``),
``values (B, K, C)`` and ``valid (B, K)`` (``False`` marks padding, so sets of different sizes share
a batch). Everything here is a function of the set, evaluated on whatever grid is asked for.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def grid_points(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres of the pixels of an ``h x w`` grid, ``(h * w, 2)`` as ``(x, y)``, row-major."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)


def cell_coords(indices: np.ndarray, h: int, w: int, offsets: np.ndarray | None = None) -> np.ndarray:
    """Coordinates ``(K, 2)`` of points in the cells of flat pixel ``indices``: at ``offsets (K, 2)`` in
    ``[0, 1)`` inside each cell (``None``: the centres)."""
    rows, cols = np.divmod(np.asarray(indices), w)
    off = np.full((len(rows), 2), 0.5) if offsets is None else offsets
    return np.stack([(cols + off[:, 0]) / w, (rows + off[:, 1]) / h], -1)


def bilinear(image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Values ``(K, C)`` of ``image (C, H, W)`` at ``coords (K, 2)``, bilinear between pixel centres,
    the edge pixels held beyond the outermost centres."""
    grid = (coords * 2 - 1).view(1, 1, -1, 2).to(image.dtype)  # grid_sample's [-1, 1] with align_corners=False
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T.contiguous()


def dihedral_points(coords: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Where :func:`~ddo_conditional.data.datasets.apply_dihedral` ``(k, flip)`` moves points of a square
    grid: ``k`` quarter turns (``torch.rot90`` over rows then columns), then a flip of the columns."""
    x, y = coords[..., 0], coords[..., 1]
    for _ in range(k % 4):
        x, y = y, 1 - x
    if flip:
        x = 1 - x
    return torch.stack([x, y], -1)


__all__ = ["grid_points", "cell_coords", "bilinear", "dihedral_points"]

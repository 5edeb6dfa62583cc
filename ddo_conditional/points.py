"""Point-set contexts: observations at any coordinates of the unit square, not only grid pixels.

A point set is ``coords (B, K, 2)`` in ``[0, 1]^2`` (``x`` along columns, ``y`` along rows; pixel
``(row, col)`` of an ``H x W`` grid has its centre at ``((col + 0.5) / W, (row + 0.5) / H)``),
``values (B, K, C)`` and ``valid (B, K)`` (``False`` marks padding, so sets of different sizes share
a batch). Everything here is a function of the set, evaluated on whatever grid is asked for.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


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
    """Where :func:`~ddo_conditional.datasets.apply_dihedral` ``(k, flip)`` moves points of a square
    grid: ``k`` quarter turns (``torch.rot90`` over rows then columns), then a flip of the columns."""
    x, y = coords[..., 0], coords[..., 1]
    for _ in range(k % 4):
        x, y = y, 1 - x
    if flip:
        x = 1 - x
    return torch.stack([x, y], -1)


# --- thin-plate spline -------------------------------------------------------------------------
def _tps_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``2 r^2 log r = d log d`` (0 at 0) between float64 points ``a (B, N, 2)`` and ``b (B, K, 2)`` of
    the unit square, ``d = r^2`` in the matmul form ``|a|^2 + |b|^2 - 2 a.b`` about the square's centre
    (``|a|^2 <= 0.5``): its rounding, ~1e-16 absolute, is far below the squared spacing of any grid
    (1e-8 at 10,000 x 10,000) and is a relative 1e-4 at the closest points a CSV may hold (1e-6 apart),
    where the kernel itself is ~1e-11. It takes three passes over the ``(B, N, K)`` block where
    differences take seven. The factor 2 is left to the caller: a scale of the kernel is a scale of
    the coefficients, and Rippa's leave-one-out ratio is unchanged by it."""
    a, b = a - 0.5, b - 0.5
    d = torch.baddbmm((a * a).sum(-1, keepdim=True) + (b * b).sum(-1)[:, None, :], a, b.transpose(1, 2), alpha=-2)
    return torch.xlogy(d.clamp_min_(0), d)


def _affine(coords: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.ones_like(coords[..., :1]), coords], -1)


def tps_system(coords: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The inverse ``(B, K + 3, K + 3)`` (float64) of the thin-plate spline's interpolation system
    ``[[A, P], [P^T, 0]]`` with ``A_kl = phi(|x_k - x_l|)`` and ``P = [1, x, y]``; padded points are
    given an identity row and no affine row, so their coefficient is 0 whatever their value."""
    c = coords.double()
    m = valid.double()
    b, k = m.shape
    a = _tps_kernel(c, c) * (m[:, :, None] * m[:, None, :])
    a.diagonal(dim1=1, dim2=2).copy_(1 - m)  # phi(0) = 0 exactly; padded points get an identity row
    p = _affine(c) * m[..., None]
    top = torch.cat([a, p], 2)
    bottom = torch.cat([p.transpose(1, 2), c.new_zeros(b, 3, 3)], 2)
    return torch.linalg.inv(torch.cat([top, bottom], 1))


def tps_fit(coords: torch.Tensor, values: torch.Tensor, valid: torch.Tensor):
    """Coefficients ``(B, K + 3, C)`` of the thin-plate spline through the points (float64) and its
    leave-one-out residuals ``(B, K, C)`` (Rippa's formula: ``coef_k / (M^-1)_kk``)."""
    inv = tps_system(coords, valid)
    k = coords.shape[1]
    rhs = torch.cat([values.double() * valid[..., None].double(), values.new_zeros(values.shape[0], 3, values.shape[2]).double()], 1)
    coef = inv @ rhs
    diag = torch.diagonal(inv, dim1=1, dim2=2)[:, :k, None]
    loo = coef[:, :k] / diag * valid[..., None].double()
    return coef, loo


def tps_eval(coef: torch.Tensor, coords: torch.Tensor, targets: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """The spline of :func:`tps_fit` at ``targets (T, 2)``: ``(B, T, C)`` in ``coef``'s dtype (chunks
    of ``chunk`` targets bound the memory)."""
    k = coords.shape[1]
    parts = []
    c = coords.to(coef.dtype)
    for start in range(0, targets.shape[0], chunk):
        t = targets[start:start + chunk].to(coef.dtype)
        kern = _tps_kernel(t.expand(c.shape[0], -1, -1), c)
        parts.append(kern @ coef[:, :k] + _affine(t) @ coef[:, k:])
    return torch.cat(parts, 1)


def point_context(coords: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, h: int, w: int) -> dict:
    """The network kwargs of a point set on an ``h x w`` grid: the points, their thin-plate spline
    ``context_dense (B, C, h, w)`` and ``context_loo (B,)``, the spline's leave-one-out RMS error."""
    dense, loo = tps_grid(coords, values, valid, h, w)
    return {"context_coords": coords, "context_point_values": values, "context_valid": valid,
            "context_dense": dense, "context_loo": loo}


def tps_grid(coords: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, h: int, w: int, group: int = 8):
    """Thin-plate spline of the points on an ``h x w`` grid, ``(B, C, h, w)`` in ``values``' dtype,
    and the root mean square of its leave-one-out error over the valid points, ``(B,)``.

    The images are solved ``group`` at a time in the order of their point counts, each group padded
    only to its own largest set: a batch whose counts span 1% to 30% of the grid (``--context-ratio
    0.01:0.3``) would otherwise pay for its largest set in every image."""
    if coords.shape[0] <= group:
        return _tps_grid(coords, values, valid, h, w)
    last = torch.where(valid, torch.arange(1, valid.shape[1] + 1, device=valid.device), 0).amax(1)
    order = last.argsort()
    ends = last[order].tolist()  # the sets' ends (their point counts: padding follows the points), sorted
    dense = values.new_empty(values.shape[0], values.shape[2], h, w)
    loo = values.new_empty(values.shape[0])
    for start in range(0, len(order), group):
        idx = order[start:start + group]
        k = max(1, max(ends[start:start + group]))
        dense[idx], loo[idx] = _tps_grid(coords[idx, :k], values[idx, :k], valid[idx, :k], h, w)
    return dense, loo


def _tps_grid(coords: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, h: int, w: int):
    coef, loo = tps_fit(coords, values, valid)
    dense = tps_eval(coef, coords, grid_points(h, w, coords.device, torch.float64))
    b, c = values.shape[0], values.shape[2]
    count = (valid.double().sum(1) * c).clamp_min(1.0)
    loo_rms = ((loo ** 2).flatten(1).sum(1) / count).sqrt()
    return dense.transpose(1, 2).reshape(b, c, h, w).to(values.dtype), loo_rms.to(values.dtype)


# --- encoders: a point set -> features on any grid ---------------------------------------------
def setconv_grid(coords: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, h: int, w: int,
                 length_scales: torch.Tensor) -> torch.Tensor:
    """ConvCNP's set convolution onto an ``h x w`` grid: per length scale ``l`` (unit-square units), a
    density channel ``d(g) = sum_k exp(-|g - x_k|^2 / 2 l^2)`` and the normalised values
    ``sum_k exp(...) y_k / (d + 1e-6)``; ``(B, S (1 + C), h, w)``, scale by scale.

    The Gaussian of a grid point factorises into one of its column and one of its row, so both sums
    are products ``E_rows (B, h, K) @ E_cols^T (B, K, w)``: exponentials on ``(h + w) K`` entries per
    image instead of ``h w K``, and no ``(B, h w, K)`` block to keep for the backward pass."""
    x, y = coords[..., 0], coords[..., 1]
    gx = (torch.arange(w, device=coords.device, dtype=coords.dtype) + 0.5) / w
    gy = (torch.arange(h, device=coords.device, dtype=coords.dtype) + 0.5) / h
    dx2 = (gx[None, :, None] - x[:, None, :]) ** 2  # (B, w, K)
    dy2 = (gy[None, :, None] - y[:, None, :]) ** 2  # (B, h, K)
    m = valid.to(coords.dtype)[:, None, :]
    vals = values.transpose(1, 2)[:, :, None, :]  # (B, C, 1, K)
    out = []
    for scale in length_scales:
        inv = 1.0 / (2 * scale * scale)
        cols = (torch.exp(-dx2 * inv) * m).transpose(1, 2)  # (B, K, w), padding removed
        rows = torch.exp(-dy2 * inv)  # (B, h, K)
        density = (rows @ cols)[:, None]  # (B, 1, h, w)
        out += [density, ((rows[:, None] * vals) @ cols[:, None]) / (density + 1e-6)]
    return torch.cat(out, 1)


class SetConvEncoder(nn.Module):
    """:func:`setconv_grid` at learnable length scales (initialised at half, one and two cells of a
    ``base_resolution`` grid), then a pointwise MLP to ``dim`` channels: no kernel is sized in
    pixels, so the features mean the same at any resolution."""

    def __init__(self, channels: int, dim: int = 32, base_resolution: int = 32):
        super().__init__()
        self.log_scales = nn.Parameter(torch.log(torch.tensor([0.5, 1.0, 2.0]) / base_resolution))
        width = len(self.log_scales) * (1 + channels)
        self.mlp = nn.Sequential(nn.Conv2d(width, dim, 1), nn.SiLU(), nn.Conv2d(dim, dim, 1))

    def forward(self, coords, values, valid, h: int, w: int) -> torch.Tensor:
        return self.mlp(setconv_grid(coords, values, valid, h, w, self.log_scales.exp()))


def fourier_features(coords: torch.Tensor, bands: int = 6) -> torch.Tensor:
    """``(..., 4 bands)``: sines and cosines of ``2 pi 2^i`` times each coordinate, ``i < bands``."""
    freqs = (2.0 ** torch.arange(bands, device=coords.device, dtype=coords.dtype)) * (2 * math.pi)
    ang = (coords[..., None] * freqs).flatten(-2)
    return torch.cat([ang.sin(), ang.cos()], -1)


class AttentionEncoder(nn.Module):
    """Cross-attention from every grid point (queries: Fourier features of its coordinates) to the
    context points (keys and values: Fourier features of their coordinates with their values),
    ``heads`` heads through ``scaled_dot_product_attention``, padded points masked out; then a
    pointwise MLP. Cost ``O(H W K dim)``; ``(B, dim, h, w)``."""

    def __init__(self, channels: int, dim: int = 64, heads: int = 4, bands: int = 6):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads, self.bands = heads, bands
        f = 4 * bands
        self.query = nn.Linear(f, dim)
        self.key = nn.Linear(f + channels, dim)
        self.value = nn.Linear(f + channels, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, coords, values, valid, h: int, w: int) -> torch.Tensor:
        b = coords.shape[0]
        g = grid_points(h, w, coords.device, coords.dtype)
        q = self.query(fourier_features(g, self.bands)).expand(b, -1, -1)
        kv_in = torch.cat([fourier_features(coords, self.bands), values], -1)
        k, v = self.key(kv_in), self.value(kv_in)

        def split(t):
            return t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)

        mask = valid[:, None, None, :]
        att = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
        att = att.transpose(1, 2).reshape(b, h * w, -1)
        out = att + self.mlp(att)
        return out.transpose(1, 2).reshape(b, -1, h, w)


ENCODERS = {"sparse-setconv": SetConvEncoder, "sparse-attention": AttentionEncoder}

"""Point-set encoders: a point set (:mod:`ddo_conditional.data.points`) -> features on any grid."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.points import grid_points


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

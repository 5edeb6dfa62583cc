"""Orthonormal DCT-II / DCT-III over the last two axes, as matrix products.

For the image sizes DDO works at (32..256) two small matrix products are faster than FFT-based
DCTs on CPU and GPU and are exact to rounding. The matrices are built once per
``(size, device, dtype)`` and cached.
"""
from __future__ import annotations

import functools
import math

import torch


@functools.lru_cache(maxsize=64)
def dct_matrix(n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``M`` of shape ``(n, n)``: ``X = M @ x``, ``x = M.T @ X``.

    ``M[k, j] = c_k cos(pi k (j + 1/2) / n)`` with ``c_0 = sqrt(1/n)``, ``c_k = sqrt(2/n)``.
    """
    k = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(math.pi * k * (j + 0.5) / n) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.to(device=device, dtype=dtype)


def _mats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = x.shape[-2], x.shape[-1]
    return dct_matrix(h, x.device, x.dtype), dct_matrix(w, x.device, x.dtype)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II of ``x: (..., H, W)``."""
    mh, mw = _mats(x)
    return mh @ x @ mw.transpose(0, 1)


def idct2(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (orthonormal DCT-III), ``x: (..., H, W)``."""
    mh, mw = _mats(x)
    return mh.transpose(0, 1) @ x @ mw


def mode_eigenvalues(img_dim: int | tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Laplacian eigenvalues ``ky^2 + kx^2`` of the DCT modes, shape ``(H, W)``."""
    h, w = (img_dim, img_dim) if isinstance(img_dim, int) else img_dim
    ky = torch.arange(h, device=device, dtype=dtype)[:, None]
    kx = torch.arange(w, device=device, dtype=dtype)[None, :]
    return ky**2 + kx**2

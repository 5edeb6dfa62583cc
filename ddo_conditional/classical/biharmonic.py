"""Biharmonic inpainting of sparse context, batched in torch on any device.

It solves the linear system of scikit-image's ``inpaint_biharmonic`` exactly: for every unobserved
pixel ``p``, ``sum_j A[p, j] u_j = 0`` with ``A[p, :]`` the biharmonic stencil ``laplace(laplace(delta_p))``
(scipy's 5x5 stencil, truncated at the image border and built there with scipy's ``reflect`` mode),
observed pixels fixed; then each channel is clipped to the range of its observed values.

Instead of one sparse solve per image, it uses the inverse ``G = (A + 11^T / N)^{-1}`` of the whole
grid's operator, computed once per grid size. ``A`` has the constants as its only null space (every
stencil row sums to 0); for observed pixels ``K`` the solution is

    u = Phi x_K + (mean(Phi x_K) / mean(Phi 1_K)) (1 - Phi 1_K),    Phi = G[:, K] G[K, K]^{-1}

(block inversion of the system whose observed rows are replaced by identity rows; the second term
undoes the rank-one term added to make ``A`` invertible). Per batch this is a batched ``K x K``
solve and one ``N x N`` by ``N x B (C + 1)`` product, in float64.

Above :data:`MAX_PIXELS` (64x64) the dense ``G`` no longer pays (2.1 GB and an ``N^3`` inverse at
128x128); there each image's sparse system (observed rows replaced by identity rows) is factorised
and solved on its own (scipy's ``splu``), the same system as scikit-image's.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from ddo.api import Knob, guard

MAX_PIXELS = 64 * 64  # G is N x N float64: 134 MB at 64x64


def stencil_matrix(h: int, w: int, radius: int = 2) -> np.ndarray:
    """The ``(h w, h w)`` biharmonic operator of scikit-image's inpainting (row ``p``: pixel ``p``'s stencil),
    dense (:func:`sparse_stencil` holds it without the ``N x N`` array)."""
    return sparse_stencil(h, w, radius).toarray()


@functools.lru_cache(maxsize=4)
def sparse_stencil(h: int, w: int, radius: int = 2):
    """The biharmonic operator as a scipy CSR matrix: row ``p`` is ``laplace(laplace(delta_p))`` on the
    window of radius ``radius`` around pixel ``p``, truncated at the image border (scipy's ``reflect``
    mode inside the window), as scikit-image's inpainting builds it."""
    from scipy.ndimage import laplace
    from scipy.sparse import csr_matrix

    rows, cols, vals, cache = [], [], [], {}
    for y in range(h):
        for x in range(w):
            y0, y1, x0, x1 = max(y - radius, 0), min(y + radius + 1, h), max(x - radius, 0), min(x + radius + 1, w)
            key = (y1 - y0, x1 - x0, y - y0, x - x0)
            if key not in cache:
                delta = np.zeros(key[:2])
                delta[key[2], key[3]] = 1.0
                coef = laplace(laplace(delta))
                r, c = np.nonzero(coef)
                cache[key] = (r, c, coef[r, c])
            r, c, v = cache[key]
            rows.append(np.full(len(r), y * w + x))
            cols.append((r + y0) * w + c + x0)
            vals.append(v)
    return csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, h * w))


def sparse_bytes(resolution: int) -> float:
    """A bound on the sparse factorisation of a ``resolution``-square grid: nested dissection keeps
    ``O(N log N)`` entries; 64 per pixel and level of ``log2 N``, float64 and indices."""
    n = resolution * resolution
    return 12.0 * 64 * n * max(1.0, np.log2(n))


def _sparse_inpaint(values: np.ndarray, indices: np.ndarray, h: int, w: int) -> np.ndarray:
    """One image ``(h w, C)`` from ``values (K, C)`` at distinct flat ``indices``: the biharmonic
    system with observed rows replaced by identity rows, factorised once for all channels."""
    from scipy.sparse import diags
    from scipy.sparse.linalg import splu

    observed = np.zeros(h * w)
    observed[indices] = 1.0
    system = diags(1.0 - observed) @ sparse_stencil(h, w) + diags(observed)
    rhs = np.zeros((h * w, values.shape[1]))
    rhs[indices] = values
    u = splu(system.tocsc()).solve(rhs)
    return np.clip(u, values.min(0), values.max(0))


@functools.lru_cache(maxsize=4)
def _green(h: int, w: int) -> torch.Tensor:
    n = h * w
    a = torch.from_numpy(stencil_matrix(h, w))
    return torch.linalg.inv(a + 1.0 / n)


def green(h: int, w: int, device=None) -> torch.Tensor:
    """``G = (A + 11^T / N)^{-1}`` of an ``h x w`` grid, float64, on ``device`` (computed once per size;
    grids up to :data:`MAX_PIXELS`)."""
    if h * w > MAX_PIXELS:
        raise ValueError(f"the dense inverse is for grids up to {MAX_PIXELS} pixels, got {h}x{w}")
    # the stencil matrix, its inverse and the solver's workspace: N x N float64 each
    guard(f"biharmonic inpainting at {h}x{w}", lambda resolution: 4 * 8 * (resolution * resolution) ** 2,
          [Knob("resolution", "--resolution", max(h, w))], device)
    return _green(h, w).to(device)


def biharmonic_inpaint(values: torch.Tensor, indices: torch.Tensor, h: int, w: int,
                       valid: torch.Tensor | None = None) -> torch.Tensor:
    """Biharmonic inpainting ``(B, C, H, W)`` of ``values (B, K, C)`` observed at flat ``indices (B, K)``,
    equal to ``skimage.restoration.inpaint_biharmonic`` (to float64 rounding), in ``values``' dtype.
    ``valid (B, K)``: ``False`` marks padding (entries that repeat an observed pixel; images with
    fewer observations share the batch), which takes no part in the solve."""
    b, k, c = values.shape
    if h * w > MAX_PIXELS:
        return _inpaint_each(values, indices, h, w, valid)
    g = green(h, w, values.device)
    idx = indices.long()
    x = values.to(torch.float64)
    gkk = g[idx[:, :, None], idx[:, None, :]]                                  # (B, K, K)
    rhs = torch.cat([x, x.new_ones(b, k, 1)], -1)
    if valid is not None:  # padding: identity rows and columns, zero right-hand side, so zero coefficients
        m = valid.to(torch.float64)
        eye = torch.eye(k, dtype=torch.float64, device=values.device)
        gkk = gkk * (m[:, :, None] * m[:, None, :]) + eye * (1 - m)[:, :, None]
        rhs = rhs * m[..., None]
    coef = torch.linalg.solve(gkk, rhs)                                         # (B, K, C + 1)
    # G[:, K] coef for every image as one GEMM: the coefficients scattered into an (N, B (C + 1)) matrix
    # (added, so that padding, which repeats an index with a zero coefficient, changes nothing)
    w_full = torch.zeros(b, h * w, c + 1, dtype=torch.float64, device=values.device)
    w_full.scatter_add_(1, idx[..., None].expand(-1, -1, c + 1), coef)
    phi = (g @ w_full.transpose(0, 1).reshape(h * w, b * (c + 1))).reshape(h * w, b, c + 1).transpose(0, 1)
    phi_x, phi_1 = phi[..., :c], phi[..., c:]
    u = phi_x + phi_x.mean(1, keepdim=True) / phi_1.mean(1, keepdim=True) * (1 - phi_1)
    u = torch.minimum(torch.maximum(u, x.amin(1, keepdim=True)), x.amax(1, keepdim=True))
    u = u.scatter(1, idx[..., None].expand(-1, -1, c), x)                      # observed pixels exactly
    return u.transpose(1, 2).reshape(b, c, h, w).to(values.dtype)


def _inpaint_each(values: torch.Tensor, indices: torch.Tensor, h: int, w: int, valid) -> torch.Tensor:
    """:func:`biharmonic_inpaint` one image at a time by sparse factorisation (grids above :data:`MAX_PIXELS`)."""
    guard(f"biharmonic inpainting at {h}x{w}", sparse_bytes, [Knob("resolution", "--resolution", max(h, w))],
          values.device)
    b, k, c = values.shape
    keep = torch.ones(b, k, dtype=torch.bool) if valid is None else valid.bool().cpu()
    x, idx = values.detach().to("cpu", torch.float64).numpy(), indices.long().cpu().numpy()
    out = np.empty((b, h * w, c))
    for i in range(b):
        sel = keep[i].numpy()
        pix, first = np.unique(idx[i][sel], return_index=True)
        out[i] = _sparse_inpaint(x[i][sel][first], pix, h, w)
        out[i][pix] = x[i][sel][first]  # observed pixels exactly
    u = torch.from_numpy(out).to(values.device)
    return u.transpose(1, 2).reshape(b, c, h, w).to(values.dtype)


__all__ = ["biharmonic_inpaint", "green", "stencil_matrix", "sparse_stencil", "MAX_PIXELS"]

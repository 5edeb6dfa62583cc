"""The thin-plate spline of a point set (:mod:`ddo_conditional.data.points`) on any grid, with Rippa's
leave-one-out error: the interpolation the point-set conditionings refine."""
from __future__ import annotations

import torch

from ..data.points import grid_points


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


__all__ = ["tps_system", "tps_fit", "tps_eval", "tps_grid", "point_context"]

"""Darcy's inverse task through its physics: the coefficient fitted to the observed pressures.

The coefficient is written ``a = m + r tanh(phi / width)`` (``m``, ``r`` the midpoint and half-range of
its two values), started from the co-kriged coefficient, and ``phi`` is moved by L-BFGS to lower the
misfit ``J = sum_k (u(a)_k - d_k)^2 / (2 sum_k d_k^2)`` of the solved pressure ``u(a)`` at the observed
pixels. The gradient is the adjoint one: with ``A(a) u = 1`` and ``A`` symmetric, ``A(a) lam = dJ/du``
and ``dJ/da = -lam^T (dA/da) u``, which autograd takes through :func:`apply_operator` with ``lam`` and
``u`` held fixed. Each evaluation costs one factorisation and two solves. Where points of the
coefficient are observed too (the joint task), ``J`` adds their misfit in the tanh's units,
``sum_j (tanh(phi_j / width) - s_j)^2 / (2 K_a)`` with ``s_j = +-1``: a point of the coefficient is
known exactly, so its term outweighs the pressures' relative misfit. The regulariser is a smoothed
total variation of the coefficient's shape ``t = tanh(phi / width)``, ``tv * sum sqrt(|D t|^2 + eps^2) h``
(``D`` forward differences, the last row and column repeated; ``h = 1 / (s - 1)``): about ``tv``
times the interfaces' length on the unit square times the jump of ``t``, the same weight on every grid.
It favours few and short interfaces, as a two-valued field has; the start (the Gaussian estimate) and
the budget of evaluations do the rest. The weight, the budget and the optimiser were chosen on
128x128 pairs (README: The field's yardstick).
"""
from __future__ import annotations

import numpy as np
import torch
from ddo.api import DARCY_DEFAULTS, darcy_factor

INVERSION_EVALUATIONS = 100  # solves of the fit (README: The field's yardstick)
INVERSION_WIDTH = 0.5  # of the tanh in units of phi, whose start spans [-1, 1] between the two values
INVERSION_TV, TV_EPS = 8e-7, 1e-2  # the total variation's weight and smoothing (module doc)


def apply_operator(a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``-div(a grad u)`` on the interior nodes of an ``s x s`` grid, ``(s - 2, s - 2)``: the 5-point
    scheme the solver :func:`ddo.api.darcy_solve` inverts (face coefficients the averages of ``a``; ``u`` is 0 on the
    boundary), differentiable in ``a``."""
    s = a.shape[-1]
    ac, uc = a[1:-1, 1:-1], u[1:-1, 1:-1]
    out = torch.zeros_like(uc)
    for sl in ((slice(None, -2), slice(1, -1)), (slice(2, None), slice(1, -1)),
               (slice(1, -1), slice(None, -2)), (slice(1, -1), slice(2, None))):
        out = out + (ac + a[sl]) / 2 * (uc - u[sl])
    return out * (s - 1) ** 2


def misfit_and_gradient(phi: torch.Tensor, pixels: torch.Tensor, pressures: torch.Tensor,
                        known: tuple | None = None, tv: float = INVERSION_TV) -> tuple[float, torch.Tensor]:
    """``(J, dJ/dphi)`` of the module doc for the coefficient of ``phi (s, s)`` (float64), its total
    variation weighted by ``tv``; ``known``, the observed coefficient ``(flat pixels (K_a,), values
    (K_a,))``, adds its misfit."""
    s = phi.shape[-1]
    phi = phi.detach().requires_grad_(True)
    t = torch.tanh(phi / INVERSION_WIDTH)  # the coefficient's shape, in [-1, 1]
    a = _from_shape(t)
    solve = darcy_factor(a.detach().numpy())
    u = torch.from_numpy(solve(np.ones((s, s))))
    scale = float((pressures ** 2).sum()) or 1.0
    resid = u.flatten()[pixels] - pressures
    dj_du = torch.zeros(s * s, dtype=torch.float64).index_add_(0, pixels, resid / scale)
    lam = torch.from_numpy(solve(dj_du.reshape(s, s).numpy()))
    padded = torch.cat([t, t[-1:]], 0)
    padded = torch.cat([padded, padded[:, -1:]], 1)
    dy, dx = padded[1:, :-1] - t, padded[:-1, 1:] - t
    variation = tv * torch.sqrt(dy ** 2 + dx ** 2 + TV_EPS ** 2).sum() / (s - 1)
    total = variation - (lam[1:-1, 1:-1] * apply_operator(a, u)).sum()
    j = float((resid ** 2).sum() / (2 * scale) + variation.detach())
    if known is not None and len(known[0]):
        lo, hi = DARCY_DEFAULTS["low"], DARCY_DEFAULTS["high"]
        target = torch.sign(known[1].double() - (hi + lo) / 2)
        term = ((t.flatten()[known[0].long()] - target) ** 2).sum() / (2 * len(target))
        total = total + term
        j += float(term.detach())
    total.backward()
    return j, phi.grad


def _from_shape(t: torch.Tensor) -> torch.Tensor:
    lo, hi = DARCY_DEFAULTS["low"], DARCY_DEFAULTS["high"]
    return (hi + lo) / 2 + (hi - lo) / 2 * t


def coefficient(phi: torch.Tensor) -> torch.Tensor:
    return _from_shape(torch.tanh(phi / INVERSION_WIDTH))


def darcy_invert(pixels: torch.Tensor, pressures: torch.Tensor, start: torch.Tensor,
                 evaluations: int = INVERSION_EVALUATIONS, known: tuple | None = None) -> torch.Tensor:
    """The coefficient ``(s, s)`` whose solved pressure fits ``pressures (K,)`` at flat ``pixels (K,)``,
    from the estimate ``start (s, s)`` (physical units; the co-kriged coefficient before thresholding),
    in at most ``evaluations`` solves; ``known`` as in :func:`misfit_and_gradient`. Not thresholded:
    :func:`~ddo_conditional.pde.routes.threshold` it for the two-valued field."""
    lo, hi = DARCY_DEFAULTS["low"], DARCY_DEFAULTS["high"]
    half = (hi - lo) / 2
    # start inside the tanh's range, so that a coefficient kriged beyond the two values is not saturated
    phi = torch.nn.Parameter(((start.double() - (hi + lo) / 2) / half).clamp(-1, 1))
    opt = torch.optim.LBFGS([phi], lr=1.0, max_iter=evaluations, max_eval=evaluations, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)
    pixels, pressures = pixels.long(), pressures.double()

    def closure():
        j, phi.grad = misfit_and_gradient(phi, pixels, pressures, known)
        return torch.tensor(j, dtype=torch.float64)

    opt.step(closure)
    return coefficient(phi.detach())


__all__ = ["darcy_invert", "misfit_and_gradient", "apply_operator", "coefficient", "INVERSION_EVALUATIONS"]

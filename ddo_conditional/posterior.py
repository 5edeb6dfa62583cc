"""Darcy's forward task by its exact posterior: the coefficient is ``12`` where a Gaussian field ``g`` is
positive and ``3`` elsewhere, so ``K`` observed coefficient values are ``K`` observed signs of ``g``.

:func:`sign_gibbs` draws ``g`` at the observed pixels from its Gaussian prior restricted to those signs
(a truncated multivariate normal, by Gibbs sampling one coordinate at a time); each draw is completed to
the whole grid by conditional simulation (an unconditional field of the same law plus the kriged
difference at the points, :func:`~ddo_conditional.kriging.krige`), thresholded and solved. The mean of
the solved pressures is the posterior mean of ``u`` (the estimate of least expected squared error, up
to the Monte Carlo error), the majority of the coefficients the most probable value per pixel. The
prior's covariance is estimated from fields drawn by the data's own generator
(:func:`ddo.api.periodic_grf`, its parameters :data:`ddo.api.DARCY_DEFAULTS`), with seeds apart from
the data's.
"""
from __future__ import annotations

import numpy as np
import torch
from ddo.api import DARCY_DEFAULTS, darcy_solve, periodic_grf, sample_generator
from scipy.special import log_ndtr, ndtri_exp

from .kriging import TorusGaussian, krige

POSTERIOR_SAMPLES, POSTERIOR_SWEEPS = 64, 200  # README: The field's yardstick
LATENT_FIELDS, LATENT_SEED = 1000, -1  # fields of the covariance estimate; the data's seed is positive


def _draw(n: int, seeds: range) -> torch.Tensor:
    d = DARCY_DEFAULTS
    return periodic_grf([sample_generator(LATENT_SEED, i) for i in seeds], n, d["alpha"], d["tau"], 1.0).double()


def latent_model(n: int) -> TorusGaussian:
    """The coefficient's latent Gaussian field on the ``n x n`` torus: mean 0, covariance estimated from
    :data:`LATENT_FIELDS` draws of the data's generator."""
    cov = TorusGaussian.fit(_draw(n, range(LATENT_FIELDS))[:, None], mean_modes=0).cov
    return TorusGaussian(torch.zeros(1, n, n, dtype=torch.float64), cov)


def sign_gibbs(cov: np.ndarray, signs: np.ndarray, samples: int, sweeps: int, seed: int = 0) -> np.ndarray:
    """``(samples, K)`` draws of ``N(0, cov)`` restricted to ``sign(x_k) = signs_k``: ``sweeps`` Gibbs
    sweeps from half a deviation on each observed side, the second half's sweeps kept at even spacing. Each coordinate given the
    others is normal with mean ``x_k - (Q x)_k / Q_kk`` and variance ``1 / Q_kk`` (``Q = cov^-1``), drawn
    on its side of 0 by the inverse CDF of the tail it keeps, in logs (stable far out in either tail)."""
    q = np.linalg.inv(cov)
    qd, rng = np.diag(q), np.random.default_rng(seed)
    x = 0.5 * signs.astype(np.float64) * np.sqrt(np.diag(cov))  # half a deviation on each observed side
    r = q @ x
    keep = set(np.linspace(sweeps // 2, sweeps - 1, samples).round().astype(int).tolist())
    out = []
    for sweep in range(sweeps):
        for k in range(len(x)):
            sd = qd[k] ** -0.5
            mean = x[k] - r[k] / qd[k]
            # z ~ N(0, 1) beyond alpha = -mean / sd on the observed side: z = -ndtri(U ndtr(-alpha)) above,
            # z = ndtri(U ndtr(alpha)) below, with U uniform on (0, 1], in logs (two observed neighbours of
            # opposite signs put alpha tens of standard deviations out, where ndtr underflows)
            log_u = np.log(1.0 - rng.random())
            z = -ndtri_exp(log_u + log_ndtr(mean / sd)) if signs[k] > 0 else ndtri_exp(log_u + log_ndtr(-mean / sd))
            new = mean + sd * z
            r += q[:, k] * (new - x[k])
            x[k] = new
        if sweep in keep:
            out.append(x.copy())
    return np.stack(out)


def darcy_posterior(model: TorusGaussian, pixels: torch.Tensor, coefficient: torch.Tensor,
                    samples: int = POSTERIOR_SAMPLES, sweeps: int = POSTERIOR_SWEEPS, seed: int = 0) -> torch.Tensor:
    """``(2, n, n)``: the majority coefficient and the posterior-mean pressure given the coefficient's
    values ``(K,)`` at flat ``pixels (K,)`` (physical units, the grid of ``model``)."""
    lo, hi = DARCY_DEFAULTS["low"], DARCY_DEFAULTS["high"]
    n, px = model.h, pixels.long()
    ch = torch.zeros_like(px)
    signs = torch.sign(coefficient.double() - (hi + lo) / 2).numpy()
    cov = model.observed_cov(ch, px).numpy()
    draws = sign_gibbs(cov + 1e-8 * np.diag(np.diag(cov)), signs, samples, sweeps, seed)
    free = _draw(n, range(10 ** 9 + seed * samples, 10 ** 9 + (seed + 1) * samples))
    coefs, pressures = [], []
    for g, z in zip(torch.from_numpy(draws), free):
        field = z + krige(model, ch, px, g - z.flatten()[px])[0]  # the mean is 0: krige is S_zy S_yy^-1 y
        a = torch.where(field > 0, hi, lo).double()
        coefs.append(a)
        pressures.append(torch.from_numpy(darcy_solve(a.numpy())))
    majority = torch.where(torch.stack(coefs).mean(0) > (hi + lo) / 2, hi, lo).double()
    return torch.stack([majority, torch.stack(pressures).mean(0)])


__all__ = ["latent_model", "sign_gibbs", "darcy_posterior", "POSTERIOR_SAMPLES", "POSTERIOR_SWEEPS"]

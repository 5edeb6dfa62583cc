"""Darcy's forward task by its posterior: the coefficient is ``12`` where a Gaussian field ``g`` is
positive and ``3`` elsewhere, so ``K`` observed coefficient values are ``K`` observed signs of ``g``.

:func:`sign_gibbs` draws ``g`` at the observed pixels from its Gaussian prior restricted to those signs
(a truncated multivariate normal, by Gibbs sampling one coordinate at a time); each draw is completed to
the whole grid by conditional simulation (an unconditional field of the same law plus the kriged
difference at the points, as :func:`~ddo_conditional.classical.kriging.krige` conditions), thresholded and solved. The mean of
the solved pressures estimates the posterior mean of ``u`` (the estimate of least expected squared
error), with the Monte Carlo error of the draws and the chain's; the majority of the coefficients is
the more probable value per pixel (ties go to the lower value). The prior's covariance is estimated
from fields drawn by the data's own generator (:func:`ddo.api.periodic_grf`, its parameters
:data:`ddo.api.DARCY_DEFAULTS`), with seeds apart from the data's. The model holds on the grid the
pairs are generated on (:data:`~ddo_conditional.pde.datasets.PAIR_NATIVE`): coarser copies are area averages, not two-valued.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from ddo.api import DARCY_DEFAULTS, darcy_solve, periodic_grf, sample_generator
from scipy.special import log_ndtr, ndtri_exp

from ..classical.kriging import TorusGaussian

POSTERIOR_SAMPLES, POSTERIOR_SWEEPS = 64, 2000  # README: The field's yardstick (200 sweeps had not mixed)
LATENT_FIELDS, LATENT_SEED = 1000, -1  # fields of the covariance estimate; the data's seed is positive


def _draw(n: int, seed: int, count: int) -> torch.Tensor:
    d = DARCY_DEFAULTS
    return periodic_grf([sample_generator(seed, i) for i in range(count)], n, d["alpha"], d["tau"], 1.0).double()


def latent_model(n: int) -> TorusGaussian:
    """The coefficient's latent Gaussian field on the ``n x n`` torus: mean 0 (the generator has no
    constant mode), covariance estimated from :data:`LATENT_FIELDS` draws of the data's generator."""
    cov = TorusGaussian.fit(_draw(n, LATENT_SEED, LATENT_FIELDS)[:, None], mean_modes=0).cov
    return TorusGaussian(torch.zeros(1, n, n, dtype=torch.float64), cov)


def sign_gibbs(cov: np.ndarray, signs: np.ndarray, samples: int, sweeps: int, seed: int = 0) -> np.ndarray:
    """``(samples, K)`` draws of ``N(0, cov)`` restricted to ``sign(x_k) = signs_k`` (``+-1``): Gibbs
    sweeps from half a deviation on each observed side, at least ``sweeps`` and ``2 samples``, the
    second half's kept at even spacing. Each coordinate given the others is normal with mean ``x_k -
    (Q x)_k / Q_kk`` and variance ``1 / Q_kk`` (``Q = cov^-1``), drawn on its side of 0 by the inverse CDF
    of the tail it keeps, in logs (stable far out in either tail)."""
    if samples < 1 or not np.isin(signs, (-1.0, 1.0)).all():
        raise ValueError("sign_gibbs draws at least one sample, given signs of +1 or -1")
    sweeps = max(sweeps, 2 * samples)
    q = np.linalg.inv(cov)
    qd, rng = np.diag(q), np.random.default_rng(seed)
    x = 0.5 * signs.astype(np.float64) * np.sqrt(np.diag(cov))  # a start the field's scale does not move
    keep = set(np.linspace(sweeps // 2, sweeps - 1, samples).round().astype(int).tolist())
    out = []
    for sweep in range(sweeps):
        r = q @ x  # afresh each sweep: the rank-one updates below accumulate rounding
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
                    samples: int = POSTERIOR_SAMPLES, sweeps: int = POSTERIOR_SWEEPS) -> torch.Tensor:
    """``(2, n, n)``: the majority coefficient and the posterior-mean pressure given the coefficient's
    two values ``(K,)`` at flat ``pixels (K,)`` (physical units, the grid of ``model``). The draws are a
    pure function of the observations (their hash seeds them), so images differ in their draws and a
    reconstruction repeats exactly."""
    lo, hi = DARCY_DEFAULTS["low"], DARCY_DEFAULTS["high"]
    draws = darcy_posterior_draws(model, pixels, coefficient, samples, sweeps)
    majority = torch.where(draws[:, 0].mean(0) > (hi + lo) / 2, hi, lo).double()
    return torch.stack([majority, draws[:, 1].mean(0)])


def darcy_posterior_draws(model: TorusGaussian, pixels: torch.Tensor, coefficient: torch.Tensor,
                          samples: int = POSTERIOR_SAMPLES, sweeps: int = POSTERIOR_SWEEPS) -> torch.Tensor:
    """``(samples, 2, n, n)``: the posterior's draws of the pair, each coefficient and the pressure it
    solves for (:func:`darcy_posterior` averages them)."""
    lo, hi = DARCY_DEFAULTS["low"], DARCY_DEFAULTS["high"]
    values = coefficient.double()
    if not bool(((values == lo) | (values == hi)).all()):
        raise ValueError(f"the posterior is given the coefficient's two values ({lo:g} or {hi:g}) on the grid the "
                         "pairs are generated on; coarser copies are area averages")
    n = model.h
    px, first = np.unique(pixels.long().numpy(), return_index=True)  # a pixel seen twice is one sign
    px, signs = torch.from_numpy(px), np.where(values.numpy()[first] > (hi + lo) / 2, 1.0, -1.0)
    ch = torch.zeros_like(px)
    seed = int.from_bytes(hashlib.sha256(px.numpy().tobytes() + signs.tobytes()).digest()[:4], "little")
    cov = model.observed_cov(ch, px).numpy()
    cov = cov + 1e-8 * np.diag(np.diag(cov))  # krige's nugget
    draws = sign_gibbs(cov, signs, samples, sweeps, seed)
    free = _draw(n, LATENT_SEED - 1 - seed, len(draws))  # seeds below the covariance's, one per image
    # conditional simulation, z + S_zy S_yy^-1 (g - z_y) (the mean is 0): one solve for every draw
    weights = torch.from_numpy(np.linalg.solve(cov, (draws - free.flatten(1)[:, px].numpy()).T))
    coefs, pressures = [], []
    for w, z in zip(weights.T, free):
        a = torch.where(z + model.apply(ch, px, w)[0] > 0, hi, lo).double()
        coefs.append(a)
        pressures.append(torch.from_numpy(darcy_solve(a.numpy())))
    return torch.stack([torch.stack(coefs), torch.stack(pressures).double()], 1)


__all__ = ["latent_model", "sign_gibbs", "darcy_posterior", "darcy_posterior_draws", "POSTERIOR_SAMPLES", "POSTERIOR_SWEEPS"]

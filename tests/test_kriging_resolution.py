"""Gaussian priors learned on one grid and used on another (ddo_conditional.classical.kriging's ``resampled``)."""
import math

import pytest
import torch

from ddo_conditional.classical.kriging import EmpiricalGaussian, TorusGaussian, krige, periodic_resample


def band_limited(coefs: torch.Tensor, n: int) -> torch.Tensor:
    """Fields ``(B, 1, n, n)`` on the periodic unit square, ``sum_k a_k cos 2 pi k.p + b_k sin 2 pi k.p`` over
    integer wavenumbers ``|k_y|, |k_x| <= K``; ``coefs: (B, 2, 2K + 1, 2K + 1)``, evaluated at pixel centres."""
    k = (coefs.shape[-1] - 1) // 2
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    ks = torch.arange(-k, k + 1, dtype=torch.float64)
    phase = 2 * math.pi * (ks[:, None, None, None] * p[None, None, :, None] + ks[None, :, None, None] * p[None, None, None, :])
    out = torch.einsum("byx,yxij->bij", coefs[:, 0], phase.cos()) + torch.einsum("byx,yxij->bij", coefs[:, 1], phase.sin())
    return out[:, None]


def test_periodic_resample_interpolates_band_limited_fields_exactly():
    coefs = torch.randn(3, 2, 7, 7, dtype=torch.float64)
    fine, coarse = band_limited(coefs, 40), band_limited(coefs, 16)
    torch.testing.assert_close(periodic_resample(coarse, 40, 40, centred=True), fine, rtol=0, atol=1e-10)
    torch.testing.assert_close(periodic_resample(fine, 16, 16, centred=True), coarse, rtol=0, atol=1e-10)
    torch.testing.assert_close(periodic_resample(coarse, 16, 16, centred=True), coarse, rtol=0, atol=1e-12)
    # samples at i / n (offsets): a covariance table keeps its value at offset 0 and its shape
    offsets = band_limited(coefs, 40)[..., ::5, ::5].clone()  # not centred: sample i at (5 i + 1/2) / 40
    assert float((periodic_resample(offsets, 16, 16) - coarse).abs().max()) > 1e-3  # the half-pixel shift matters


def test_a_torus_prior_learned_at_16_conditions_fields_at_32_zero_shot():
    """A stationary prior fitted to band-limited fields at 16x16 (with a mean field) and resampled to 32x32
    recovers an unseen field of the same kind at 32x32 from 120 of its pixels (more than its 49 modes), to
    rounding; a prior fitted at 32x32 itself gives the same estimate."""
    g = torch.Generator().manual_seed(0)
    train = torch.randn(400, 2, 7, 7, generator=g, dtype=torch.float64)
    train[:, 0, 3, 4] += 2.0  # a mean field cos 2 pi x_coordinate: the mean must move with the grid
    prior = TorusGaussian.fit(band_limited(train, 16), mean_modes=1).resampled(32, 32)
    assert (prior.h, prior.w) == (32, 32)
    truth = band_limited(torch.randn(1, 2, 7, 7, generator=g, dtype=torch.float64), 32)[0, 0].flatten()
    pixels = torch.randperm(32 * 32, generator=g)[:120]
    channels = torch.zeros(120, dtype=torch.long)
    est = krige(prior, channels, pixels, truth[pixels])[0].flatten()
    assert float((est - truth).abs().max()) < 1e-5 * float(truth.abs().max())
    native = TorusGaussian.fit(band_limited(train, 32), mean_modes=1)
    torch.testing.assert_close(krige(native, channels, pixels, truth[pixels])[0].flatten(), est, rtol=0, atol=1e-6)


def test_torus_resampling_keeps_the_pointwise_variance_and_is_the_identity_at_its_own_size():
    g = torch.Generator().manual_seed(1)
    prior = TorusGaussian.fit(band_limited(torch.randn(50, 2, 5, 5, generator=g, dtype=torch.float64), 16))
    assert prior.resampled(16, 16) is prior
    fine = prior.resampled(48, 48)
    assert fine.cov.shape == (1, 1, 48, 48) and fine.mean.shape == (1, 48, 48)
    torch.testing.assert_close(fine.cov[0, 0, 0, 0], prior.cov[0, 0, 0, 0], rtol=1e-10, atol=0)


@pytest.mark.parametrize("size", [(24, 24), (8, 8)])
def test_empirical_prior_resamples_its_training_fields(size):
    """Refining or coarsening resamples the mean and each centred field as images: constants stay constant,
    the model's rank (the number of fields) is kept, and its own size returns itself."""
    g = torch.Generator().manual_seed(2)
    fields = torch.randn(30, 2, 16, 16, generator=g, dtype=torch.float64) + torch.tensor([3.0, -1.0]).view(1, 2, 1, 1)
    prior = EmpiricalGaussian.fit(fields)
    assert prior.resampled(16, 16) is prior
    other = prior.resampled(*size)
    assert other.centred.shape == (30, 2 * size[0] * size[1]) and other.mean_.shape == (2, *size)
    flat = EmpiricalGaussian.fit(torch.ones(5, 1, 16, 16, dtype=torch.float64) * 4.0).resampled(*size)
    torch.testing.assert_close(flat.mean_, torch.full((1, *size), 4.0, dtype=torch.float64))
    torch.testing.assert_close(flat.centred, torch.zeros(5, size[0] * size[1], dtype=torch.float64))
    mode = {"mode": "bicubic", "align_corners": False} if size[0] > 16 else {"mode": "area"}
    mean_of_fields = torch.nn.functional.interpolate(fields.mean(0, keepdim=True), size=size, **mode)[0]
    torch.testing.assert_close(other.mean_, mean_of_fields, rtol=1e-10, atol=1e-10)

"""Gaussian conditioning (simple kriging and co-kriging) of multi-channel fields from sparse points.

A Gaussian model of fields ``(C, H, W)`` gives the best linear estimate of every channel at every
pixel from observations ``y`` of some channels at some pixels:
``E[z | y] = mu_z + S_zy (S_yy + j I)^-1 (y - mu_y)``, optimal when the fields are Gaussian. Two
models, both estimated from training fields:

- :class:`TorusGaussian`: deviations from a smooth mean field that are stationary on the periodic grid:
  the training mean kept to its lowest Fourier modes (a forcing's deterministic response lives
  there) and the cross-covariance tables ``cov[i, j, d] = Cov(x_i(p), x_j(p + d))`` (indices mod the
  grid) from the averaged cross-spectra of the deviations; the estimate is applied by FFT (a sum of
  correlations of sparse weights);
- :class:`EmpiricalGaussian`: a mean field and the sample covariance of the training fields (rank at
  most the number of fields), for fields with boundaries or otherwise not stationary.

Both are resolution-free: :meth:`TorusGaussian.resampled` and :meth:`EmpiricalGaussian.resampled` give
the same model on another grid (a prior learned from fields at 32x32 conditions fields at 128x128).

Observations are ``(channels (M,), pixels (M,), values (M,))``: ``values[m]`` is channel
``channels[m]`` at flat pixel ``pixels[m] = y * W + x``. Computations are in float64.
"""
from __future__ import annotations

import torch


class TorusGaussian:
    """Stationary Gaussian fields on an ``H x W`` torus (see the module doc)."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        self.mean, self.cov = mean.double(), cov.double()  # (C, H, W), (C, C, H, W)
        self.channels, _, self.h, self.w = self.cov.shape
        self._spectra = torch.fft.fft2(self.cov)

    @classmethod
    def fit(cls, fields: torch.Tensor, mean_modes: int = 4) -> "TorusGaussian":
        """Estimate from training fields ``(n, C, H, W)``; the mean keeps the integer wavenumbers
        ``|m_x|, |m_y| <= mean_modes`` of the sample mean (0: a constant per channel)."""
        x = fields.double()
        n, _, h, w = x.shape
        my = torch.fft.fftfreq(h, 1.0 / h).abs()[:, None]
        mx = torch.fft.fftfreq(w, 1.0 / w).abs()[None, :]
        low = ((my <= mean_modes) & (mx <= mean_modes)).double()
        mean = torch.fft.ifft2(torch.fft.fft2(x.mean(0)) * low).real
        f = torch.fft.fft2(x - mean)
        spectra = torch.einsum("nihw,njhw->ijhw", f.conj(), f) / (n * h * w)
        return cls(mean, torch.fft.ifft2(spectra).real)

    def mean_field(self) -> torch.Tensor:
        return self.mean.clone()

    def resampled(self, h: int, w: int) -> "TorusGaussian":
        """The same stationary model on an ``h x w`` torus: the mean (at pixel centres) and the covariance
        tables (at offsets), functions on the periodic square, Fourier-interpolated (modes beyond the coarser grid's are zero:
        the model says nothing of scales its training grid did not hold)."""
        if (h, w) == (self.h, self.w):
            return self
        return TorusGaussian(periodic_resample(self.mean, h, w, centred=True), periodic_resample(self.cov, h, w))

    def observed_cov(self, channels: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """``S_yy (M, M)``."""
        py, px = pixels // self.w, pixels % self.w
        dy = (py[None, :] - py[:, None]) % self.h
        dx = (px[None, :] - px[:, None]) % self.w
        return self.cov[channels[:, None], channels[None, :], dy, dx]

    def apply(self, channels: torch.Tensor, pixels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``S_zy weights`` as fields ``(C, H, W)``: ``sum_m cov[i, c_m, p_m - q] weights_m`` at ``(i, q)``;
        ``weights (M, R)``: ``R`` columns at once, ``(R, C, H, W)``."""
        w = weights.double().view(len(channels), -1).T  # (R, M)
        sparse = torch.zeros(w.shape[0], self.channels, self.h * self.w, dtype=torch.float64)
        sparse.index_put_((torch.arange(w.shape[0])[:, None], channels[None], pixels[None]), w, accumulate=True)
        f = torch.fft.fft2(sparse.view(-1, self.channels, self.h, self.w))  # (R, C_obs, H, W)
        # g_i(q) = sum_j sum_p A_j(p) cov[i, j, p - q]  ->  G_i = sum_j F(A_j) conj(F(cov[i, j]))
        out = torch.fft.ifft2(torch.einsum("rjhw,ijhw->rihw", f, self._spectra.conj())).real
        return out[0] if weights.dim() == 1 else out

    def variance(self) -> torch.Tensor:
        """The prior's pointwise variance ``(C, H, W)``."""
        return self.cov[torch.arange(self.channels), torch.arange(self.channels), 0, 0].view(-1, 1, 1).expand(
            -1, self.h, self.w).clone()

    def cross_cov(self, channels: torch.Tensor, pixels: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """Rows ``rows`` of ``S_zy (C H W, M)``: the covariance of each channel at each pixel (flat ``i H W + q``)
        with each observation."""
        flat = torch.arange(self.channels * self.h * self.w)[rows]
        i, q = flat // (self.h * self.w), flat % (self.h * self.w)
        dy = (pixels[None, :] // self.w - q[:, None] // self.w) % self.h
        dx = (pixels[None, :] % self.w - q[:, None] % self.w) % self.w
        return self.cov[i[:, None], channels[None, :], dy, dx]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` fields ``(n, C, H, W)`` drawn from the model: white noise filtered, frequency by frequency, by
        the principal square root of the transposed cross-spectral matrix (Hermitian, so the fields are real;
        transposed, so that ``Cov(y_i(p), y_j(p + d)) = cov[i, j, d]`` as :meth:`fit` estimates it)."""
        lam, vec = torch.linalg.eigh(self._spectra.conj().permute(2, 3, 0, 1))  # (H, W, C), (H, W, C, C)
        root = vec @ torch.diag_embed(lam.clamp_min(0).sqrt().to(vec.dtype)) @ vec.mH
        noise = torch.randn(n, self.channels, self.h, self.w, generator=generator, dtype=torch.float64)
        f = torch.einsum("hwij,njhw->nihw", root, torch.fft.fft2(noise))
        return self.mean + torch.fft.ifft2(f).real

    def dense(self) -> torch.Tensor:
        """The full covariance ``(C H W, C H W)`` (small grids only; for tests)."""
        c, h, w = self.channels, self.h, self.w
        idx = torch.arange(h * w)
        ch = torch.arange(c).repeat_interleave(h * w)
        return self.observed_cov(ch, idx.repeat(c))


class EmpiricalGaussian:
    """The mean field and the sample covariance of training fields (see the module doc)."""

    def __init__(self, mean: torch.Tensor, centred: torch.Tensor):
        self.mean_, self.centred = mean.double(), centred.double()  # (C, H, W), (n, C H W) / sqrt(n - 1)
        self.channels, self.h, self.w = self.mean_.shape

    @classmethod
    def fit(cls, fields: torch.Tensor) -> "EmpiricalGaussian":
        x = fields.double()
        mean = x.mean(0)
        return cls(mean, (x - mean).flatten(1) / max(1, x.shape[0] - 1) ** 0.5)

    def mean_field(self) -> torch.Tensor:
        return self.mean_.clone()

    def resampled(self, h: int, w: int) -> "EmpiricalGaussian":
        """The model on an ``h x w`` grid of the same square: the mean and every centred training field
        resampled as images (bicubic between pixel centres to refine, area averages to coarsen), so the
        covariance stays their sample covariance."""
        if (h, w) == (self.h, self.w):
            return self
        n = self.centred.shape[0]
        fields = torch.cat([self.mean_[None], self.centred.view(n, self.channels, self.h, self.w)])
        if h >= self.h and w >= self.w:
            out = torch.nn.functional.interpolate(fields, size=(h, w), mode="bicubic", align_corners=False)
        else:
            out = torch.nn.functional.interpolate(fields, size=(h, w), mode="area")
        return EmpiricalGaussian(out[0], out[1:].flatten(1))

    def _columns(self, channels, pixels) -> torch.Tensor:
        return self.centred[:, channels * self.h * self.w + pixels]  # (n, M)

    def observed_cov(self, channels, pixels) -> torch.Tensor:
        a = self._columns(channels, pixels)
        return a.T @ a

    def apply(self, channels, pixels, weights) -> torch.Tensor:
        out = self.centred.T @ (self._columns(channels, pixels) @ weights.double().view(len(channels), -1))
        fields = out.T.reshape(-1, self.channels, self.h, self.w)
        return fields[0] if weights.dim() == 1 else fields

    def variance(self) -> torch.Tensor:
        return (self.centred ** 2).sum(0).view(self.channels, self.h, self.w)

    def cross_cov(self, channels, pixels, rows: slice = slice(None)) -> torch.Tensor:
        return self.centred[:, rows].T @ self._columns(channels, pixels)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` fields ``(n, C, H, W)``: the mean plus Gaussian combinations of the centred training fields."""
        w = torch.randn(n, self.centred.shape[0], generator=generator, dtype=torch.float64)
        return self.mean_ + (w @ self.centred).view(n, self.channels, self.h, self.w)

    def dense(self) -> torch.Tensor:
        return self.centred.T @ self.centred


def periodic_resample(x: torch.Tensor, h: int, w: int, centred: bool = False) -> torch.Tensor:
    """Fourier interpolation of periodic samples ``x: (..., H, W)`` onto ``h x w`` (float64): the modes
    both grids hold strictly below their Nyquist frequency keep their amplitudes, the others are zero.
    Samples sit at ``i / H`` (a function of offsets, such as a covariance table), or with ``centred`` at the
    pixel centres ``(i + 1/2) / H`` (a field), which moves by half a pixel of each grid."""
    hh, ww = x.shape[-2:]
    f = torch.fft.fft2(x.double())
    if centred:
        ky = torch.fft.fftfreq(hh, 1.0 / hh, dtype=torch.float64)[:, None]
        kx = torch.fft.fftfreq(ww, 1.0 / ww, dtype=torch.float64)[None, :]
        f = f * torch.exp(1j * torch.pi * (ky * (1 / h - 1 / hh) + kx * (1 / w - 1 / ww)))
    out = torch.zeros(*x.shape[:-2], h, w, dtype=f.dtype)
    ky, kx = (min(hh, h) - 1) // 2, (min(ww, w) - 1) // 2   # |k| <= k*: below both Nyquist frequencies
    for ys, yd in ((slice(0, ky + 1), slice(0, ky + 1)), (slice(hh - ky, hh), slice(h - ky, h))):
        for xs, xd in ((slice(0, kx + 1), slice(0, kx + 1)), (slice(ww - kx, ww), slice(w - kx, w))):
            out[..., yd, xd] = f[..., ys, xs]
    return torch.fft.ifft2(out).real * (h * w / (hh * ww))


def krige(model, channels: torch.Tensor, pixels: torch.Tensor, values: torch.Tensor,
          jitter: float = 1e-8) -> torch.Tensor:
    """The Gaussian conditional mean ``(C, H, W)`` float64 of every channel given the observations.

    ``jitter``: a nugget, each observation's prior variance times ``jitter`` added to the diagonal of
    ``S_yy`` (relative, so that channels of different units are treated alike); exact observations
    need only enough to keep the solve stable where close points make ``S_yy`` nearly singular, a
    sample covariance of few fields more. Duplicate observations (the same channel and pixel) are used once."""
    channels, pixels, values, key = _observations(model, channels, pixels, values)
    mean = model.mean_field()
    if len(key) == 0:
        return mean
    resid = values - mean.flatten()[key]
    weights = torch.linalg.solve(_regularised(model.observed_cov(channels, pixels), jitter), resid)
    return mean + model.apply(channels, pixels, weights)


def krige_with_std(model, channels: torch.Tensor, pixels: torch.Tensor, values: torch.Tensor,
                   jitter: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian posterior of every channel at every pixel given the observations: its mean (as
    :func:`krige`) and its pointwise std, ``sqrt(diag(S_zz) - diag(S_zy (S_yy + j)^-1 S_yz))``, each
    ``(C, H, W)`` float64 (``values (M, R)``: ``R`` right-hand sides, means ``(R, C, H, W)``, one std)."""
    channels, pixels, values, key = _observations(model, channels, pixels, values)
    mean = model.mean_field()
    var = model.variance().clone()
    if len(key) == 0:
        return (mean if values.dim() == 1 else mean.expand(values.shape[1], -1, -1, -1).clone()), var.sqrt()
    chol = torch.linalg.cholesky(_regularised(model.observed_cov(channels, pixels), jitter))
    flat_mean = mean.flatten()[key]
    resid = values - (flat_mean if values.dim() == 1 else flat_mean[:, None])
    weights = torch.cholesky_solve(resid.view(len(key), -1), chol)
    fields = model.apply(channels, pixels, weights)  # (R, C, H, W)
    n, chunk = var.numel(), max(1, STD_CHUNK // len(key))  # rows of S_zy at a time: bounded memory
    explained = torch.cat([torch.linalg.solve_triangular(chol, model.cross_cov(channels, pixels, slice(r, r + chunk)).T,
                                                         upper=False).pow(2).sum(0) for r in range(0, n, chunk)])
    std = (var.flatten() - explained).clamp_min(0).sqrt().view_as(mean)
    out = mean + fields
    return (out[0] if values.dim() == 1 else out), std


STD_CHUNK = 1 << 22  # entries of S_zy held at once by the pointwise std (32 MiB in float64)


def conditional_samples(model, channels: torch.Tensor, pixels: torch.Tensor, values: torch.Tensor, n: int,
                        generator: torch.Generator | None = None, jitter: float = 1e-8) -> torch.Tensor:
    """``n`` draws ``(n, C, H, W)`` of the Gaussian posterior given the observations, by conditional
    simulation: a draw ``z`` of the prior, moved by the kriging of the misfit at the observations,
    ``z + S_zy S_yy^-1 (y - z_y)``; their mean and std tend to :func:`krige_with_std`'s."""
    channels, pixels, values, key = _observations(model, channels, pixels, values)
    draws = model.sample(n, generator)
    if len(key) == 0:
        return draws
    misfit = values[:, None] - draws.flatten(1)[:, key].T  # (M, n)
    weights = torch.linalg.solve(_regularised(model.observed_cov(channels, pixels), jitter), misfit)
    return draws + model.apply(channels, pixels, weights).view(n, *draws.shape[1:])


def _observations(model, channels, pixels, values):
    """The observations with duplicates (the same channel and pixel) kept once: ``(channels, pixels, values,
    flat keys)``; ``values (M,)`` or ``(M, R)`` in float64."""
    key = channels.long() * (model.h * model.w) + pixels.long()
    key, first = _unique_first(key)
    return key // (model.h * model.w), key % (model.h * model.w), values.double()[first], key


def _regularised(s: torch.Tensor, jitter: float) -> torch.Tensor:
    """``S_yy`` with each observation's prior variance times ``jitter`` added to its diagonal."""
    return s + torch.diag(jitter * s.diagonal().clamp_min(1e-300))


def _unique_first(key: torch.Tensor):
    uniq, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((len(uniq),), len(key), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(len(key)), reduce="amin")
    return uniq, first


__all__ = ["TorusGaussian", "EmpiricalGaussian", "krige", "krige_with_std", "conditional_samples", "periodic_resample",
           "STD_CHUNK"]

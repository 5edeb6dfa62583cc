"""Reconstruction metrics on images in ``[0, 1]``, per image: PSNR, SSIM and relative L2 on query pixels
and on the full image; the CRPS and interval coverage of a predictive distribution (an ensemble of
samples, or a Gaussian) on query pixels."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def psnr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB per image for ``x, y: (B, C, H, W)`` in ``[0, 1]``; ``mask (B, 1, H, W)`` selects pixels."""
    err = (x - y) ** 2
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        mse = (err * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) * x.shape[1]).clamp_min(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _gaussian_window(device, dtype) -> torch.Tensor:
    r = torch.arange(SSIM_WINDOW, device=device, dtype=dtype) - SSIM_WINDOW // 2
    g = torch.exp(-(r**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def _pad_symmetric(t: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last two axes by ``pad`` mirrored about the edge, edge pixel repeated (``d c b a | a b c d``,
    scipy.ndimage's ``"reflect"``)."""
    t = torch.cat([t[..., :pad, :].flip(-2), t, t[..., -pad:, :].flip(-2)], dim=-2)
    return torch.cat([t[..., :pad].flip(-1), t, t[..., -pad:].flip(-1)], dim=-1)


def ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM ``(B, C, H, W)`` of images in ``[0, 1]``: the map of
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1)`` (Gaussian window of 11 taps, population statistics, scipy's symmetric padding)."""
    c = x.shape[1]
    win = _gaussian_window(x.device, x.dtype).expand(c, 1, -1, -1)
    pad = SSIM_WINDOW // 2

    def blur(t):
        return F.conv2d(_pad_symmetric(t, pad), win, groups=c)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))


def ssim(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SSIM per image: the SSIM map averaged over channels and over ``mask``'s pixels (or all of them;
    scikit-image's mean leaves out a 5-pixel border, which on 32x32 crops would drop half the pixels)."""
    m = ssim_map(x, y).mean(1, keepdim=True)
    if mask is None:
        return m.flatten(1).mean(1)
    return (m * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def relative_l2(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None,
                per_channel: bool = False) -> torch.Tensor:
    """``||x - y|| / ||y||`` of ``(B, C, H, W)`` fields over ``mask``'s pixels (``(B, 1, H, W)``, or all): per
    image ``(B,)``, or per image and channel ``(B, C)`` with ``per_channel``. The reference's squared norm
    is floored (1e-12 in float32, 1e-300 in float64) so that a zero field gives a finite error."""
    m = torch.ones_like(y[:, :1]) if mask is None else mask
    dims = 2 if per_channel else 1
    err = ((x - y) ** 2 * m).flatten(dims).sum(dims)
    ref = (y ** 2 * m).flatten(dims).sum(dims)
    return (err / ref.clamp_min(1e-300 if ref.dtype == torch.float64 else 1e-12)).sqrt()


def image_metrics(pred: torch.Tensor, truth: torch.Tensor, query_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``psnr_query``, ``ssim_query``, ``psnr_full``, ``ssim_full``, ``rel_l2_query``, ``rel_l2_full`` per image."""
    pred = pred.clamp(0, 1)
    x, y = 2 * pred - 1, 2 * truth - 1  # relative errors of the fields in the model's units, [-1, 1]
    return {"psnr_query": psnr(pred, truth, query_mask), "ssim_query": ssim(pred, truth, query_mask),
            "psnr_full": psnr(pred, truth), "ssim_full": ssim(pred, truth),
            "rel_l2_query": relative_l2(x, y, query_mask), "rel_l2_full": relative_l2(x, y)}


# --- probabilistic scores: what only a distribution gives ------------------------------------------
def crps_ensemble(samples: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The fair (unbiased) ensemble CRPS per image, ``(B,)``, averaged over ``mask``'s pixels and every
    channel: ``mean_i |X_i - y| - sum_{i,j} |X_i - X_j| / (2 m (m - 1))`` for ``samples (m, B, C, H, W)``,
    ``m >= 2`` (Ferro 2014; with ``m = 2`` it is ``(|X_1 - y| + |X_2 - y| - |X_1 - X_2|) / 2``). The pair
    sum comes from the sorted samples: ``sum_{i<j} (X_(j) - X_(i)) = sum_k (2k - m + 1) X_(k)``."""
    m = samples.shape[0]
    if m < 2:
        raise ValueError(f"the ensemble CRPS needs at least 2 samples, got {m}")
    skill = (samples - truth[None]).abs().mean(0)
    ordered = samples.sort(0).values
    k = torch.arange(m, device=samples.device, dtype=samples.dtype).view(-1, *([1] * truth.dim()))
    spread = ((2 * k - m + 1) * ordered).sum(0) / (m * (m - 1))
    return _masked_mean(skill - spread, mask)


def crps_gaussian(mean: torch.Tensor, std: torch.Tensor, truth: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """The CRPS of ``N(mean, std^2)`` at ``truth`` in closed form per image, ``(B,)``, over ``mask``'s pixels
    and every channel: ``std (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))``, ``z = (y - mean) / std``; a zero
    std gives ``|y - mean|``."""
    s = std.clamp_min(1e-12)
    z = (truth - mean) / s
    normal = torch.distributions.Normal(torch.zeros((), dtype=z.dtype), torch.ones((), dtype=z.dtype))
    crps = s * (z * (2 * normal.cdf(z) - 1) + 2 * normal.log_prob(z).exp() - 1 / math.sqrt(math.pi))
    return _masked_mean(torch.where(std > 0, crps, (truth - mean).abs()), mask)


def interval_coverage(mean: torch.Tensor, std: torch.Tensor, truth: torch.Tensor, k: float,
                      mask: torch.Tensor | None = None, min_std: float = 1e-3) -> torch.Tensor:
    """Per image, ``(B,)``: the share of ``mask``'s entries (every channel) with ``|y - mean| <= k std``, the std
    floored at ``min_std`` as the spread's calibration does (8-bit images are known to ~0.004)."""
    return _masked_mean(((truth - mean).abs() <= k * std.clamp_min(min_std)).to(mean.dtype), mask)


def distribution_metrics(truth: torch.Tensor, mask: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
                         samples: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``crps_query`` (of the ``samples`` when given, else of ``N(mean, std^2)``), ``coverage_1std`` and
    ``coverage_2std`` per image on the query pixels; images in ``[0, 1]``."""
    crps = crps_gaussian(mean, std, truth, mask) if samples is None else crps_ensemble(samples, truth, mask)
    return {"crps_query": crps, "coverage_1std": interval_coverage(mean, std, truth, 1.0, mask),
            "coverage_2std": interval_coverage(mean, std, truth, 2.0, mask)}


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over channels and ``mask``'s pixels (``(B, 1, H, W)``, or all) per image."""
    if mask is None:
        return x.flatten(1).mean(1)
    return (x * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) * x.shape[1]).clamp_min(1)

"""Noise and dissipation schedules of DDO.

All functions take ``t`` in ``[0, 1]`` as a tensor of any shape and return a tensor of the same
shape. ``t = 0`` is (almost) clean data, ``t = 1`` (almost) pure noise.

Noise schedule ``vp_cosine``: the cosine log-SNR ``lam(u) = -2 log tan(pi u / 2)`` truncated to
``[LOGSNR_MIN, LOGSNR_MAX] = [-10, 10]`` by an affine change of time, with variance-preserving
``alpha = sqrt(sigmoid(lambda))`` and ``sigma = sqrt(sigmoid(-lambda))``.

Dissipation schedules give the blur width ``sigma_blur(t)``; the heat-equation time is
``tau(t) = sigma_blur(t)^2 / 2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOGSNR_MAX = 10.0
LOGSNR_MIN = -10.0


def _u_of_logsnr(lam: float) -> float:
    return 2.0 / math.pi * math.atan(math.exp(-lam / 2.0))


_T0 = _u_of_logsnr(LOGSNR_MAX)
_T1 = _u_of_logsnr(LOGSNR_MIN)


def _u(t: torch.Tensor) -> torch.Tensor:
    return _T0 + (_T1 - _T0) * t


def logsnr(t: torch.Tensor) -> torch.Tensor:
    """Truncated cosine log-SNR ``lambda(t)``: 10 at ``t = 0``, -10 at ``t = 1``."""
    return -2.0 * torch.log(torch.tan(math.pi * _u(t) / 2.0))


def logsnr_normalized(t: torch.Tensor) -> torch.Tensor:
    """``(lambda(t) - lam_min) / (lam_max - lam_min)``, in ``[0, 1]``; an alternative time input."""
    return (logsnr(t) - LOGSNR_MIN) / (LOGSNR_MAX - LOGSNR_MIN)


def dlogsnr_dt(t: torch.Tensor) -> torch.Tensor:
    """Derivative of :func:`logsnr` with respect to ``t`` (negative everywhere)."""
    half = math.pi * _u(t) / 2.0
    return -math.pi * (_T1 - _T0) / (torch.tan(half) * torch.cos(half) ** 2)


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise scales of the variance-preserving process, ``alpha^2 + sigma^2 = 1``."""
    lam = logsnr(t)
    return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


def log_alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log alpha, log sigma)`` computed without cancellation (``logsigmoid``)."""
    lam = logsnr(t)
    return 0.5 * torch.nn.functional.logsigmoid(lam), 0.5 * torch.nn.functional.logsigmoid(-lam)


def sde_coefficients(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drift ``f(t)`` and diffusion ``g(t)`` of the VP SDE ``dz = f z dt + g dW``."""
    lam = logsnr(t)
    dlam = dlogsnr_dt(t)
    f = 0.5 * torch.sigmoid(-lam) * dlam
    g = torch.sqrt(-torch.sigmoid(-lam) * dlam)
    return f, g


NOISE_SCHEDULES = ("vp_cosine",)
DISSIPATION_SCHEDULES = ("linear", "sine", "log")


@dataclass(frozen=True)
class Dissipation:
    """Blur-width schedule ``sigma_blur(t)`` of heat dissipation.

    ``method`` is ``linear`` (``smin + t (smax - smin)``), ``sine``
    (``smin + (smax - smin) sin^2(pi t / 2)``) or ``log`` (geometric interpolation).
    ``sigma_blur_min = sigma_blur_max = 0`` turns blurring off.
    """

    method: str = "sine"
    sigma_blur_min: float = 0.05
    sigma_blur_max: float = 0.25

    def __post_init__(self) -> None:
        if self.method not in DISSIPATION_SCHEDULES:
            raise ValueError(
                f"unknown dissipation schedule {self.method!r}; known: {', '.join(DISSIPATION_SCHEDULES)}"
            )
        if self.sigma_blur_min < 0 or self.sigma_blur_max < self.sigma_blur_min:
            raise ValueError("need 0 <= sigma_blur_min <= sigma_blur_max")
        if self.method == "log" and self.sigma_blur_min <= 0 < self.sigma_blur_max:
            raise ValueError("the log dissipation schedule needs sigma_blur_min > 0")

    @property
    def is_identity(self) -> bool:
        return self.sigma_blur_max == 0.0

    def sigma_blur(self, t: torch.Tensor) -> torch.Tensor:
        lo, hi = self.sigma_blur_min, self.sigma_blur_max
        if self.method == "linear":
            return lo + t * (hi - lo)
        if self.method == "sine":
            return lo + (hi - lo) * torch.sin(math.pi * t / 2.0) ** 2
        if lo == hi:
            return torch.full_like(t, lo)
        return lo * torch.exp(t * math.log(hi / lo))

    def dsigma_blur_dt(self, t: torch.Tensor) -> torch.Tensor:
        lo, hi = self.sigma_blur_min, self.sigma_blur_max
        if self.method == "linear":
            return torch.full_like(t, hi - lo)
        if self.method == "sine":
            return (hi - lo) * (math.pi / 2.0) * torch.sin(math.pi * t)
        if lo == hi:
            return torch.zeros_like(t)
        return self.sigma_blur(t) * math.log(hi / lo)

    def tau(self, t: torch.Tensor) -> torch.Tensor:
        """Heat-equation time ``sigma_blur^2 / 2``."""
        return self.sigma_blur(t) ** 2 / 2.0

    def dtau_dt(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_blur(t) * self.dsigma_blur_dt(t)

"""Observation guidance: sparse observations steer the sampler of any DDO model, conditional or not.

The host applies a :class:`ddo.api.Guidance` after every sampler step (:func:`ddo.api.sample`,
``guidance=``) and gives it the state before and after the step and the network's ``x0`` estimate.
This module holds what is observed and how (the observation operators) and the methods registered
under ``ddo reconstruct --guidance KEY``:

- ``dps`` (diffusion posterior sampling): ``z_s <- z_s - zeta / ||r|| * grad_{z_t} ||r||^2`` with the
  misfit ``r = A(x0_hat(z_t)) - y`` of each image, so the step size is ``zeta`` over the misfit's norm as
  in DPS. The gradient is taken in the DCT modes the sampler moves (the blurring process is diagonal
  there) and preconditioned by the noise field's per-mode variance, the metric of the score; for white
  noise that is the identity and the gradient is the grid-space one, the DCT being orthonormal.
- ``projection`` (no network gradients, DDNM-style): the observed values replace the ``x0`` estimate's,
  ``x0' = x0_hat + A^+(y - A x0_hat)``, and the state moves with it, ``z_s <- z_s + alpha_s * DCT(x0' -
  x0_hat)`` per mode (``alpha_s`` blurs the correction as the forward process blurs the signal), which is
  the step taken from ``x0'`` with the step's own noise estimate; the last, clean step returns ``x0'``.

Operators: :class:`PixelObservation` (observed pixels of a mask, per channel where a pair observes
channels apart: the fixed-mask dataset's context) and :class:`PointObservation` (values at any
coordinates, read by the bilinear interpolation :func:`~ddo_conditional.data.points.bilinear` uses; no
pseudo-inverse, so ``dps`` only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DPS_SCALE = 1.0  # zeta of DPS's inpainting runs (its appendix: 1.0 for box and random inpainting)
PROJECTION_SCALE = 1.0  # the whole correction: the observed values imposed on the x0 estimate


class PixelObservation:
    """Observed pixels: ``values (B, C, H, W)`` in the model's units (zeros where unobserved) and
    ``mask (B, 1 or C, H, W)``, 1 where a value is observed."""

    pseudo_inverse = True

    def __init__(self, values: torch.Tensor, mask: torch.Tensor):
        if values.ndim != 4 or mask.ndim != 4 or mask.shape[1] not in (1, values.shape[1]):
            raise ValueError(f"pixel observations need values (B, C, H, W) and a mask (B, 1 or C, H, W), got "
                             f"{tuple(values.shape)} and {tuple(mask.shape)}")
        self.values, self.mask = values, mask

    def repeat(self, k: int) -> "PixelObservation":
        """The observations of ``k`` samples per image (stream-major, as the sampler tiles its rows)."""
        return PixelObservation(self.values.repeat(k, 1, 1, 1), self.mask.repeat(k, 1, 1, 1))

    def check(self, shape) -> None:
        if tuple(self.values.shape) != tuple(shape):
            raise ValueError(f"the observations are of images {tuple(self.values.shape)}, the samples {tuple(shape)}")

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """``A x - y`` of each image, ``(B, ...)``."""
        return self.mask * (x - self.values)

    def correction(self, x: torch.Tensor) -> torch.Tensor:
        """``A^+ (y - A x)``: the change that makes ``x`` agree with the observations."""
        return self.mask * (self.values - x)


class PointObservation:
    """Values at points: ``coords (B, K, 2)`` in ``[0, 1]^2`` (``x`` along columns), ``values (B, K, C)``
    in the model's units and ``valid (B, K)`` (``False`` marks padding); ``A`` samples an image
    bilinearly between pixel centres, at any resolution."""

    pseudo_inverse = False

    def __init__(self, coords: torch.Tensor, values: torch.Tensor, valid: torch.Tensor):
        self.coords, self.values, self.valid = coords, values, valid.to(values.dtype)

    def repeat(self, k: int) -> "PointObservation":
        return PointObservation(self.coords.repeat(k, 1, 1), self.values.repeat(k, 1, 1), self.valid.repeat(k, 1) > 0)

    def check(self, shape) -> None:
        if self.values.shape[0] != shape[0] or self.values.shape[-1] != shape[1]:
            raise ValueError(f"the points hold {self.values.shape[0]} sets of {self.values.shape[-1]} channels, "
                             f"the samples are {tuple(shape)}")

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        grid = (self.coords * 2 - 1).unsqueeze(1).to(x.dtype)  # (B, 1, K, 2)
        read = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]
        return (read.transpose(1, 2) - self.values) * self.valid.unsqueeze(-1)

    def correction(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("points at any coordinates have no pseudo-inverse on the grid; use --guidance dps")


class DPS:
    """Diffusion posterior sampling (see the module docstring); ``scale`` is DPS's ``zeta``. At scale 0 it
    asks for no gradient, so the sampler runs exactly as unguided (the network's forward pass under
    autograd may round differently)."""

    needs_grad = True  # of the method; an instance at scale 0 needs none

    def __init__(self, observation, scale: float | None = None):
        self.observation = observation
        self.scale = DPS_SCALE if scale is None else float(scale)
        self.needs_grad = self.scale != 0

    def __call__(self, step) -> torch.Tensor:
        self.observation.check(step.z_s.shape)
        if not self.needs_grad:
            return step.z_s
        squared = self.observation.residual(step.x0).flatten(1).pow(2).sum(1)  # (B,)
        (grad,) = torch.autograd.grad(squared.sum(), step.z_t)
        noise = step.denoiser.forward_diffusion.noise
        if not noise.white:  # the noise field's metric, per DCT mode
            fd = step.denoiser.forward_diffusion
            var = noise.mode_scale(*grad.shape[-2:], device=grad.device, dtype=grad.dtype) ** 2
            grad = fd.from_modes(fd.to_modes(grad) * var)
        norm = squared.detach().sqrt().clamp_min(torch.finfo(squared.dtype).tiny).reshape(-1, 1, 1, 1)
        return step.z_s.detach() - (self.scale / norm) * grad


class Projection:
    """The observed values imposed on the ``x0`` estimate, the state moved with it (module docstring);
    ``scale`` in ``[0, 1]``: the share of the correction applied."""

    needs_grad = False

    def __init__(self, observation, scale: float | None = None):
        if not observation.pseudo_inverse:
            raise ValueError("projection replaces observed pixels; these observations are points at any "
                             "coordinates: use --guidance dps")
        self.observation = observation
        self.scale = PROJECTION_SCALE if scale is None else float(scale)

    def __call__(self, step) -> torch.Tensor:
        self.observation.check(step.z_s.shape)
        delta = self.scale * self.observation.correction(step.x0)
        if step.clean:
            return step.z_s + delta
        fd = step.denoiser.forward_diffusion
        s = torch.full((delta.shape[0],), step.s, device=delta.device, dtype=delta.dtype)
        log_a, _ = fd.log_alpha_sigma(s, delta.shape[-2:])
        return step.z_s + fd.from_modes(log_a.exp() * fd.to_modes(delta))


METHODS = {"dps": DPS, "projection": Projection}
DEFAULT_SCALES = {"dps": DPS_SCALE, "projection": PROJECTION_SCALE}
# guided runs take at least this many steps unless --steps says otherwise: on the validation splits of
# navier-stokes, darcy and natural-patches, 100 DDIM steps beat 20 for both methods at every scale but dps
# at 1 or 3 (docs/guidance.md, results/guidance.json)
GUIDED_STEPS = 100

__all__ = ["PixelObservation", "PointObservation", "DPS", "Projection", "METHODS", "DEFAULT_SCALES", "GUIDED_STEPS"]

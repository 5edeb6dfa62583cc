"""Samplers: functions that take one reverse step, and :func:`sample`, the loop around them.

Each step has the signature ``step(gen_sde, z_t, t, s, v, generator, **model_kwargs) -> z_s`` with
floats ``1 >= t > s >= 0``; every one forwards ``model_kwargs`` to the network. The step reaching
``s = 0`` returns the final (noise-free) estimate. Steps are plain functions: a registry key is
turned into one by the command layer (``host.samplers.get(key)``), never here.

Guidance (``sample(..., guidance=g)``) is the sampler-side extension point: after every step the
host hands ``g`` a :class:`GuidanceStep` (the state before and after the step, the times, and the
network's ``x0`` estimate the step used, differentiable in ``z_t`` when ``g.needs_grad``) and continues
from the state ``g`` returns. The host knows nothing of what is observed or how: the methods are
registered by plugins (``register_guidance``).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Protocol

import torch

from . import schedules
from .dct import mode_eigenvalues
from .diffusion import DenoisingDiffusion, _as_batch_time
from .progress import progress_bar

# The sampler and step count the project's benchmarks found best per parameterisation
# (benchmarks/README.md, "Sampler and steps"): the x0 form of DDIM is exact for a perfect x0/v
# network at any step count; an eps network under blurring needs the ancestral sampler.
DEFAULT_SAMPLING = {"eps": ("denoise", 250), "x0": ("ddim", 20), "v": ("ddim", 20)}


def denoise_step(gen_sde: DenoisingDiffusion, z_t, t: float, s: float, v=None, generator=None, **kwargs):
    """Ancestral step of the reference (``gen_sde.denoise_step``) from ``t`` to ``s``."""
    return gen_sde.ancestral_step(z_t, t, s, v, generator=generator, **kwargs)


def ddim_step(gen_sde: DenoisingDiffusion, z_t, t: float, s: float, v=None, generator=None, **kwargs):
    """Deterministic step per DCT mode: ``u_s = a_s x0_hat + sigma_s eps_hat`` (one network call).

    Written with the ``x0`` estimate: for an ``x0`` or ``v`` network, and for an ``eps`` network whose
    estimate the denoiser bounds (``x0_clip``, :meth:`DenoisingDiffusion.step_prediction`),
    ``u_s = a_s x0_hat + (sigma_s / sigma_t) (u_t - a_t x0_hat)``, every coefficient at most 1, so
    nothing is amplified at any step count. For an unbounded ``eps`` network (``x0_clip="none"``)
    ``a_s x0_hat`` is ``(a_s / a_t) (u_t - sigma_t eps_hat)`` (ratio in the log domain), which under
    blurring grows like ``exp(|k|^2 d_tau)`` in high modes: few steps can diverge there (see README,
    Known limitations). At ``s = 0`` it returns ``a_0 x0_hat`` like the other samplers.
    """
    fd = gen_sde.forward_diffusion
    b, device, dtype = z_t.shape[0], z_t.device, z_t.dtype
    ss = _as_batch_time(s, b, device, dtype)
    p = gen_sde.step_prediction(z_t, t, v, **kwargs)
    log_as, log_ss = fd.log_alpha_sigma(ss, z_t.shape[-2:])
    signal = p.scaled_x0_modes(log_as)
    if s <= 0:
        return fd.from_modes(signal)
    if p.parameterization == "eps":
        return fd.from_modes(signal + log_ss.exp() * p.out)
    return fd.from_modes(signal + torch.exp(log_ss - p.log_s) * (p.u - p.log_a.exp() * p.x0_modes()))


def euler_maruyama_step(gen_sde: DenoisingDiffusion, z_t, t: float, s: float, v=None, generator=None, **kwargs):
    """Euler-Maruyama step of the reverse SDE, per DCT mode.

    Forward SDE per mode: ``du = f_k u dt + g_k dW`` with ``f_k = d log alpha_k / dt`` and
    ``g_k^2 = d sigma^2 / dt - 2 f_k sigma^2``. Reverse step of size ``dt = t - s``:
    ``u_s = u_t - (f_k u_t + g_k^2 eps_hat / sigma_t) dt + g_k sqrt(dt) xi`` (``xi`` from the noise field).
    The last step (to ``s = 0``) adds no noise. ``eps_hat`` is the one consistent with the bounded
    ``x0`` estimate (:meth:`DenoisingDiffusion.step_prediction`).
    """
    fd = gen_sde.forward_diffusion
    b, device, dtype = z_t.shape[0], z_t.device, z_t.dtype
    tt = _as_batch_time(t, b, device, dtype).reshape(-1, 1, 1, 1)
    dt = t - s
    lam, dlam = schedules.logsnr(tt), schedules.dlogsnr_dt(tt)
    f = 0.5 * torch.sigmoid(-lam) * dlam
    if not fd.dissipation.is_identity:
        f = f - mode_eigenvalues(z_t.shape[-2:], device=device, dtype=dtype) * fd.dissipation.dtau_dt(tt)
    sig2 = torch.sigmoid(-lam)
    g2 = (-sig2 * torch.sigmoid(lam) * dlam - 2 * f * sig2).clamp_min(0.0)
    p = gen_sde.step_prediction(z_t, tt.flatten(), v, **kwargs)
    u, eps = p.u, p.eps_modes()
    u = u - (f * u + g2 * eps / sig2.sqrt()) * dt
    if s > 0:
        u = u + torch.sqrt(g2 * dt) * fd.noise_modes(z_t.shape, generator=generator, device=device, dtype=dtype)
    return fd.from_modes(u)


def timesteps(num_steps: int) -> list[float]:
    """``num_steps + 1`` equally spaced times from 1 to 0."""
    if num_steps < 1:
        raise ValueError("num_steps must be at least 1")
    return [1.0 - i / num_steps for i in range(num_steps)] + [0.0]


def check_step(step) -> None:
    """Refuse a sampler that is not a step function (a registry key must be resolved by the caller)."""
    if not callable(step):
        raise TypeError(f"sampler must be a step function, got {step!r}; resolve a key with host.samplers.get(key)")


@dataclass
class GuidanceStep:
    """One sampler step as a guidance method sees it.

    ``z_t``: the state before the step, at time ``t`` (a leaf that requires grad when the method
    asked for gradients); ``z_s``: the step's result at ``s < t`` (a function of ``z_t`` then);
    ``x0``: the network's estimate of the clean image at ``(z_t, t)`` as the step used it, in grid
    space; ``clean``: whether ``z_s`` is the clean image itself (the last step of a ``clean_end`` run)
    rather than a state of the forward process at ``s``; ``denoiser``: the :class:`DenoisingDiffusion`
    (its forward process gives per-mode ``alpha_s``); ``generator``: the run's random streams."""

    z_t: torch.Tensor
    t: float
    s: float
    z_s: torch.Tensor
    x0: torch.Tensor
    clean: bool
    denoiser: DenoisingDiffusion
    generator: object = None


class Guidance(Protocol):
    """A sampling-time guidance method: ``needs_grad`` (whether it differentiates ``x0`` in ``z_t``) and
    ``__call__(step) -> z_s``, the corrected state."""

    needs_grad: bool

    def __call__(self, step: GuidanceStep) -> torch.Tensor: ...


class _Recording:
    """A shallow copy of a denoiser whose :meth:`step_prediction` remembers the ``x0`` estimate it gave
    (the copy shares the network; the caller's object is not touched)."""

    def __init__(self, gen_sde: DenoisingDiffusion):
        self.denoiser = copy.copy(gen_sde)
        self.x0 = None
        self.denoiser.step_prediction = self._step_prediction

    def _step_prediction(self, y, s, v=None, **kwargs):
        p = DenoisingDiffusion.step_prediction(self.denoiser, y, s, v, **kwargs)
        self.x0 = self.denoiser.forward_diffusion.from_modes(p.x0_modes())
        return p


def guided_step(gen_sde: DenoisingDiffusion, z, t: float, s: float, sampler, guidance: Guidance, v=None,
                generator=None, clean_end: bool = False, **model_kwargs) -> torch.Tensor:
    """One step of :func:`sample` followed by ``guidance``: the network is called once (with autograd
    when the method needs gradients; a step function that does not read :meth:`DenoisingDiffusion.step_prediction`
    costs one more call for the estimate)."""
    one_call = gen_sde.parameterization in ("x0", "v")
    grad = bool(guidance.needs_grad)
    with torch.enable_grad() if grad else contextlib.nullcontext():
        z_t = z.detach().requires_grad_(grad)
        if s <= 0 and clean_end and one_call:
            z_s = x0 = gen_sde.x0(z_t, t, v, **model_kwargs)
        else:
            rec = _Recording(gen_sde)
            z_s = sampler(rec.denoiser, z_t, t, s, v, generator, **model_kwargs)
            if s <= 0 and clean_end:
                z_s = gen_sde.deblur(z_s)
            x0 = rec.x0 if rec.x0 is not None else gen_sde.pred(z_t, t, v, **model_kwargs)
        out = guidance(GuidanceStep(z_t, t, s, z_s, x0, s <= 0 and clean_end, gen_sde, generator))
    return out.detach()


@torch.no_grad()
def sample(gen_sde: DenoisingDiffusion, shape, num_steps: int = 250, sampler=denoise_step, generator=None,
           progress: bool = True, v=None, device=None, clean_end: bool = False, after_step=None,
           guidance: Guidance | None = None, **model_kwargs) -> torch.Tensor:
    """Draw samples of ``shape = (B, C, H, W)`` with the step function ``sampler``.

    ``model_kwargs`` reach the network at every step. ``clean_end``: end at the clean image, not at
    ``z_0 = alpha_0 x`` (slightly blurred when ``sigma_blur_min > 0``, where the samplers end): for
    ``x0``/``v`` networks the last step returns the network's ``x0`` estimate itself (exact at any
    resolution, where ``alpha_0`` of high modes falls below float precision), for ``eps`` networks
    ``z_0`` is deblurred (:meth:`~ddo.diffusion.DenoisingDiffusion.deblur`). ``after_step(z_s, s)``:
    applied after every step that ends above ``s = 0`` (a caller's projection, such as re-imposing
    observations). ``guidance``: a sampling-time guidance method (:class:`Guidance`, registered by a
    plugin), applied after every step (:func:`guided_step`); without it the loop is the plain one.
    """
    check_step(sampler)
    if device is None:
        device = next(gen_sde.network.parameters()).device
    z = gen_sde.prior_sample(shape, generator=generator, device=device)
    ts = timesteps(num_steps)
    one_call = gen_sde.parameterization in ("x0", "v")
    for t, s in progress_bar(list(zip(ts[:-1], ts[1:])), desc="sampling", enabled=progress, leave=False):
        if guidance is not None:
            z = guided_step(gen_sde, z, t, s, sampler, guidance, v, generator, clean_end, **model_kwargs)
            if after_step is not None and s > 0:
                z = after_step(z, s)
            continue
        if s <= 0 and clean_end and one_call:
            z = gen_sde.x0(z, t, v, **model_kwargs)
            continue
        z = sampler(gen_sde, z, t, s, v, generator, **model_kwargs)
        if s <= 0 and clean_end:
            z = gen_sde.deblur(z)
        elif after_step is not None and s > 0:
            z = after_step(z, s)
    return z


__all__ = ["sample", "guided_step", "GuidanceStep", "Guidance", "timesteps", "check_step", "denoise_step", "ddim_step", "euler_maruyama_step",
           "DEFAULT_SAMPLING"]

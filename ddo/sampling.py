"""Samplers: functions that take one reverse step, and :func:`sample`, the loop around them.

Each step has the signature ``step(gen_sde, z_t, t, s, v, generator, **model_kwargs) -> z_s`` with
floats ``1 >= t > s >= 0``; every one forwards ``model_kwargs`` to the network. The step reaching
``s = 0`` returns the final (noise-free) estimate.
"""
from __future__ import annotations


import torch
from tqdm.auto import tqdm

from . import schedules
from .dct import mode_eigenvalues
from .diffusion import DenoisingDiffusion, _as_batch_time


def denoise_step(gen_sde: DenoisingDiffusion, z_t, t: float, s: float, v=None, generator=None, **kwargs):
    """Ancestral step of the reference (``gen_sde.denoise_step``) from ``t`` to ``s``."""
    return gen_sde.ancestral_step(z_t, t, s, v, generator=generator, **kwargs)


def ddim_step(gen_sde: DenoisingDiffusion, z_t, t: float, s: float, v=None, generator=None, **kwargs):
    """Deterministic step per DCT mode: ``u_s = alpha_s x0_hat + sigma_s eps_hat``.

    Written without dividing by ``alpha_t`` (which underflows for high modes):
    ``u_s = (alpha_s / alpha_t) u_t + (sigma_s - (alpha_s / alpha_t) sigma_t) eps_hat``.
    At ``s = 0`` it returns ``x0_hat`` restricted to the signal: ``alpha_0 x0_hat``.
    """
    fd = gen_sde.forward_diffusion
    b, device, dtype = z_t.shape[0], z_t.device, z_t.dtype
    tt, ss = _as_batch_time(t, b, device, dtype), _as_batch_time(s, b, device, dtype)
    log_at, log_st = fd.log_alpha_sigma(tt, z_t.shape[-2:])
    log_as, log_ss = fd.log_alpha_sigma(ss, z_t.shape[-2:])
    eps = fd.to_modes(gen_sde.epsilon(z_t, tt, v, **kwargs))
    ratio = torch.exp(log_as - log_at)
    if s <= 0:
        return fd.from_modes(ratio * (fd.to_modes(z_t) - log_st.exp() * eps))
    return fd.from_modes(ratio * fd.to_modes(z_t) + (log_ss.exp() - ratio * log_st.exp()) * eps)


def euler_maruyama_step(gen_sde: DenoisingDiffusion, z_t, t: float, s: float, v=None, generator=None, **kwargs):
    """Euler-Maruyama step of the reverse SDE, per DCT mode.

    Forward SDE per mode: ``du = f_k u dt + g_k dW`` with ``f_k = d log alpha_k / dt`` and
    ``g_k^2 = d sigma^2 / dt - 2 f_k sigma^2``. Reverse step of size ``dt = t - s``:
    ``u_s = u_t - (f_k u_t + g_k^2 eps_hat / sigma_t) dt + g_k sqrt(dt) xi`` (``xi`` from the noise field).
    The last step (to ``s = 0``) adds no noise.
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
    u = fd.to_modes(z_t)
    eps = fd.to_modes(gen_sde.epsilon(z_t, tt.flatten(), v, **kwargs))
    u = u - (f * u + g2 * eps / sig2.sqrt()) * dt
    if s > 0:
        u = u + torch.sqrt(g2 * dt) * fd.noise_modes(z_t.shape, generator=generator, device=device, dtype=dtype)
    return fd.from_modes(u)


def timesteps(num_steps: int) -> list[float]:
    """``num_steps + 1`` equally spaced times from 1 to 0."""
    if num_steps < 1:
        raise ValueError("num_steps must be at least 1")
    return [1.0 - i / num_steps for i in range(num_steps)] + [0.0]


@torch.no_grad()
def sample(gen_sde: DenoisingDiffusion, shape, num_steps: int = 250, sampler="denoise", generator=None,
           progress: bool = True, v=None, device=None, host=None, **model_kwargs) -> torch.Tensor:
    """Draw samples of ``shape = (B, C, H, W)``.

    ``sampler`` is a registry key (``denoise``, ``euler-maruyama``, ``ddim``, or one a plugin
    registered) or a step function. ``model_kwargs`` reach the network at every step.
    """
    step = resolve_sampler(sampler, host)
    if device is None:
        device = next(gen_sde.network.parameters()).device
    z = gen_sde.prior_sample(shape, generator=generator, device=device)
    ts = timesteps(num_steps)
    for t, s in tqdm(list(zip(ts[:-1], ts[1:])), desc="sampling", disable=not progress, leave=False):
        z = step(gen_sde, z, t, s, v, generator, **model_kwargs)
    return z


def resolve_sampler(sampler, host=None):
    """A step function from a registry key (looked up in ``host``, or a freshly loaded one) or itself."""
    if callable(sampler):
        return sampler
    if host is None:
        from .plugins import load_host

        host = load_host()
    return host.samplers.get(sampler)


__all__ = ["sample", "timesteps", "resolve_sampler", "denoise_step", "ddim_step", "euler_maruyama_step"]

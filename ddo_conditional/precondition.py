"""Parameterisations beyond epsilon, presented to DDO as an epsilon prediction.

The forward process is diagonal in the DCT basis: per mode ``k``, ``z = a_k x + s eps`` with
``a_k = alpha_t exp(-|k|^2 tau_t)`` and the scalar ``s = sigma_t``. A network may predict

- ``eps``: ``eps_hat = out``;
- ``x0``: ``x0_hat = out (+ offset)``, so ``eps_hat = (z - IDCT(a DCT(x0_hat))) / s``;
- ``v``: per mode ``v = a eps - s x``; since ``a^2 + s^2 != 1`` under blurring, the inversion is
  ``x0 = (a z - s v) / (a^2 + s^2)`` and ``eps = (s z + a v) / (a^2 + s^2)`` (per mode).

For ``x0`` and ``v`` the network's noisy input is scaled by ``c_in = alpha(t)`` (the scalar VP
signal scale): near ``t = 1`` the input is almost pure noise that carries no information about
``x0``, and damping it makes the ``x0`` estimate there (the posterior mean) nearly independent of
the draw. Samplers see ``eps_hat`` only; losses that want ``x0_hat`` ask for it with ``output="x0"``, a
keyword that reaches this module through every DDO call path.
"""
from __future__ import annotations

import torch
from torch import nn

from ddo import schedules

PARAMETERIZATIONS = ("eps", "x0", "v")


class Preconditioned(nn.Module):
    """Wraps ``inner(x, temp, v, **kwargs)``; returns ``eps_hat`` (or ``x0_hat`` with ``output="x0"``).

    If ``inner`` has ``x0_offset(**kwargs)``, an ``x0`` network predicts a residual over it.
    """

    def __init__(self, inner: nn.Module, forward_diffusion, parameterization: str = "eps"):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; known: {', '.join(PARAMETERIZATIONS)}")
        self.inner, self.fd, self.parameterization = inner, forward_diffusion, parameterization

    def cache_context(self, **kwargs) -> dict:
        """The inner network's :meth:`cache_context`, if it has one."""
        inner = getattr(self.inner, "cache_context", None)
        return kwargs if inner is None else inner(**kwargs)

    def _scales(self, temp, x):
        log_a, log_s = self.fd.log_alpha_sigma(temp.to(x.dtype), x.shape[-2:])
        return log_a.exp(), log_s.exp()

    def forward(self, x, temp, v=None, output: str = "eps", **kwargs):
        kind = self.parameterization
        if kind == "eps":
            out = self.inner(x, temp, v, **kwargs)
            if output == "eps":
                return out
        else:
            c_in = schedules.alpha_sigma(temp.to(x.dtype))[0].reshape(-1, 1, 1, 1)
            out = self.inner(x * c_in, temp, v, **kwargs)
        fd = self.fd
        a, s = self._scales(temp, x)
        if kind == "x0":
            offset = self.inner.x0_offset(**kwargs) if hasattr(self.inner, "x0_offset") else None
            x0 = out if offset is None else out + offset
            return x0 if output == "x0" else (x - fd.from_modes(a * fd.to_modes(x0))) / s
        u = fd.to_modes(x)
        if kind == "v":
            vv, den = fd.to_modes(out), a * a + s * s
            return fd.from_modes((a * u - s * vv) / den if output == "x0" else (s * u + a * vv) / den)
        return fd.from_modes((u - s * fd.to_modes(out)) / a.clamp_min(1e-6))  # eps network asked for x0


def ddim_x0_step(gen_sde, z_t, t: float, s: float, v=None, generator=None, **kwargs):
    """Deterministic DDIM step written with the network's ``x0`` estimate (sampler ``ddim-x0``).

    Per DCT mode ``u_s = a_s x0_hat + (s_s / s_t) (u_t - a_t x0_hat)``: every coefficient is at
    most 1, so nothing is amplified, unlike the epsilon form whose ``a_s / a_t`` grows like
    ``exp(|k|^2 d_tau)`` in high modes. Needs a network built with an ``x0`` or ``v`` parameterisation.
    The step to ``s = 0`` returns ``a_0 x0_hat`` like the other samplers.
    """
    fd = gen_sde.forward_diffusion
    b = z_t.shape[0]
    tt = torch.full((b,), float(t), device=z_t.device, dtype=z_t.dtype)
    ss = torch.full((b,), float(s), device=z_t.device, dtype=z_t.dtype)
    x0 = fd.to_modes(gen_sde.model(z_t, tt, v, output="x0", **kwargs))
    log_at, log_st = fd.log_alpha_sigma(tt, z_t.shape[-2:])
    log_as, log_ss = fd.log_alpha_sigma(ss, z_t.shape[-2:])
    if s <= 0:
        return fd.from_modes(log_as.exp() * x0)
    u = fd.to_modes(z_t)
    return fd.from_modes(log_as.exp() * x0 + torch.exp(log_ss - log_st) * (u - log_at.exp() * x0))

"""The Navier-Stokes pair's solvers beyond the host's forward one: the backward integration of the vorticity
equation (the inverse task's route)."""
from __future__ import annotations

import math

import torch
from ddo.api import NavierStokes2d, ns_forcing


def ns_backward(w1: torch.Tensor, t_end: float = 1.0, visc: float = 1e-3, dt: float = 1e-3,
                keep_modes: int = 12) -> torch.Tensor:
    """An estimate of the vorticity ``t_end`` earlier than ``w1 (B, n, n)``: the vorticity equation
    integrated backward with only the modes ``|m_x|, |m_y| <= keep_modes`` kept (see
    :class:`NavierStokes2d`). Solved on the smallest grid that holds those modes without aliasing
    (``3 keep_modes`` points or more), then zero-padded back to ``n``: the discarded modes are zero."""
    n = w1.shape[-1]
    m = min(n, 2 * math.ceil(3 * (keep_modes + 1) / 2))
    w_hat = torch.fft.rfft2(w1.double(), norm="forward")
    small = torch.zeros(w1.shape[0], m, m // 2 + 1, dtype=w_hat.dtype)
    h = m // 2
    small[:, :h, :h + 1] = w_hat[:, :h, :h + 1]
    small[:, -h:, :h + 1] = w_hat[:, -h:, :h + 1]
    solver = NavierStokes2d(m, visc, -dt, ns_forcing(m), keep_modes=keep_modes)
    w0_small = solver.solve(torch.fft.irfft2(small, s=(m, m), norm="forward"), -t_end)
    out_hat = torch.zeros_like(w_hat)
    s_hat = torch.fft.rfft2(w0_small, norm="forward")
    out_hat[:, :h, :h + 1] = s_hat[:, :h, :h + 1]
    out_hat[:, -h:, :h + 1] = s_hat[:, -h:, :h + 1]
    return torch.fft.irfft2(out_hat, s=(n, n), norm="forward")


__all__ = ["ns_backward"]

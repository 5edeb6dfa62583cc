"""Spectral (Fourier) layers: the building blocks of resolution-agnostic networks.

Inputs are ``(B, C, H, W)`` real tensors on a regular grid over the unit square. A spectral
convolution acts on a fixed number of low Fourier modes, so the same weights define the same
operator at every resolution.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _low_modes(x_ft: torch.Tensor, mh: int, mw: int) -> torch.Tensor:
    """Rows ``0..mh-1`` and ``-mh..-1`` and columns ``0..mw-1`` of an ``rfft2`` spectrum."""
    return torch.cat([x_ft[..., :mh, :mw], x_ft[..., x_ft.shape[-2] - mh:, :mw]], dim=-2)


def _place_low_modes(y: torch.Tensor, h: int) -> torch.Tensor:
    """Inverse of :func:`_low_modes` along the rows: ``(.., 2m, mw) -> (.., h, mw)`` with zeros between."""
    m = y.shape[-2] // 2
    if 2 * m == h:
        return y
    zeros = y.new_zeros(y.shape[:-2] + (h - 2 * m, y.shape[-1]))
    return torch.cat([y[..., :m, :], zeros, y[..., m:, :]], dim=-2)


class SpectralConv2d(nn.Module):
    """Fourier integral operator ``x -> irfft2(W * rfft2(x))`` on the lowest modes.

    Keeps ``modes_height`` frequencies along the height (half of them of each sign:
    ``0..m-1`` and ``-m..-1`` with ``m = ceil(modes_height / 2)``) and ``modes_width``
    non-negative frequencies along the width; each kept mode is multiplied by a learned complex
    matrix ``(C_out, C_in)``, so the weights are ``(C_out, C_in, modes_height, modes_width)``.
    Higher modes are zeroed. The output has the input's size; on a grid too small to hold every
    mode, only those that fit are used.

    Shapes: ``x: (B, C_in, H, W) -> (B, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, modes_height: int, modes_width: int):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.modes_height, self.modes_width = modes_height, modes_width
        self.half = (modes_height + 1) // 2
        scale = 1.0 / (in_channels * out_channels)
        # complex weights stored as (2 * half, modes_width, [real, imag], C_in, C_out): each mode's
        # real and imaginary matrices are contiguous, so the mode mixing needs no weight copies
        self.weight = nn.Parameter(scale * torch.rand(2 * self.half, modes_width, 2, in_channels, out_channels))

    def complex_weight(self) -> torch.Tensor:
        """The weights as a complex tensor ``(2 * half, modes_width, C_in, C_out)``."""
        return torch.complex(self.weight[:, :, 0], self.weight[:, :, 1])

    def _weights(self, mh: int, mw: int) -> torch.Tensor:
        w = self.weight
        if mh < self.half:
            w = torch.cat([w[:mh], w[2 * self.half - mh:]], dim=0)
        return w[:, :mw].reshape(2 * mh * mw, 2, self.in_channels, self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ci, h, w = x.shape
        mh, mw = min(self.half, h // 2), min(self.modes_width, w // 2 + 1)
        x_ft = torch.fft.rfft2(x.float())
        xs = torch.view_as_real(_low_modes(x_ft, mh, mw))              # (B, Ci, 2mh, mw, 2)
        # complex mode mixing in real arithmetic: A = [Xr; Xi] stacked over the batch,
        # P = A Wr, Q = A Wi, then Yr = Xr Wr - Xi Wi, Yi = Xr Wi + Xi Wr
        a = xs.permute(2, 3, 4, 0, 1).reshape(2 * mh * mw, 2 * b, ci)   # (modes, 2B, Ci)
        wt = self._weights(mh, mw)
        p, q = torch.bmm(a, wt[:, 0]), torch.bmm(a, wt[:, 1])           # (modes, 2B, Co)
        yr, yi = p[:, :b] - q[:, b:], q[:, :b] + p[:, b:]
        ys = torch.stack([yr, yi], -1).reshape(2 * mh, mw, b, self.out_channels, 2).permute(2, 3, 0, 1, 4)
        out = torch.fft.irfft2(_place_low_modes(torch.view_as_complex(ys.contiguous()), h), s=(h, w))
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, modes=({self.modes_height}, "
                f"{self.modes_width})")


def fourier_resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample ``x: (B, C, H, W)`` to ``size`` by keeping or zero-padding Fourier modes.

    Band-limited interpolation: the modes both grids hold are kept with their amplitudes, so
    down- then up-sampling returns the low-pass part of ``x``.
    """
    h, w = x.shape[-2:]
    h2, w2 = size
    if (h, w) == (h2, w2):
        return x
    x_ft = torch.fft.rfft2(x.float(), norm="forward")
    m = min(h, h2) // 2
    mw = min(w, w2) // 2 + 1
    y = _place_low_modes(_low_modes(x_ft, m, mw), h2)
    return torch.fft.irfft2(y, s=(h2, w2), norm="forward").to(x.dtype)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of ``t: (B,)``, shape ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb

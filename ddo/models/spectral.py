"""Spectral (Fourier) layers: the building blocks of resolution-agnostic networks.

Inputs are ``(B, C, H, W)`` real tensors on a regular grid over the unit square. A spectral
convolution acts on a fixed number of low Fourier modes, so the same weights define the same
operator at every resolution.
"""
from __future__ import annotations

import functools
import math
import typing

import torch
from torch import nn


def _low_rows(xr: torch.Tensor, m: int) -> torch.Tensor:
    """Rows ``0..m-1`` and ``-m..-1`` of a real view ``(B, C, H, W', 2)`` of an ``rfft2`` spectrum.

    Modes are selected and placed on real views (``[re, im]`` last) rather than on complex tensors:
    torch.compile differentiates slices of real views, not of complex ones."""
    return torch.cat([xr[:, :, :m], xr[:, :, xr.shape[2] - m:]], dim=2)


def _place_rows(yr: torch.Tensor, h: int) -> torch.Tensor:
    """Inverse of :func:`_low_rows`: ``(B, C, 2m, W', 2) -> (B, C, h, W', 2)`` with zero rows between,
    as a complex tensor ready for ``irfft2``."""
    m = yr.shape[2] // 2
    if 2 * m < h:
        b, c, _, w, _ = yr.shape
        yr = torch.cat([yr[:, :, :m], yr.new_zeros(b, c, h - 2 * m, w, 2), yr[:, :, m:]], dim=2)
    return torch.view_as_complex(yr.contiguous())


def _separable_dft(h: int, w: int, mh: int, mw: int) -> dict[str, torch.Tensor]:
    """Real float64 matrices of the truncated 2-D DFT, one axis at a time.

    Kept modes: rows ``r in {0..mh-1, h-mh..h-1}`` and columns ``k in 0..mw-1`` of ``rfft2``.
    With ``x: (.., h, w)`` real and ``X = rfft2(x)`` restricted to those modes:

    - ``x @ fw = [Re | Im]`` of the width transform, ``fw = [cos | -sin](2 pi n k / w)``, ``(w, 2 mw)``;
    - ``X = ch @ A + sh @ A'`` with ``A = [Ar | Ai]``, ``A' = [Ai | -Ar]``,
      ``ch, sh = cos, sin(2 pi r n / h)``, ``(2 mh, h)``: ``[Re X | Im X]``, ``(.., 2 mh, 2 mw)``.

    The inverse (``irfft2`` of the kept modes, zeros elsewhere) of ``Y = [Yr | Yi]``:

    - ``Z = ich @ Y + ish @ Y'`` with ``Y' = [-Yi | Yr]``, ``ich, ish = cos, sin(2 pi n r / h) / h``,
      ``(h, 2 mh)``;
    - ``out = Z @ gw``, ``gw = [c_k cos; -c_k sin](2 pi k n / w) / w``, ``(2 mw, w)``, with
      ``c_k = 1`` for ``k = 0`` and ``k = w / 2`` and 2 otherwise (the Hermitian half-spectrum).
      The sine rows vanish at ``k = 0`` and ``k = w / 2``, as ``irfft`` drops those imaginary parts.
    """
    rows = torch.cat([torch.arange(mh), torch.arange(h - mh, h)]).double()
    n_h, n_w, k = torch.arange(h).double(), torch.arange(w).double(), torch.arange(mw).double()
    ang_h = 2 * math.pi * rows[:, None] * n_h[None, :] / h                  # (2mh, h)
    ang_w = 2 * math.pi * n_w[:, None] * k[None, :] / w                     # (w, mw)
    ck = torch.full((mw,), 2.0, dtype=torch.float64)
    ck[0] = 1.0
    if w % 2 == 0 and mw == w // 2 + 1:
        ck[-1] = 1.0
    return {
        "fw": torch.cat([torch.cos(ang_w), -torch.sin(ang_w)], 1),
        "ch": torch.cos(ang_h), "sh": torch.sin(ang_h),
        "ich": torch.cos(ang_h).T / h, "ish": torch.sin(ang_h).T / h,
        "gw": torch.cat([ck[:, None] * torch.cos(ang_w).T, -ck[:, None] * torch.sin(ang_w).T], 0) / w,
    }


@functools.lru_cache(maxsize=64)
def dense_dft_matrices(h: int, w: int, mh: int, mw: int, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The truncated 2-D DFT of :func:`_separable_dft` as one dense real matrix each way, built once
    per size, device and dtype.

    ``fwd: (2 mh * mw * 2, h * w)``, rows ordered ``(row, column, [re, im])``, so that
    ``fwd @ x.view(-1, h * w).T`` is ``(modes, 2, B * C)``; ``inv: (2 mh * mw * 2, h * w)`` with the
    same row order maps such a spectrum back to pixels (``irfft2`` of the kept modes). The cost is
    ``8 mh mw h w`` per channel each way, so this pays on small grids only.
    """
    m = _separable_dft(h, w, mh, mw)
    eye = torch.eye(h * w, dtype=torch.float64).view(h * w, h, w)
    a = eye @ m["fw"]
    xs = m["ch"] @ a + m["sh"] @ _swap_halves(a, 1.0)                      # (hw, 2mh, 2mw)
    fwd = xs.view(h * w, 2 * mh, 2, mw).permute(1, 3, 2, 0).reshape(-1, h * w)
    eye_m = torch.eye(2 * mh * mw * 2, dtype=torch.float64).view(-1, 2 * mh, mw, 2)
    y = eye_m.permute(0, 1, 3, 2).reshape(-1, 2 * mh, 2 * mw)               # [Yr | Yi] per unit mode
    z = m["ich"] @ y + m["ish"] @ _swap_halves(y, -1.0)
    inv = (z @ m["gw"]).reshape(-1, h * w)
    return fwd.to(device=device, dtype=dtype).contiguous(), inv.to(device=device, dtype=dtype).contiguous()


class SeparableDFT(typing.NamedTuple):
    """The truncated 2-D DFT of :func:`_separable_dft` as five real matrices laid out so that both
    directions are plain GEMMs on ``(B, C, h, w)`` pixels and mode-major spectra, with no copies
    (:func:`separable_modes`, :func:`separable_pixels`)."""

    fwt: torch.Tensor    # (2 mw, w): [cos; -sin] over the width, times the forward scale
    hre: torch.Tensor    # (4 mh, h): [ch; -sh], applied to the width transform's real part
    him: torch.Tensor    # (4 mh, h): [sh; ch], applied to its imaginary part
    ire_t: torch.Tensor  # (4 mh, h): [ich^T; -ish^T], real part of the inverse over the height
    iim_t: torch.Tensor  # (4 mh, h): [ish^T; ich^T], its imaginary part
    gw: torch.Tensor     # (2 mw, w): the Hermitian inverse over the width


@functools.lru_cache(maxsize=64)
def separable_dft_matrices(h: int, w: int, mh: int, mw: int, device: torch.device | str = "cpu",
                           dtype: torch.dtype = torch.float32, scale: float = 1.0) -> SeparableDFT:
    """The matrices of :class:`SeparableDFT` for an ``h x w`` grid and modes ``(mh, mw)``, built once
    per size, device, dtype and forward scale. Cost per channel: ``4 h w mw + 8 mh h mw`` each way,
    against ``8 mh mw h w`` for :func:`dense_dft_matrices`."""
    m = _separable_dft(h, w, mh, mw)
    mats = SeparableDFT(
        fwt=scale * m["fw"].T, hre=torch.cat([m["ch"], -m["sh"]]), him=torch.cat([m["sh"], m["ch"]]),
        ire_t=torch.cat([m["ich"].T, -m["ish"].T]), iim_t=torch.cat([m["ish"].T, m["ich"].T]), gw=m["gw"])
    return SeparableDFT(*(t.to(device=device, dtype=dtype).contiguous() for t in mats))


def separable_modes(x: torch.Tensor, mats: SeparableDFT) -> torch.Tensor:
    """``x: (B, C, h, w)`` -> its kept modes ``(2, 2 mh * mw, B, C)``: ``[Re; Im]``, rows then columns.

    Two GEMMs and an accumulating one, each on a view: the width transform ``fwt @ x^T`` comes out as
    ``([re, im], k, B, C, row)``, whose halves, transposed, are what the height transform multiplies."""
    b, c, h, w = x.shape
    n, mw, mh2 = b * c, mats.fwt.shape[0] // 2, mats.hre.shape[0]
    t1 = torch.mm(mats.fwt, x.reshape(n * h, w).T).view(2, mw * n, h)
    out = torch.mm(mats.hre, t1[0].T)
    return out.addmm_(mats.him, t1[1].T).view(2, mh2 // 2 * mw, b, c)


def separable_pixels(y: torch.Tensor, h: int, w: int, mats: SeparableDFT,
                     residual: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`separable_modes` (``irfft2`` of the kept modes, zeros elsewhere):
    ``y: (2, 2 mh * mw, B, C)`` -> ``(B, C, h, w)``, plus ``residual`` of that shape when given (added by
    the last GEMM). The height transform writes ``([re, im], k, B, C, row)``, which the width transform
    reads as one matrix."""
    _, modes, b, c = y.shape
    n, mw, mh2 = b * c, mats.gw.shape[0] // 2, mats.ire_t.shape[0]
    yt = y.reshape(mh2, mw * n).T
    if torch.is_grad_enabled() and y.requires_grad:  # out= has no autograd
        z = torch.stack([torch.mm(yt, mats.ire_t), torch.mm(yt, mats.iim_t)])
    else:
        z = y.new_empty(2, mw * n, h)
        torch.mm(yt, mats.ire_t, out=z[0])
        torch.mm(yt, mats.iim_t, out=z[1])
    if residual is None:
        return torch.mm(z.view(2 * mw, n * h).T, mats.gw).view(b, c, h, w)
    return torch.addmm(residual.reshape(n * h, w), z.view(2 * mw, n * h).T, mats.gw).view(b, c, h, w)


def _swap_halves(a: torch.Tensor, sign_first: float) -> torch.Tensor:
    """``[P | Q] -> [sign_first * Q | -sign_first * P]`` along the last axis."""
    p, q = a.chunk(2, dim=-1)
    return torch.cat([sign_first * q, -sign_first * p], dim=-1)


# With autograd, grids up to DENSE_MAX_PIXELS compute the kept modes with one dense DFT matrix each way
# (cost ~ modes x pixels per channel, in two large GEMMs and no copies), grids up to
# SEPARABLE_MAX_PIXELS with the separable GEMMs of the inference path, larger ones with FFTs. All give
# the same result to rounding; the crossovers were measured on CPU (benchmarks/README.md).
DENSE_MAX_PIXELS = 8 * 8
SEPARABLE_MAX_PIXELS = 128 * 128
TRAINING_PATHS = ("dense", "separable", "fft")

# Without autograd (inference) the same choice is made per dtype, from a measurement on CPU
# (benchmarks/README.md): in fp32 the separable GEMMs already win at 16x16; in bf16 the dense matrices
# (one large GEMM each way) win up to 16x16, the separable ones at 32x32 and above.
INFERENCE_DENSE_MAX_PIXELS = {torch.float32: 8 * 8, torch.bfloat16: 16 * 16}


# Without autograd, the separable path's mode mixing per dtype: three real products per complex one
# (Gauss) or four (two GEMMs against [Wr | Wi]); measured per dtype on CPU (benchmarks/README.md).
GAUSS_MIX = {torch.float32: True, torch.bfloat16: False}


def mix_modes(xm: torch.Tensor, weights, out: torch.Tensor) -> None:
    """Complex mode mixing ``Y = X W`` per mode, in real arithmetic, of kept modes ``xm: (2, modes, B, C_in)``
    (``[Re; Im]``) into ``out: (2, modes, B, C_out)``, with ``weights`` from
    :meth:`SpectralConv2d.mixing_weight`: ``[Wr | Wi]`` (four real products, as two GEMMs), or the pair
    ``(Wr, [Wi - Wr; Wr + Wi])`` (three: ``k1 = (Xr + Xi) Wr``, ``k2 = Xr (Wi - Wr)``, ``k3 = Xi (Wr + Wi)``,
    ``Yr = k1 - k3``, ``Yi = k1 + k2``, with ``k2`` and ``k3`` one batched GEMM)."""
    _, modes, b, ci = xm.shape
    co = out.shape[-1]
    if isinstance(weights, tuple):
        k1 = torch.bmm(xm[0] + xm[1], weights[0])
        k23 = torch.bmm(xm.view(2 * modes, b, ci), weights[1]).view(2, modes, b, co)
        torch.sub(k1, k23[1], out=out[0])
        torch.add(k1, k23[0], out=out[1])
        return
    _combine(torch.bmm(xm[0], weights), torch.bmm(xm[1], weights), out[0], out[1])  # (modes, B, 2 Co) each


def _combine(pr: torch.Tensor, pi: torch.Tensor, yr: torch.Tensor, yi: torch.Tensor) -> None:
    """The four-product complex multiplication's last step: with ``pr = Xr [Wr | Wi]`` and
    ``pi = Xi [Wr | Wi]``, ``Yr = Xr Wr - Xi Wi`` and ``Yi = Xr Wi + Xi Wr``, written into ``yr`` and ``yi``."""
    co = yr.shape[-1]
    torch.sub(pr[..., :co], pi[..., co:], out=yr)
    torch.add(pr[..., co:], pi[..., :co], out=yi)


class SpectralConv2d(nn.Module):
    """Fourier integral operator ``x -> irfft2(W * rfft2(x))`` on the lowest modes.

    Keeps ``modes_height`` frequencies along the height (half of them of each sign:
    ``0..m-1`` and ``-m..-1`` with ``m = ceil(modes_height / 2)``) and ``modes_width``
    non-negative frequencies along the width; each kept mode is multiplied by a learned complex
    matrix ``(C_out, C_in)``, so the weights are ``(C_out, C_in, modes_height, modes_width)``.
    Higher modes are zeroed. The output has the input's size; on a grid too small to hold every
    mode, only those that fit are used.

    ``dense_max_pixels``: with autograd, grids of at most this many pixels compute the kept modes with
    dense DFT matrices (:meth:`_forward_dense`), larger ones with separable GEMMs
    (:meth:`_forward_separable`) up to :data:`SEPARABLE_MAX_PIXELS` and with FFTs above. The attribute of
    the same name may be changed on an instance. Without autograd the layer takes
    :meth:`_forward_inference` (GEMMs on views, in ``mix_dtype``; its crossover is
    :data:`INFERENCE_DENSE_MAX_PIXELS`).

    Shapes: ``x: (B, C_in, H, W) -> (B, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, modes_height: int, modes_width: int,
                 dense_max_pixels: int = DENSE_MAX_PIXELS):
        super().__init__()
        self.dense_max_pixels = dense_max_pixels
        #: dtype of the inference path's transforms and mode mixing (``torch.bfloat16``:
        #: :func:`ddo.train.set_inference_dtype`), or ``None``: fp32. Training always runs in fp32.
        self.mix_dtype: torch.dtype | None = None
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

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                modulation: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``(conv(x) + bias) * (1 + scale) + shift + residual``, each part optional: ``bias: (C_out,)``,
        ``modulation = (scale, shift)``, each ``(B, C_out)``, ``residual: (B, C_out, H, W)``. Without
        autograd they cost no pass over the output: bias and shift are added to the constant mode, the
        scale multiplies the modes, the residual is accumulated by the inverse transform's last GEMM."""
        b, ci, h, w = x.shape
        mh, mw = min(self.half, h // 2), min(self.modes_width, w // 2 + 1)
        # with autograd (training, also under bf16 autocast) transforms and mode mixing run in fp32; without
        # it, in mix_dtype, which only inference sets (bf16 there: equivalence in benchmarks/README.md)
        with torch.autocast(x.device.type, enabled=False):
            if not torch.is_grad_enabled() and not torch.compiler.is_compiling():
                return self._forward_inference(x, mh, mw, bias, residual, modulation)
            if h * w <= self.dense_max_pixels:
                y = self._forward_dense(x, mh, mw)
            elif h * w <= SEPARABLE_MAX_PIXELS and not torch.compiler.is_compiling():
                y = self._forward_separable(x, mh, mw)
            else:
                y = self._forward_fft(x, mh, mw)
        if bias is not None:
            y = y + bias.to(y.dtype)[:, None, None]
        if modulation is not None:
            y = y * (1 + modulation[0][:, :, None, None]) + modulation[1][:, :, None, None]
        return y if residual is None else y + residual

    def mixing_weight(self, mh: int, mw: int, dtype: torch.dtype, gauss: bool = False):
        """The kept modes' weights in ``dtype`` for the inference path's mode mixing, kept between calls
        while the parameter is unchanged (inference runs thousands of calls on one set): ``(modes, C_in,
        2 C_out)`` = ``[Wr | Wi]``, or with ``gauss`` the pair ``Wr: (modes, C_in, C_out)``, ``[Wi - Wr; Wr + Wi]:
        (2 modes, C_in, C_out)`` of the three-product complex multiplication (:meth:`_forward_inference`)."""
        key = (mh, mw, dtype, gauss, self.weight.device, self.weight._version, self.weight.data_ptr())
        cached = self.__dict__.get("_mixing_cache")
        if cached is None or cached[0] != key:
            wt = self._weights(mh, mw).detach()                               # (modes, 2, Ci, Co)
            if gauss:
                wr, wi = wt[:, 0], wt[:, 1]
                value = (wr.to(dtype).contiguous(), torch.cat([wi - wr, wr + wi]).to(dtype).contiguous())
            else:
                wcat = wt.permute(0, 2, 1, 3).reshape(wt.shape[0], self.in_channels, 2 * self.out_channels)
                value = wcat.to(dtype).contiguous()
            cached = self.__dict__["_mixing_cache"] = (key, value)
        return cached[1]

    def _forward_inference(self, x: torch.Tensor, mh: int, mw: int, bias: torch.Tensor | None,
                           residual: torch.Tensor | None, modulation) -> torch.Tensor:
        """Inference (no autograd) in ``mix_dtype`` (fp32 when unset), with no copy of the activations:
        the transforms as GEMMs on views (dense DFT matrices on small grids, :func:`separable_modes` /
        :func:`separable_pixels` on larger ones; the crossover per dtype in
        :data:`INFERENCE_DENSE_MAX_PIXELS`), the mixing as batched GEMMs (:func:`mix_modes` on the
        separable path), its combinations written straight into the inverse's input, bias and shift added to the
        constant mode (``h w`` times them: the sum of the pixels), the modes multiplied by ``1 + scale``
        and ``residual`` accumulated by the inverse's last GEMM."""
        b, ci, h, w = x.shape
        co, n, out_dtype = self.out_channels, b * ci, x.dtype
        dtype = self.mix_dtype or torch.float32
        x = x.to(dtype)
        dense = h * w <= INFERENCE_DENSE_MAX_PIXELS.get(dtype, 0)
        if dense:
            fwd, inv = dense_dft_matrices(h, w, mh, mw, x.device, dtype)
            xm = (fwd @ x.reshape(n, h * w).T).view(-1, 2 * b, ci)             # (modes, [re; im] x B, Ci)
            p = torch.bmm(xm, self.mixing_weight(mh, mw, dtype))            # (modes, 2 B, 2 Co)
            pr, pi = p[:, :b], p[:, b:]
            y = x.new_empty(xm.shape[0], 2, b, co)
            yr, yi = y[:, 0], y[:, 1]
            _combine(pr, pi, yr, yi)
        else:
            mats = separable_dft_matrices(h, w, mh, mw, x.device, dtype)
            xm = separable_modes(x, mats)                                     # ([re, im], modes, B, Ci)
            y = x.new_empty(2, xm.shape[1], b, co)
            yr, yi = y[0], y[1]
            mix_modes(xm, self.mixing_weight(mh, mw, dtype, GAUSS_MIX.get(dtype, False)), y)
        if bias is not None:
            yr[0].add_(bias.to(dtype), alpha=h * w)
        if modulation is not None:
            scale, shift = (m.to(dtype) for m in modulation)
            y.mul_(1 + scale)                                                 # (B, Co) broadcast over the modes
            yr[0].add_(shift, alpha=h * w)
        if residual is not None:
            residual = residual.to(dtype)
        if dense:
            if residual is None:
                out = y.view(-1, b * co).T @ inv
            else:
                out = torch.addmm(residual.reshape(b * co, h * w), y.view(-1, b * co).T, inv)
            return out.view(b, co, h, w).to(out_dtype)
        return separable_pixels(y, h, w, mats, residual).to(out_dtype)

    def _mix(self, a: torch.Tensor, mh: int, mw: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Complex mode mixing in real arithmetic. ``a: (modes, 2B, Ci)`` holds ``[Xr; Xi]`` stacked
        over the batch; with ``P = a Wr``, ``Q = a Wi``: ``Yr = Xr Wr - Xi Wi``, ``Yi = Xr Wi + Xi Wr``,
        each ``(modes, B, Co)``."""
        b = a.shape[1] // 2
        wt = self._weights(mh, mw)
        p, q = torch.bmm(a, wt[:, 0]), torch.bmm(a, wt[:, 1])
        return p[:, :b] - q[:, b:], q[:, :b] + p[:, b:]

    def _forward_dense(self, x: torch.Tensor, mh: int, mw: int) -> torch.Tensor:
        """Only the kept modes are computed, each 2-D transform as one real GEMM
        (:func:`dense_dft_matrices`): no complex tensors, no zero-filled spectra, and the spectrum comes
        out mode-major, as the mixing needs it, without a copy."""
        b, ci, h, w = x.shape
        fwd, inv = dense_dft_matrices(h, w, mh, mw, x.device, torch.float32)
        xs = fwd @ x.float().reshape(b * ci, h * w).T                      # (modes * 2, B * Ci)
        yr, yi = self._mix(xs.view(2 * mh * mw, 2 * b, ci), mh, mw)
        y = torch.stack([yr, yi], 1).view(-1, b * self.out_channels)      # (modes * 2, B * Co)
        return (y.T @ inv).view(b, self.out_channels, h, w).to(x.dtype)

    def convolve(self, x: torch.Tensor, path: str) -> torch.Tensor:
        """The convolution alone (no bias) by one named path of :data:`TRAINING_PATHS`, differentiable;
        ``forward`` chooses among them by grid size (tests and benchmarks compare them)."""
        if path not in TRAINING_PATHS:
            raise ValueError(f"unknown path {path!r}; known: {', '.join(TRAINING_PATHS)}")
        h, w = x.shape[-2:]
        mh, mw = min(self.half, h // 2), min(self.modes_width, w // 2 + 1)
        return getattr(self, f"_forward_{path}")(x, mh, mw)

    def _forward_separable(self, x: torch.Tensor, mh: int, mw: int) -> torch.Tensor:
        """The kept modes by the separable GEMMs of the inference path (:func:`separable_modes`,
        :func:`separable_pixels`), differentiable: every step a plain GEMM, whose backward is GEMMs too."""
        b, ci, h, w = x.shape
        mats = separable_dft_matrices(h, w, mh, mw, x.device, torch.float32)
        xr, xi = separable_modes(x.float(), mats)                            # (modes, B, Ci) each
        wt = self._weights(mh, mw)
        wr, wi = wt[:, 0], wt[:, 1]
        yr = torch.baddbmm(torch.bmm(xr, wr), xi, wi, alpha=-1)
        yi = torch.baddbmm(torch.bmm(xr, wi), xi, wr)
        return separable_pixels(torch.stack([yr, yi]), h, w, mats).to(x.dtype)

    def _forward_fft(self, x: torch.Tensor, mh: int, mw: int) -> torch.Tensor:
        b, ci, h, w = x.shape
        if torch.compiler.is_compiling():  # inductor traces plain FFTs, not custom autograd Functions
            return self._forward_fft_traceable(x, mh, mw)
        xs = _KeptModes.apply(x.float(), mh, mw, 1.0)                         # (2mh, mw, 2, B, Ci)
        yr, yi = self._mix(xs.view(2 * mh * mw, 2 * b, ci), mh, mw)          # (modes, B, Co) each
        co = self.out_channels
        return _FromModes.apply(yr.view(2 * mh, mw, b, co), yi.view(2 * mh, mw, b, co), h, w, 1.0).to(x.dtype)

    def _forward_fft_traceable(self, x: torch.Tensor, mh: int, mw: int) -> torch.Tensor:
        b, ci, h, w = x.shape
        co = self.out_channels
        xr = torch.view_as_real(torch.fft.rfft2(x.float()))[:, :, :, :mw]   # (B, Ci, h, mw, 2)
        xs = _low_rows(xr, mh)                                                # (B, Ci, 2mh, mw, 2)
        yr, yi = self._mix(xs.permute(2, 3, 4, 0, 1).reshape(2 * mh * mw, 2 * b, ci), mh, mw)
        ys = torch.stack([yr, yi], -1).reshape(2 * mh, mw, b, co, 2).permute(2, 3, 0, 1, 4)
        return torch.fft.irfft2(_place_rows(ys, h), s=(h, w)).to(x.dtype)

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
    with torch.autocast(x.device.type, enabled=False):
        return _fourier_resample(x, h2, w2)


def _fourier_resample(x: torch.Tensor, h2: int, w2: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    m, mw = min(h, h2) // 2, min(w, w2) // 2 + 1
    if torch.compiler.is_compiling():  # inductor traces plain FFTs, not custom autograd Functions
        return _fourier_resample_traceable(x, h2, w2)
    if not torch.is_grad_enabled():  # inference: GEMMs on views in the input's dtype, the target grid's scale folded in
        dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32
        src = separable_dft_matrices(h, w, m, mw, x.device, dtype, h2 * w2 / (h * w))
        dst = separable_dft_matrices(h2, w2, m, mw, x.device, dtype)
        return separable_pixels(separable_modes(x.to(dtype), src), h2, w2, dst).to(x.dtype)
    # rfft2 with norm="forward" is (1 / hw) rfft2; irfft2 with norm="forward" is (h2 w2) irfft2
    xs = _KeptModes.apply(x.float(), m, mw, 1.0 / (h * w))                   # (2m, mw, 2, B, C)
    return _FromModes.apply(xs[:, :, 0], xs[:, :, 1], h2, w2, float(h2 * w2)).to(x.dtype)


def _fourier_resample_traceable(x: torch.Tensor, h2: int, w2: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    m, mw = min(h, h2) // 2, min(w, w2) // 2 + 1
    xr = torch.view_as_real(torch.fft.rfft2(x.float(), norm="forward"))[:, :, :, :mw]
    return torch.fft.irfft2(_place_rows(_low_rows(xr, m), h2), s=(h2, w2), norm="forward").to(x.dtype)


def _column_weights(w: int, mw: int, dc_and_nyquist: float, others: float, like: torch.Tensor) -> torch.Tensor:
    """Per-column factors of a half spectrum of width ``w``, shaped ``(mw, 1, 1, 1)`` to scale a
    mode-major ``(2 mh, mw, 2, B, C)`` spectrum: ``dc_and_nyquist`` on column 0 (and ``w / 2`` for even
    ``w``), ``others`` elsewhere."""
    c = torch.full((mw, 1, 1, 1), others, dtype=like.dtype, device=like.device)
    c[0] = dc_and_nyquist
    if w % 2 == 0 and mw > w // 2:
        c[w // 2] = dc_and_nyquist
    return c


def _gather_modes(xr: torch.Tensor, mh: int, mw: int) -> torch.Tensor:
    """Rows ``0..mh-1, h-mh..h-1`` and columns ``0..mw-1`` of ``xr: (B, C, h, W', ...)`` copied out
    mode-major: ``(2 mh, mw, ..., B, C)`` contiguous."""
    b, c, h = xr.shape[:3]
    order = (2, 3, *range(4, xr.dim()), 0, 1)
    out = xr.new_empty(2 * mh, mw, *xr.shape[4:], b, c)
    out[:mh].copy_(xr[:, :, :mh, :mw].permute(order))
    out[mh:].copy_(xr[:, :, h - mh:, :mw].permute(order))
    return out


def _scatter_modes(parts: tuple[torch.Tensor, torch.Tensor], h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_gather_modes`: real and imaginary parts ``(2 mh, mw, B, C)`` placed into a
    complex half spectrum ``(B, C, h, w // 2 + 1)``, zero outside the kept modes."""
    two_mh, mw, b, c = parts[0].shape
    mh = two_mh // 2
    spec = parts[0].new_zeros(b, c, h, w // 2 + 1, 2)
    for i, y in enumerate(parts):
        spec[:, :, :mh, :mw, i].copy_(y[:mh].permute(2, 3, 0, 1))
        spec[:, :, h - mh:, :mw, i].copy_(y[mh:].permute(2, 3, 0, 1))
    return torch.view_as_complex(spec)


class _KeptModes(torch.autograd.Function):
    """``x: (B, C, h, w)`` real -> ``scale * rfft2(x)`` on the kept modes, real, mode-major
    ``(2 mh, mw, [re, im], B, C)``.

    The adjoint of ``rfft2`` restricted to those modes (real input; PyTorch's convention
    ``grad_x = Re(J^H g)``) is ``h w irfft2(G)`` where ``G`` holds ``g`` at the kept modes, zeros
    elsewhere, with every column other than 0 and ``w / 2`` halved: ``irfft2`` counts those twice.
    Autograd's own backward of ``rfft2`` instead zero-pads ``g`` to the full two-sided spectrum and
    runs a complex FFT over it, and slicing adds another zero-filled spectrum."""

    @staticmethod
    def forward(ctx, x, mh, mw, scale):
        ctx.shape, ctx.modes, ctx.scale = x.shape, (mh, mw), scale
        xr = torch.view_as_real(torch.fft.rfft2(x))
        out = _gather_modes(xr, mh, mw)
        return out.mul_(scale) if scale != 1.0 else out

    @staticmethod
    def backward(ctx, g):
        h, w = ctx.shape[-2:]
        mh, mw = ctx.modes
        g = g * _column_weights(w, mw, ctx.scale * h * w, ctx.scale * h * w / 2, g)
        return torch.fft.irfft2(_scatter_modes((g[:, :, 0], g[:, :, 1]), h, w), s=(h, w)), None, None, None


class _FromModes(torch.autograd.Function):
    """``(yr, yi): (2 mh, mw, B, C)`` kept modes -> ``scale * irfft2`` of the half spectrum that holds
    them (zeros elsewhere) on an ``h x w`` grid: ``(B, C, h, w)``.

    ``irfft2`` is real-linear in the kept modes; its adjoint is ``c_k / (h w) rfft2(g)`` on them, with
    ``c_k = 1`` on columns 0 and ``w / 2`` and 2 elsewhere (``irfft2`` drops the imaginary parts on
    those columns after the transform over rows, which the same formula differentiates)."""

    @staticmethod
    def forward(ctx, yr, yi, h, w, scale):
        ctx.size, ctx.modes, ctx.scale = (h, w), yr.shape[:2], scale
        out = torch.fft.irfft2(_scatter_modes((yr, yi), h, w), s=(h, w))
        return out.mul_(scale) if scale != 1.0 else out

    @staticmethod
    def backward(ctx, g):
        h, w = ctx.size
        two_mh, mw = ctx.modes
        gs = _gather_modes(torch.view_as_real(torch.fft.rfft2(g)), two_mh // 2, mw)   # (2mh, mw, 2, B, C)
        gs.mul_(_column_weights(w, mw, ctx.scale / (h * w), 2 * ctx.scale / (h * w), gs))
        return gs[:, :, 0], gs[:, :, 1], None, None, None


# public names of the training path's truncated transforms (benchmarks/spectral_kernels.py times them alone)
KeptModes, FromModes = _KeptModes, _FromModes


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of ``t: (B,)``, shape ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb

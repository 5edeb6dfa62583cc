"""FNO-UNet: a DDPM-style UNet whose convolutions are spectral convolutions.

The network knows nothing of diffusion: it maps ``(x, temp, v)`` to an output of the same
spatial size. Down- and up-sampling resample Fourier modes, so a network built for one
resolution runs unchanged at another.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .spectral import SpectralConv2d, fourier_resample, sinusoidal_embedding

NORMS = (None, "group")


def coordinate_grid(batch: int, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Cell-centre coordinates in ``[0, 1]^2``, shape ``(B, 2, H, W)`` (channel 0: y, 1: x)."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))
    return grid.unsqueeze(0).expand(batch, -1, -1, -1)


def _plain_inference(x: torch.Tensor) -> bool:
    """No autograd, no compilation, no autocast: the case the GEMM formulations below are for (autocast
    would change their dtypes call by call)."""
    return not (torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.is_autocast_enabled(x.device.type))


class Conv1x1(nn.Conv2d):
    """A 1x1 convolution (parameters and state dict of ``nn.Conv2d(cin, cout, 1)``) that runs as one batched
    GEMM on the ``(B, C, H * W)`` view, with autograd too (its backward is batched GEMMs): faster on CPU
    than the convolution kernel, which reorders NCHW inputs (measured in benchmarks/README.md). Under
    torch.compile it is the convolution, which the compiler lowers itself."""

    def __init__(self, cin: int, cout: int, bias: bool = True):
        super().__init__(cin, cout, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if torch.compiler.is_compiling() else self.forward_parts([x])

    def forward_parts(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The convolution of ``torch.cat(parts, dim=1)`` without forming it: one batched GEMM per part with
        its slice of the weights, accumulated (differentiable; the GEMMs' backward is GEMMs too)."""
        b, _, h, w = parts[0].shape
        wt = self.weight.view(1, self.out_channels, self.in_channels).to(parts[0].dtype)
        y, start = None, 0
        for part in parts:
            c = part.shape[1]
            wp, xp = wt[:, :, start:start + c].expand(b, -1, -1), part.reshape(b, c, h * w)
            y = torch.bmm(wp, xp) if y is None else y.baddbmm_(wp, xp)
            start += c
        if self.bias is not None:
            y += self.bias.to(y.dtype)[:, None]
        return y.view(b, self.out_channels, h, w)


def _silu_of_concatenation(parts: list[torch.Tensor]) -> torch.Tensor:
    """``silu(torch.cat(parts, dim=1))``, each part's SiLU written into its channels of the result."""
    out = parts[0].new_empty(parts[0].shape[0], sum(p.shape[1] for p in parts), *parts[0].shape[2:])
    start = 0
    for part in parts:
        torch.ops.aten.silu.out(part, out=out[:, start:start + part.shape[1]])
        start += part.shape[1]
    return out


def _norm(kind: str | None, channels: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    return nn.GroupNorm(math.gcd(8, channels), channels)


class SpectralLayer(nn.Module):
    """A spectral convolution over ``modes`` rows (half of each sign) and ``modes // 2 + 1`` columns of
    the real FFT, plus a bias per output channel, plus a parallel pointwise (1x1, no bias)
    convolution when asked: the reference's ``SpectralConv2d(cin, cout, modes, modes, skip=pointwise)``."""

    def __init__(self, cin: int, cout: int, modes: int, pointwise: bool):
        super().__init__()
        self.spectral = SpectralConv2d(cin, cout, modes, modes // 2 + 1)
        self.bias = nn.Parameter(torch.zeros(cout))
        self.pointwise = Conv1x1(cin, cout, bias=False) if pointwise else None

    def forward(self, x, residual: torch.Tensor | None = None,
                modulation: tuple[torch.Tensor, torch.Tensor] | None = None):
        """``layer(x) * (1 + scale) + shift + residual`` with ``modulation = (scale, shift)``, each ``(B, C_out)``,
        both optional (without autograd folded into the spectral layer: :meth:`SpectralConv2d.forward`)."""
        if modulation is not None and self.pointwise is not None:
            y = self.forward(x)
            y = y * (1 + modulation[0][:, :, None, None]) + modulation[1][:, :, None, None]
            return y if residual is None else y + residual
        if self.pointwise is not None:
            residual = self.pointwise(x) if residual is None else residual + self.pointwise(x)
        return self.spectral(x, self.bias, residual, modulation)


class ResBlock(nn.Module):
    """``norm -> SiLU -> spectral -> norm, scaled and shifted by the time embedding -> SiLU -> dropout ->
    spectral``, plus a shortcut (identity, or a 1x1 convolution without bias when the width changes)."""

    def __init__(self, cin: int, cout: int, temb_ch: int, modes: int, dropout: float, norm: str | None,
                 pointwise: bool):
        super().__init__()
        self.norm1, self.norm2 = _norm(norm, cin), _norm(norm, cout)
        self.conv1 = SpectralLayer(cin, cout, modes, pointwise)
        self.conv2 = SpectralLayer(cout, cout, modes, pointwise)
        self.temb = nn.Linear(temb_ch, 2 * cout)
        self.dropout = nn.Dropout(dropout)
        self.act = nn.SiLU()
        self.shortcut = Conv1x1(cin, cout, bias=False) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        """``x``: the input, or a list of inputs the block reads concatenated along channels (the up path's
        features and skip). Without autograd, when norm1 is the identity and the shortcut a 1x1
        convolution, the concatenation is never formed: the SiLU writes each part into its channels and
        the shortcut sums one GEMM per part."""
        scale, shift = self.temb(self.act(temb)).chunk(2, dim=1)             # (B, C_out) each
        parts = list(x) if isinstance(x, (list, tuple)) else [x]
        if (len(parts) > 1 and _plain_inference(parts[0]) and isinstance(self.norm1, nn.Identity)
                and isinstance(self.shortcut, Conv1x1)):
            act, short = _silu_of_concatenation(parts), self.shortcut.forward_parts(parts)
        else:
            x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            act, short = self.act(self.norm1(x)), self.shortcut(x)
        if isinstance(self.norm2, nn.Identity):  # the scale and shift act on conv1's modes
            h = self.conv1(act, modulation=(scale, shift))
        else:
            h = self.norm2(self.conv1(act)) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        if _plain_inference(h) and not (self.training and self.dropout.p):  # h is read only here: SiLU in place
            return self.conv2(torch.nn.functional.silu(h, inplace=True), residual=short)
        return self.conv2(self.dropout(self.act(h)), residual=short)


class Resample(nn.Module):
    """Fourier resampling to half (down) or to the size of the skip connection (up), followed by a
    spectral convolution at the coarser level's modes."""

    def __init__(self, channels: int, modes: int, pointwise: bool):
        super().__init__()
        self.conv = SpectralLayer(channels, channels, modes, pointwise)

    def forward(self, h, size):
        return self.conv(fourier_resample(h, size))


class LiftedNetwork(nn.Module):
    """A network written as a lifting layer followed by a trunk, ``forward = trunk(lift_input(x, v), temp)``,
    so that a wrapper can add further inputs at the lifted width.

    Subclasses provide ``lift_input(x, v) -> (B, lift_width, H, W)``, ``trunk(h, temp)``, the int
    attribute ``lift_width`` and ``out``, the last layer (a convolution; wrappers that start as a
    zero residual zero it).
    """

    lift_width: int

    def lift_input(self, x: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def trunk(self, h: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FNOUNet2d(LiftedNetwork):
    """UNet of spectral residual blocks, laid out as the reference's FNO-UNet: a 1x1 lifting
    convolution, ``num_res_blocks`` :class:`ResBlock` per level on the way down with a
    :class:`Resample` (Fourier resampling and a spectral convolution) between levels, two blocks in the
    middle, ``num_res_blocks + 1`` blocks per level on the way up (each fed the matching skip), and a
    projection ``norm -> SiLU -> 1x1 convolution``. The time embedding is sinusoidal, then
    ``Linear(ch, 4 ch) -> SiLU -> Linear(4 ch, 4 ch)``; each block scales and shifts its features by it.

    Args:
        modes_height, modes_width: Fourier modes of the spectral convolutions: at level ``i``,
            ``m = min(modes, base_resolution / 2^i)`` rows of the 2D real FFT (half of each sign) and
            ``m // 2 + 1`` columns (:class:`SpectralLayer`), as in the reference.
        in_channels: image channels; ``out_channels`` defaults to the same.
        ch: base width; level ``i`` has ``ch * ch_mult[i]`` channels.
        ch_mult: channel multipliers, one level each; the resolution halves between levels.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        dropout: dropout inside residual blocks.
        use_pos: append the coordinate grid ``v`` (2 channels) to the input.
        norm: ``None`` or ``"group"`` (GroupNorm).
        use_pointwise_op: add a 1x1 convolution beside every spectral convolution.
        base_resolution: the resolution the per-level modes are sized for (default ``modes_height``,
            as in the reference); inputs of any resolution run.
        time_scale: the time input is multiplied by this before its sinusoidal embedding.
    Shapes: ``x: (B, in_channels, H, W)``, ``temp: (B,)``, ``v: (B, 2, H, W)`` -> ``(B, out_channels, H, W)``.
    """

    def __init__(self, modes_height: int = 16, modes_width: int = 16, in_channels: int = 3, ch: int = 64,
                 ch_mult=(1, 2, 2), num_res_blocks: int = 2, dropout: float = 0.0, use_pos: bool = False,
                 norm: str | None = None, use_pointwise_op: bool = False, out_channels: int | None = None,
                 base_resolution: int | None = None, time_scale: float = 1000.0):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; known: none, group")
        if modes_height != modes_width:
            raise ValueError("FNOUNet2d uses square mode windows: modes_height must equal modes_width")
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.use_pos, self.time_scale, self.ch = use_pos, time_scale, ch
        temb_ch = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, temb_ch), nn.SiLU(), nn.Linear(temb_ch, temb_ch))
        self.lift = Conv1x1(in_channels + (2 if use_pos else 0), ch)
        self.lift_width = ch

        base = base_resolution or modes_height
        if base % 2 ** (len(ch_mult) - 1):
            raise ValueError(f"base_resolution {base} is not divisible by 2^{len(ch_mult) - 1}")

        def modes_at(level):
            return max(1, min(modes_height, base >> level))

        block = lambda cin, cout, level: ResBlock(cin, cout, temb_ch, modes_at(level), dropout, norm,
                                                  use_pointwise_op)
        self.down, skips, cur = nn.ModuleList(), [ch], ch
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(block(cur, ch * mult, level))
                cur = ch * mult
                skips.append(cur)
            if level != len(ch_mult) - 1:
                self.down.append(Resample(cur, modes_at(level + 1), use_pointwise_op))
                skips.append(cur)
        last = len(ch_mult) - 1
        self.mid = nn.ModuleList([block(cur, cur, last), block(cur, cur, last)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(cur + skips.pop(), ch * mult, level))
                cur = ch * mult
            if level != 0:
                self.up.append(Resample(cur, modes_at(level), use_pointwise_op))
        self.out_norm = _norm(norm, cur)
        self.out = Conv1x1(cur, self.out_channels)
        self.act = nn.SiLU()

    def lift_input(self, x: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """Lifting layer: ``(B, in_channels, H, W) -> (B, ch, H, W)``."""
        if self.use_pos:
            if v is None:
                v = coordinate_grid(x.shape[0], x.shape[-2], x.shape[-1], x.device, x.dtype)
            x = torch.cat([x, v.to(x.dtype)], dim=1)
        return self.lift(x)

    #: dtype of autocast for the trunk (``torch.bfloat16``), or ``None`` for none. Spectral layers
    #: and Fourier resampling run in fp32 whatever it is; the trunk's output is returned in fp32.
    autocast_dtype: torch.dtype | None = None

    #: dtype the trunk computes in for inference (:meth:`set_inference_dtype`), or ``None``: fp32.
    inference_dtype: torch.dtype | None = None

    def set_inference_dtype(self, dtype: torch.dtype | None) -> None:
        """Run the trunk in ``dtype`` (``torch.bfloat16``) for inference, or in fp32 again (``None``).

        The trunk's parameters other than the spectral weights are cast in place once, their fp32
        values kept aside and put back by ``None`` (exactly); the spectral layers keep fp32 weights and
        transform and mix modes in ``dtype`` (a cast copy of the weights, kept between calls); the
        lifting layer and the trunk's output stay fp32. Casting once, instead of autocast's cast of every
        weight at every call, is what makes bf16 pay on CPU. Not for training: the optimizer would see
        cast parameters."""
        masters = self.__dict__.setdefault("_fp32_masters", {})
        for name, p in self.named_parameters():
            if name.startswith("lift.") or name.endswith("spectral.weight"):
                continue
            if dtype is None:
                if name in masters:
                    p.data = masters.pop(name)
            else:
                p.data = masters.setdefault(name, p.data).to(dtype)
        for m in self.modules():
            if isinstance(m, SpectralConv2d):
                m.mix_dtype = dtype
        self.inference_dtype = dtype

    def trunk(self, h: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
        """Everything after the lifting layer: ``(B, ch, H, W) -> (B, out_channels, H, W)``."""
        if self.inference_dtype is not None:
            return self._trunk(h.to(self.inference_dtype), temp).float()
        if self.autocast_dtype is None:
            return self._trunk(h, temp)
        with torch.autocast(h.device.type, dtype=self.autocast_dtype):
            return self._trunk(h, temp).float()

    def _trunk(self, h: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
        temb = self.temb(sinusoidal_embedding(temp * self.time_scale, self.ch).to(h.dtype))
        hs = [h]
        for layer in self.down:
            if isinstance(layer, Resample):
                h = layer(h, (h.shape[-2] // 2, h.shape[-1] // 2))
            else:
                h = layer(h, temb)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, temb)
        for layer in self.up:
            if isinstance(layer, Resample):
                h = layer(h, hs[-1].shape[-2:])
            else:
                h = layer([h, hs.pop()], temb)
        return self.out(self.act(self.out_norm(h)))

    def forward(self, x: torch.Tensor, temp: torch.Tensor, v: torch.Tensor | None = None, level=None,
                **kwargs) -> torch.Tensor:
        """``x: (B, C, H, W)`` at times ``temp: (B,)`` on the coordinate grid ``v``. ``level`` is accepted for
        the reference code's call (``model(x=, temp=, v=, level=)``) and unused: one network serves every
        grid. Any other keyword is refused: a conditioning wrapper must consume it."""
        if kwargs:
            raise TypeError(
                f"FNOUNet2d got unexpected keyword arguments {sorted(kwargs)}; wrap it in a model "
                "that consumes them (see `ddo plugins` for registered wrappers)"
            )
        return self.trunk(self.lift_input(x, v), temp)


def count_parameters(model: nn.Module) -> int:
    """Number of real scalars (a complex weight counts twice, as stored)."""
    return sum(p.numel() for p in model.parameters())

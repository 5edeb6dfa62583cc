"""Networks that refine an interpolation of the context: the normalised convolution (a grid
interpolation with its leave-one-out error), ``sparse-interp`` / ``sparse-biharmonic``
(:class:`SparseInterpModel`) and the point-set keys (:class:`PointSetModel`). Called as
``model(x, t, coords, **context)`` like every wrapper in :mod:`~ddo_conditional.nn.conditional_model`."""
from __future__ import annotations

import torch
from ddo.api import LiftedNetwork
from torch import nn

from .conditional_model import ConditionalNetwork, needs_lifted


class NormalizedConvolution(nn.Module):
    """Dense interpolation of sparse observations by normalised convolution at several scales.

    ``interp = sum_i w_i G_i * (m c) / sum_i w_i G_i * m`` with Gaussian kernels ``G_i`` (widths in
    pixels) and weights ``w_i`` decreasing with width, so the finest scale decides wherever it sees
    observations and coarser ones fill the gaps. Differentiable, no parameters; ``(B, C, H, W)``.
    """

    def __init__(self, sigmas=(1.0, 2.5), weights=(1.0, 0.05)):
        super().__init__()
        self.weights = tuple(float(w) for w in weights)
        center = 0.0
        for i, s in enumerate(sigmas):
            r = max(1, int(round(3 * s)))
            g = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * s * s))
            self.register_buffer(f"k{i}", (g / g.sum()), persistent=False)
            center += self.weights[i] * float(g[r] / g.sum()) ** 2
        self.n = len(sigmas)
        # weight of a pixel's own observation in ``num`` and ``den`` (sum over scales of w_i g_i(0)^2),
        # removed for leave-one-out estimates at observed pixels (:meth:`loo_rms`)
        self.center_weight = center

    def _blur(self, x, k):
        c, r = x.shape[1], k.numel() // 2
        x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1).to(x.dtype), padding=(0, r), groups=c)
        return torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1).to(x.dtype), padding=(r, 0), groups=c)

    def forward(self, context_image, observation_mask):
        num, den = self.sums(context_image, observation_mask)
        return num / (den + 1e-6)

    def sums(self, context_image, observation_mask):
        """Numerator and denominator of the interpolation, ``(B, C, H, W)`` and ``(B, 1, H, W)``."""
        c = context_image.shape[1]
        both = torch.cat([context_image * observation_mask, observation_mask], 1)
        num = den = 0.0
        for i in range(self.n):
            b = self._blur(both, getattr(self, f"k{i}")) * self.weights[i]
            num, den = num + b[:, :c], den + b[:, c:]
        return num, den

    def loo_rms(self, context_image, observation_mask):
        """Root mean square, per image ``(B,)``, of the leave-one-out interpolation error at the
        observed pixels: each observation predicted from the others by the same interpolation (its
        own term removed from ``num`` and ``den``). A measure of how rough the image is at the
        sampling density, known from the context alone."""
        num, den = self.sums(context_image, observation_mask)
        cw = self.center_weight
        m = observation_mask
        observed = context_image * m
        loo = (num - cw * observed) / (den - cw * m).clamp_min(1e-6)
        err = ((observed - loo * m) ** 2).flatten(1).sum(1)
        count = (m.flatten(1).sum(1) * context_image.shape[1]).clamp_min(1.0)
        return (err / count).sqrt()


RESIDUAL_SCALES = ("none", "context", "context-input")


class SparseInterpModel(ConditionalNetwork):
    """``sparse-interp``: the context densified by :class:`NormalizedConvolution`, fed with the mask
    into the base network's lifting layer. ``residual=True`` (for a network read as ``x0``): the
    output is the interpolation plus the trunk's output, a residual over it.

    ``residual_scale="context"``: the network's output is multiplied by a per-image scale
    ``s = sqrt(r^2 + floor^2)``, ``r`` the leave-one-out interpolation error of the context
    (:meth:`NormalizedConvolution.loo_rms`), and ``log s`` is fed as one more input channel. The
    trunk's GroupNorms remove each image's feature scale, so without this the last layer has to
    recover it; with it, a smooth image (small ``s``) gets a small residual by construction and
    the network learns one problem in units of ``s`` instead of one per contrast level.
    ``"context-input"`` also feeds the interpolation's deviation from its mean in units of ``s``
    (soft-clipped at 8 by ``8 tanh(./8)``), so the input's detail has the same scale on smooth images.

    ``mask_channels``: 1 when the observation mask is shared by the channels, ``input_dim`` when each
    channel has its own (field pairs observed one channel at a time, :mod:`~ddo_conditional.pde.routes`).
    ``extra_channels``: further context inputs of the lifting layer, given as ``context_extra`` (the
    kriging posterior's relative std beside its mean, ``sparse-kriging``).
    """

    def __init__(self, base_model: LiftedNetwork, input_dim: int = 3, refiner_width: int = 0,
                 residual_scale: str = "none", scale_floor: float = 0.01, residual: bool = False,
                 mask_channels: int = 1, extra_channels: int = 0):
        super().__init__()
        needs_lifted(base_model, "sparse-interp")
        if residual_scale not in RESIDUAL_SCALES:
            raise ValueError(f"unknown residual scale {residual_scale!r}; known: {', '.join(RESIDUAL_SCALES)}")
        self.base_model = base_model
        self.interp = NormalizedConvolution()
        self.residual_scale, self.scale_floor, self.residual = residual_scale, float(scale_floor), residual
        extra = {"none": 0, "context": 1, "context-input": 1 + input_dim}[residual_scale] + extra_channels
        self.extra_channels = extra_channels
        self.context_lift = nn.Conv2d(input_dim + mask_channels + extra, base_model.lift_width, 1)
        nn.init.zeros_(base_model.out.weight)  # start as the interpolation itself (a zero residual)
        nn.init.zeros_(base_model.out.bias)
        self.refiner = None
        if refiner_width:
            # local 3x3 path for the high-frequency detail that the spectral trunk's truncated modes
            # cannot produce; sees the noisy image, the interpolation, the mask and the trunk's output
            w, c = refiner_width, input_dim
            self.refiner = nn.Sequential(
                nn.Conv2d(3 * c + mask_channels, w, 3, padding=1), nn.SiLU(),
                nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
                nn.Conv2d(w, c, 3, padding=1),
            )
            nn.init.zeros_(self.refiner[-1].weight)
            nn.init.zeros_(self.refiner[-1].bias)

    def dense(self, context_image, observation_mask, context_dense=None):
        """The interpolation the network refines: ``context_dense`` when the data provides one
        (for example biharmonic inpainting), else the normalised convolution of the context."""
        return context_dense if context_dense is not None else self.interp(context_image, observation_mask)

    def scale(self, context_image, observation_mask):
        """The per-image output scale ``s``, ``(B, 1, 1, 1)`` (see the class docstring)."""
        r = self.interp.loo_rms(context_image, observation_mask)
        return (r * r + self.scale_floor ** 2).sqrt().view(-1, 1, 1, 1)

    def _context_terms(self, context_image, observation_mask, context_dense, context_extra=None):
        """``(dense, lifted context, output scale or None)``: what the network computes from the context."""
        dense = self.dense(context_image, observation_mask, context_dense)
        inputs = [dense, observation_mask]
        if self.extra_channels:
            if context_extra is None or context_extra.shape[1] != self.extra_channels:
                raise ValueError(f"this network reads {self.extra_channels} context_extra channels beside the context")
            inputs.append(context_extra)
        s = None
        if self.residual_scale != "none":
            s = self.scale(context_image, observation_mask)
            inputs.append(s.log().expand_as(observation_mask[:, :1]))
            if self.residual_scale == "context-input":  # the interpolation's detail in units of s, soft-clipped
                detail = (dense - dense.mean((2, 3), keepdim=True)) / s
                inputs.append(8 * torch.tanh(detail / 8))
        return dense, self.context_lift(torch.cat(inputs, 1)), s

    def cache_context(self, **kwargs) -> dict:
        """The kwargs with the step-invariant context terms added (``context_dense``,
        ``context_lifted`` and, with a residual scale, ``context_scale``), for samplers that call the
        network many times on one context."""
        if kwargs.get("context_image") is None or kwargs.get("observation_mask") is None:
            return kwargs
        dense, lifted, s = self._context_terms(kwargs["context_image"], kwargs["observation_mask"],
                                               kwargs.get("context_dense"), kwargs.get("context_extra"))
        out = {**kwargs, "context_dense": dense, "context_lifted": lifted}
        return out if s is None else {**out, "context_scale": s}

    def forward(self, x, temp, v=None, context_image=None, observation_mask=None, level=None, **context):
        """``context``: the terms of :meth:`cache_context` when they were cached (``context_dense``,
        ``context_lifted``, ``context_scale``), else computed here."""
        if context_image is None:
            return self.base_model(x, temp, v, level=level, **context)
        if observation_mask is None:
            raise ValueError("sparse-interp needs observation_mask beside context_image")
        lifted = context.get("context_lifted")
        if lifted is None:
            dense, lifted, s = self._context_terms(context_image, observation_mask, context.get("context_dense"),
                                                   context.get("context_extra"))
        else:
            dense, s = context["context_dense"], context.get("context_scale")
        out = self.base_model.trunk(self.base_model.lift_input(x, v) + lifted, temp)
        if self.refiner is not None:
            out = out + self.refiner(torch.cat([x, dense, observation_mask, out], 1))
        if s is not None:
            out = out * s
        return out + dense if self.residual else out


class PointSetModel(ConditionalNetwork):
    """``sparse-setconv`` / ``sparse-attention``: a context of points at any coordinates.

    The points (``context_coords (B, K, 2)``, ``context_point_values (B, K, C)``, ``context_valid (B, K)``;
    :mod:`ddo_conditional.data.points`) are turned into features on the grid of ``x``, whatever its size:
    their thin-plate spline ``dense`` (``context_dense``), the per-image scale ``s = sqrt(r^2 +
    floor^2)`` from the spline's leave-one-out RMS error ``r`` (``context_loo``), and the ``encoder``'s
    features. ``[dense, features, log s, detail / s]`` enter the lifting layer through a 1x1
    convolution (zero at initialisation). ``residual=True`` (an ``x0`` network): the output is
    ``dense + s * trunk``, a residual over the spline in units of its own error, as
    :class:`SparseInterpModel` does over a grid interpolation. Denser points leave a smaller ``r``,
    so the correction shrinks with the spline's error; ``scale_floor`` must sit below the errors
    the model will meet (a floor above them lets the residual exceed what the spline gets wrong).
    """

    def __init__(self, base_model: LiftedNetwork, encoder: nn.Module, feature_dim: int, input_dim: int = 3,
                 scale_floor: float = 1e-4, residual: bool = False):
        super().__init__()
        needs_lifted(base_model, "a point-set conditioning")
        self.base_model, self.encoder = base_model, encoder
        self.scale_floor, self.residual = float(scale_floor), residual
        self.context_lift = nn.Conv2d(2 * input_dim + feature_dim + 1, base_model.lift_width, 1)
        nn.init.zeros_(self.context_lift.weight)
        nn.init.zeros_(self.context_lift.bias)
        if residual:
            nn.init.zeros_(base_model.out.weight)  # start as the spline itself
            nn.init.zeros_(base_model.out.bias)

    def scale(self, context_loo: torch.Tensor) -> torch.Tensor:
        """The per-image output scale ``s = sqrt(r^2 + floor^2)``, ``(B, 1, 1, 1)``."""
        return (context_loo * context_loo + self.scale_floor ** 2).sqrt().view(-1, 1, 1, 1)

    def cache_context(self, **kwargs) -> dict:
        """The kwargs with ``context_lifted`` added, at the resolution of ``kwargs['context_dense']``;
        needs the dense spline to know the grid."""
        if kwargs.get("context_coords") is None or kwargs.get("context_dense") is None:
            return kwargs
        h, w = kwargs["context_dense"].shape[-2:]
        return {**kwargs, "context_lifted": self._lifted(h, w, **kwargs)}

    def _lifted(self, h, w, context_coords, context_point_values, context_valid, context_dense, context_loo,
                **_) -> torch.Tensor:
        feats = self.encoder(context_coords, context_point_values, context_valid, h, w)
        s = self.scale(context_loo)
        detail = 8 * torch.tanh((context_dense - context_dense.mean((2, 3), keepdim=True)) / s / 8)
        return self.context_lift(torch.cat([context_dense, feats, s.log().expand(-1, 1, h, w), detail], 1))

    def forward(self, x, temp, v=None, context_coords=None, level=None, **context):
        """``context``: ``context_point_values``, ``context_valid``, ``context_dense``, ``context_loo``
        and, when cached, ``context_lifted``."""
        if context_coords is None:
            return self.base_model(x, temp, v, level=level, **context)
        dense, loo = context.get("context_dense"), context.get("context_loo")
        if dense is None or loo is None:
            raise ValueError("a point-set network needs context_dense and context_loo "
                             "(ddo_conditional.classical.thin_plate.point_context computes them)")
        lifted = context.get("context_lifted")
        if lifted is None:
            lifted = self._lifted(*x.shape[-2:], context_coords, **context)
        out = self.base_model.trunk(self.base_model.lift_input(x, v) + lifted, temp)
        if not self.residual:
            return out
        return dense + out * self.scale(loo)

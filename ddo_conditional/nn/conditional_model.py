"""Conditioning wrappers around an unconditional DDO network.

Each wrapper takes the reference code's call, ``model(x, temp, v, context_image=None, ...)`` by
position or by keyword (``temp: (B,)`` the diffusion time, ``v`` the coordinate grid, ``level`` passed
through), as every ``DenoisingDiffusion`` path and the paper's own ``DenoisingDiffusion.model`` call
it. With ``context_image=None`` each returns exactly the base network's output, so an unconditioned
call is the unconditional model.
"""
from __future__ import annotations

import math

import torch
from ddo.api import LiftedNetwork
from torch import nn


class ConditionalNetwork(nn.Module):
    """A network that takes context kwargs. :meth:`cache_context` adds the terms that do not change
    between sampler steps (computed once per group of samples instead of at every step); the
    default adds nothing."""

    def cache_context(self, **kwargs) -> dict:
        return kwargs


def needs_lifted(base_model, key: str) -> None:
    if not isinstance(base_model, LiftedNetwork):
        raise ValueError(f"{key} adds its inputs at the lifting layer; the network "
                         f"{type(base_model).__name__} has none (use --model fno-unet or another "
                         "ddo.models.LiftedNetwork)")


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ConditionalDDOModel(ConditionalNetwork):
    """The spec's encoder conditioning.

    ``context_image (B, C, H, W)`` -> three 3x3 convolutions (``C -> F -> F -> F``, GroupNorm + SiLU
    between) -> concatenated with the noisy image (``C + F`` channels) -> 3x3 conv to ``2C``,
    GroupNorm + SiLU, 3x3 conv to ``C`` -> the base network.
    """

    def __init__(self, base_model: nn.Module, input_dim: int = 3, context_feature_dim: int = 32):
        super().__init__()
        f, c = context_feature_dim, input_dim
        self.base_model = base_model
        self.context_encoder = nn.Sequential(
            nn.Conv2d(c, f, 3, padding=1), _gn(f), nn.SiLU(),
            nn.Conv2d(f, f, 3, padding=1), _gn(f), nn.SiLU(),
            nn.Conv2d(f, f, 3, padding=1),
        )
        self.combine = nn.Sequential(
            nn.Conv2d(c + f, 2 * c, 3, padding=1), _gn(2 * c), nn.SiLU(),
            nn.Conv2d(2 * c, c, 3, padding=1),
        )

    def cache_context(self, **kwargs) -> dict:
        """The kwargs with the step-invariant encoder features added (``context_features``), for
        samplers that call the network many times on one context."""
        if kwargs.get("context_image") is None:
            return kwargs
        return {**kwargs, "context_features": self.context_encoder(kwargs["context_image"])}

    def forward(self, x, temp, v=None, context_image=None, context_features=None, **kwargs):
        if context_image is not None:
            if context_features is None:
                context_features = self.context_encoder(context_image)
            x = self.combine(torch.cat([x, context_features], dim=1))
        return self.base_model(x, temp, v, **kwargs)


class ConditionalDDOModelSimple(ConditionalNetwork):
    """The spec's simple conditioning: ``[x, context_image]`` -> 1x1 conv back to ``C`` channels -> base."""

    def __init__(self, base_model: nn.Module, input_dim: int = 3):
        super().__init__()
        self.base_model = base_model
        self.combine = nn.Conv2d(2 * input_dim, input_dim, 1)

    def forward(self, x, temp, v=None, context_image=None, **kwargs):
        if context_image is not None:
            x = self.combine(torch.cat([x, context_image], dim=1))
        return self.base_model(x, temp, v, **kwargs)


class ConditionalLiftModel(ConditionalNetwork):
    """Context and observation mask added into the base network's lifting layer.

    ``h = base.lift_input(x, coords) + W [context_image, observation_mask]`` with a 1x1 convolution ``W``
    (zero at initialisation), then ``base.trunk(h, temp)``. No 3-channel bottleneck: the context
    reaches the network at full width. The base is a :class:`ddo.models.LiftedNetwork`.
    """

    def __init__(self, base_model: LiftedNetwork, input_dim: int = 3):
        super().__init__()
        needs_lifted(base_model, "sparse-lift")
        self.base_model = base_model
        width = base_model.lift_width
        self.context_lift = nn.Conv2d(input_dim + 1, width, 1)
        nn.init.zeros_(self.context_lift.weight)
        nn.init.zeros_(self.context_lift.bias)

    def forward(self, x, temp, v=None, context_image=None, observation_mask=None, level=None, **kwargs):
        if context_image is None:
            return self.base_model(x, temp, v, level=level, **kwargs)
        if observation_mask is None:
            raise ValueError("sparse-lift needs observation_mask beside context_image")
        h = self.base_model.lift_input(x, v) + self.context_lift(torch.cat([context_image, observation_mask], 1))
        return self.base_model.trunk(h, temp)

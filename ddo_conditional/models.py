"""Conditioning wrappers around an unconditional DDO network.

Each wrapper is called as ``model(x, temp, v, context_image=..., ...)`` by every
``DenoisingDiffusion`` path. With ``context_image=None`` each returns exactly the base network's
output, so an unconditioned call is the unconditional model.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ConditionalDDOModel(nn.Module):
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

    def forward(self, x, temp, v=None, context_image=None, **kwargs):
        if context_image is not None:
            x = self.combine(torch.cat([x, self.context_encoder(context_image)], dim=1))
        return self.base_model(x, temp, v, **kwargs)


class ConditionalDDOModelSimple(nn.Module):
    """The spec's simple conditioning: ``[x, context_image]`` -> 1x1 conv back to ``C`` channels -> base."""

    def __init__(self, base_model: nn.Module, input_dim: int = 3):
        super().__init__()
        self.base_model = base_model
        self.combine = nn.Conv2d(2 * input_dim, input_dim, 1)

    def forward(self, x, temp, v=None, context_image=None, **kwargs):
        if context_image is not None:
            x = self.combine(torch.cat([x, context_image], dim=1))
        return self.base_model(x, temp, v, **kwargs)


class ConditionalLiftModel(nn.Module):
    """Context and observation mask added into the base network's lifting layer.

    ``h = base.lift_input(x, v) + W [context_image, observation_mask]`` with a 1x1 convolution ``W``
    (zero at initialisation), then ``base.trunk(h, temp)``. No 3-channel bottleneck: the context
    reaches the network at full width. The base must expose ``lift_input`` and ``trunk``
    (``FNOUNet2d`` does).
    """

    def __init__(self, base_model: nn.Module, input_dim: int = 3):
        super().__init__()
        if not (hasattr(base_model, "lift_input") and hasattr(base_model, "trunk")):
            raise ValueError("sparse-lift needs a base network with lift_input() and trunk() (fno-unet)")
        self.base_model = base_model
        width = base_model.lift.out_channels
        self.context_lift = nn.Conv2d(input_dim + 1, width, 1)
        nn.init.zeros_(self.context_lift.weight)
        nn.init.zeros_(self.context_lift.bias)

    def forward(self, x, temp, v=None, context_image=None, observation_mask=None, **kwargs):
        if context_image is None:
            return self.base_model(x, temp, v, **kwargs)
        if observation_mask is None:
            raise ValueError("sparse-lift needs observation_mask beside context_image")
        h = self.base_model.lift_input(x, v) + self.context_lift(torch.cat([context_image, observation_mask], 1))
        return self.base_model.trunk(h, temp)

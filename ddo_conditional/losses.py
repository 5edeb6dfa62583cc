"""Training objectives of the plugin. Each goes through ``gen_sde.dsm(x, v, **model_kwargs)``."""
from __future__ import annotations

import torch

from .datasets import create_query_mask_batched


def query_dsm_loss():
    """DSM restricted to the query pixels, normalised by their count: ``(B,)``.

    ``sum_{c, query pixels} 0.5 (eps_hat - eps)^2 / (Q * C)``: the spec's query-only alternative,
    per example.
    """

    def loss(gen_sde, batch, v, model_kwargs):
        x = batch["image"]
        _, c, h, w = x.shape
        terms = gen_sde.dsm(x, v, reduction="none", **model_kwargs)
        qmask = create_query_mask_batched(batch["query_indices"].to(x.device), h, w, x.dtype)
        count = (qmask.flatten(1).sum(1) * c).clamp_min(1.0)
        return {"loss": (terms * qmask).flatten(1).sum(1) / count}

    return loss


def x0_mse_loss(t1_fraction: float = 0.0):
    """Mean squared error of the ``x0`` estimate over all pixels, ``(B,)``, with times drawn by the
    diffusion's timestep sampler. Unlike DSM, whose ``x0`` weight ``alpha_t^2 / sigma_t^2`` vanishes
    near ``t = 1``, every time counts alike, so the one-call estimate at ``t = 1`` is trained as the
    posterior mean. Needs a network built with ``--parameterization x0`` or ``v``.

    ``t1_fraction``: the share of each batch put at ``t = 1`` exactly, where the ``x0`` estimate is
    a plain regression of ``E[x | context]`` (the one-call posterior mean).
    """

    def loss(gen_sde, batch, v, model_kwargs):
        x = batch["image"]
        t = gen_sde.sample_timesteps(x.shape[0], device=x.device, dtype=x.dtype)
        n1 = int(round(t1_fraction * x.shape[0]))
        if n1:
            t = torch.cat([torch.ones(n1, device=x.device, dtype=x.dtype), t[n1:]])
        z_t = gen_sde.forward_diffusion.sample(t, x)
        x0 = gen_sde.model(z_t, t, v, output="x0", **model_kwargs)
        return {"loss": ((x0 - x) ** 2).flatten(1).mean(1)}

    return loss


def x0_mse_mixed_loss():
    """:func:`x0_mse_loss` with half of every batch at ``t = 1``."""
    return x0_mse_loss(t1_fraction=0.5)

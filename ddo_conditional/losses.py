"""Training objectives of the plugin. Each goes through ``gen_sde.dsm(x, v, **model_kwargs)``."""
from __future__ import annotations

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


def x0_mse_loss():
    """Mean squared error of the ``x0`` estimate over all pixels, ``(B,)``, with times drawn by the
    diffusion's timestep sampler. Unlike DSM, whose ``x0`` weight ``alpha_t^2 / sigma_t^2`` vanishes
    near ``t = 1``, every time counts alike, so the one-call estimate at ``t = 1`` is trained as the
    posterior mean. Needs a network built with ``--parameterization x0`` or ``v``."""

    def loss(gen_sde, batch, v, model_kwargs):
        x = batch["image"]
        t = gen_sde.sample_timesteps(x.shape[0], device=x.device, dtype=x.dtype)
        z_t = gen_sde.forward_diffusion.sample(t, x)
        x0 = gen_sde.model(z_t, t, v, output="x0", **model_kwargs)
        return {"loss": ((x0 - x) ** 2).flatten(1).mean(1)}

    return loss

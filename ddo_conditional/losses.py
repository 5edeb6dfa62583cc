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

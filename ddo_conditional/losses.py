"""Training objectives of the plugin: ``query-dsm`` (the spec's query-only DSM) and the ``x0-mse``
family. Each loss goes through the diffusion (``gen_sde.dsm`` / ``gen_sde.x0``) with the batch's
``model_kwargs`` and returns ``{"loss": (B,)}``, unreduced.

The family's hyperparameters are options, not names: ``--loss-t1-fraction``, ``--loss-weighting`` and
``--loss-floor`` (:data:`LOSS_OPTIONS`) are recorded in ``config.json`` and handed to the factory by
the host (``loss_<name>`` -> keyword ``<name>``). The names of the earlier runs (:data:`EARLIER_NAMES`)
stay registered with their values pinned, so a run recorded under one resumes with the same loss.
"""
from __future__ import annotations

from functools import partial

import torch

from .data.datasets import create_query_mask_batched

WEIGHTINGS = ("none", "relative", "ratio", "relative-l2", "scored-l2")


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


def x0_mse_loss(t1_fraction: float = 0.0, weighting: str = "none", floor: float = 1e-8):
    """Mean squared error of the ``x0`` estimate over all pixels, ``(B,)``, with times drawn by the
    diffusion's timestep sampler. Unlike DSM, whose ``x0`` weight ``alpha_t^2 / sigma_t^2`` vanishes
    near ``t = 1``, every time counts alike, so the one-call estimate at ``t = 1`` is trained as the
    posterior mean. Registered for ``--parameterization x0`` or ``v`` only: the ``x0`` estimate of
    an ``eps`` network divides by ``alpha_t``, which vanishes near ``t = 1``.

    ``t1_fraction``: the share of each batch put at ``t = 1`` exactly, where the ``x0`` estimate is a
    plain regression of ``E[x | context]`` (the one-call posterior mean); 1 trains that estimate alone
    (a network so trained has no samples to draw).

    ``weighting`` of those ``t = 1`` terms, by the error of the estimate the network refines
    (``context_dense``; times below 1 keep plain MSE, so the samples learn the unweighted posterior);
    ``floor`` bounds each weight:

    - ``none``: every term alike.
    - ``relative``: per image ``1 / (MSE of context_dense + floor)``, normalised to mean 1. The score is
      the mean over images of ``-10 log10 MSE_i``, and ``log MSE_i - log MSE_i^dense ~ (MSE_i -
      MSE_i^dense) / MSE_i^dense``: an error costs more on an image the interpolation already renders
      well. The weight is nearly a function of the context, so it mostly moves effort between contexts.
    - ``ratio``: the same weights normalised so that their reciprocals have mean 1: each term is the
      network's MSE over its interpolation's, times the batch's mean interpolation MSE. For contexts of
      many densities, where mean-1 weights give nearly all the weight to the best-interpolated image.
    - ``relative-l2``: per image *and channel* ``1 / sqrt(MSE_c + floor)``, mean 1: a field pair is
      scored by each channel's relative L2 error, and near the estimate ``d sqrt(MSE) = d MSE / (2
      sqrt(MSE))``.
    - ``scored-l2``: ``relative-l2`` on the channels each image's task scores only
      (:func:`scored_channels`): an observed channel's estimate is nearly exact and would otherwise
      take most of the loss.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; known: {', '.join(WEIGHTINGS)}")
    if not 0.0 <= t1_fraction <= 1.0:
        raise ValueError(f"the loss's t = 1 fraction must lie in [0, 1], got {t1_fraction}")
    weights = None if weighting == "none" else partial(_dense_weights, weighting, float(floor))
    return _x0_mse(float(t1_fraction), weights, harmonic=weighting == "ratio")


def _x0_mse(t1_fraction: float, t1_weights, harmonic: bool):
    def norm(w):
        return w * (1 / w).mean() if harmonic else w / w.mean()

    def loss(gen_sde, batch, v, model_kwargs):
        x = batch["image"]
        t = gen_sde.sample_timesteps(x.shape[0], device=x.device, dtype=x.dtype)
        n1 = int(round(t1_fraction * x.shape[0]))
        if n1:
            t = torch.cat([torch.ones(n1, device=x.device, dtype=x.dtype), t[n1:]])
        z_t = gen_sde.forward_diffusion.sample(t, x)
        x0 = gen_sde.x0(z_t, t, v, **model_kwargs)
        mse = ((x0 - x) ** 2).flatten(1).mean(1)
        if n1 and t1_weights is not None:
            w = t1_weights(x[:n1], {k: val[:n1] for k, val in model_kwargs.items()})
            if w.ndim == 2:  # per channel
                head = (((x0[:n1] - x[:n1]) ** 2).flatten(2).mean(2) * norm(w)).mean(1)
            else:
                head = mse[:n1] * norm(w)
            mse = torch.cat([head, mse[n1:]])
        return {"loss": mse}

    return loss


def _dense_weights(weighting: str, floor: float, x: torch.Tensor, model_kwargs: dict) -> torch.Tensor:
    """The ``t = 1`` weights of ``weighting``: ``(n1,)`` per image or ``(n1, C)`` per image and channel."""
    dense = model_kwargs.get("context_dense")
    if dense is None:
        raise ValueError(f"--loss-weighting {weighting} weighs by the error of the estimate the network refines "
                         "(context_dense); use it with --conditioning sparse-biharmonic, sparse-kriging, sparse-route, "
                         "sparse-setconv or sparse-attention")
    if weighting in ("relative", "ratio"):
        return 1.0 / (((dense - x) ** 2).flatten(1).mean(1) + floor)
    w = 1.0 / (((dense - x) ** 2).flatten(2).mean(2) + floor).sqrt()
    return w * scored_channels(model_kwargs["observation_mask"], x.shape[1]) if weighting == "scored-l2" else w


def scored_channels(observation_mask: torch.Tensor, channels: int) -> torch.Tensor:
    """``(B, C)``, 1 where a task scores the channel: the channels observed at no pixel, or every
    channel when all are observed. A mask shared by the channels (``(B, 1, H, W)``) observes them all."""
    observed = (observation_mask.flatten(2) > 0).any(2).expand(-1, channels)
    return (~observed | observed.all(1, keepdim=True)).to(observation_mask.dtype)


# the loss names runs were recorded under before the family's options existed, and the options each
# stands for; registered so that such a run resumes with the same loss
EARLIER_NAMES = {
    "x0-mse-mixed": {"t1_fraction": 0.5},
    "x0-mse-relative": {"t1_fraction": 0.5, "weighting": "relative", "floor": 1e-4},
    "x0-mse-ratio": {"t1_fraction": 0.5, "weighting": "ratio", "floor": 1e-8},
    "x0-mse-scored-l2": {"t1_fraction": 0.5, "weighting": "scored-l2", "floor": 1e-8},
}


def earlier_name(name: str):
    """The factory of an earlier loss name: :func:`x0_mse_loss` with its options pinned (a value the
    configuration records overrides the pinned one; they agree for runs recorded under the name)."""
    return partial(x0_mse_loss, **EARLIER_NAMES[name])


__all__ = ["query_dsm_loss", "x0_mse_loss", "scored_channels", "WEIGHTINGS", "EARLIER_NAMES", "earlier_name"]

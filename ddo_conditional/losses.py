"""Training objectives of the plugin. Each goes through ``gen_sde.dsm(x, v, **model_kwargs)``."""
from __future__ import annotations

import torch

from .data.datasets import create_query_mask_batched


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


def x0_mse_loss(t1_fraction: float = 0.0, t1_weights=None, harmonic: bool = False):
    """Mean squared error of the ``x0`` estimate over all pixels, ``(B,)``, with times drawn by the
    diffusion's timestep sampler. Unlike DSM, whose ``x0`` weight ``alpha_t^2 / sigma_t^2`` vanishes
    near ``t = 1``, every time counts alike, so the one-call estimate at ``t = 1`` is trained as the
    posterior mean. Registered for ``--parameterization x0`` or ``v`` only: the ``x0`` estimate of
    an ``eps`` network divides by ``alpha_t``, which vanishes near ``t = 1``.

    ``t1_fraction``: the share of each batch put at ``t = 1`` exactly, where the ``x0`` estimate is
    a plain regression of ``E[x | context]`` (the one-call posterior mean). ``t1_weights(x, model_kwargs)``:
    weights of those terms, per image ``(n1,)`` or per image and channel ``(n1, C)`` (normalised to
    mean 1), or ``None``. ``harmonic``: normalise the weights instead so that their reciprocals have
    mean 1 (see :func:`x0_mse_ratio_loss`).
    """

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


def x0_mse_mixed_loss():
    """:func:`x0_mse_loss` with half of every batch at ``t = 1``."""
    return x0_mse_loss(t1_fraction=0.5)


def x0_mse_relative_loss(floor: float = 1e-4, t1_fraction: float = 0.5):
    """:func:`x0_mse_mixed_loss` whose ``t = 1`` terms are weighted per image by
    ``1 / (MSE of the biharmonic inpainting + floor)`` (normalised to mean 1 over those terms).
    Needs ``context_dense`` (``--conditioning sparse-biharmonic``, or a point-set key: their thin-plate spline).

    Why: the score is the mean over images of per-image query PSNR, ``-10 log10 MSE_i``, and
    ``log MSE_i - log MSE_i^bih ~ (MSE_i - MSE_i^bih) / MSE_i^bih``: an error costs more on an image
    that biharmonic already renders well. Plain MSE spends the network on textured images and lets it
    add small errors to smooth ones. The weighted minimiser at ``t = 1`` is
    ``E[w x | context] / E[w | context]``; the weight is nearly a function of the context (how smooth
    it is), so it mostly moves effort between contexts. ``floor`` (``[-1, 1]`` units: RMSE 0.01) bounds
    the weight of near-flat images. Times below 1 keep plain MSE: the samples learn the unweighted
    posterior. ``t1_fraction``: the share of each batch at ``t = 1`` (benchmarks/README.md compares values).
    """
    return x0_mse_loss(t1_fraction=t1_fraction, t1_weights=_inverse_dense_mse(floor, "x0-mse-relative"))


def x0_mse_ratio_loss(floor: float = 1e-8, t1_fraction: float = 0.5):
    """:func:`x0_mse_relative_loss` for contexts of many densities: each ``t = 1`` term is the
    network's MSE divided by its interpolation's (``+ floor``), times the batch's mean interpolation MSE.

    Why: both losses weigh the ``t = 1`` terms by ``1 / MSE`` of the interpolation; they differ in how
    the weights are normalised, which sets the weight of those terms beside the plain-MSE terms at
    ``t < 1``. Normalised to mean 1 (``x0-mse-relative``), a batch that mixes 1% and 30% contexts
    gives nearly all the weight to its best-interpolated image, whose MSE is orders of magnitude below
    the others': the ``t = 1`` half of the batch then counts for almost nothing. Here the weights'
    reciprocals have mean 1, so every image contributes its error ratio and the ``t = 1`` terms keep
    the scale of the batch's interpolation errors. ``floor`` (``[-1, 1]`` units squared: RMSE 1e-4)
    keeps the ratio finite where the interpolation is exact; it sits below what a 30% context of a
    smooth field leaves (README: "Any density, any resolution").
    """
    return x0_mse_loss(t1_fraction=t1_fraction, t1_weights=_inverse_dense_mse(floor, "x0-mse-ratio"), harmonic=True)


def _inverse_dense_mse(floor: float, name: str):
    """Per-image weights ``1 / (MSE of context_dense + floor)`` for the ``t = 1`` terms of loss ``name``."""

    def weights(x, model_kwargs):
        dense = model_kwargs.get("context_dense")
        if dense is None:
            raise ValueError(f"loss {name} weighs images by the error of the interpolation the network refines "
                             "(context_dense); use it with --conditioning sparse-biharmonic, sparse-route, sparse-setconv or sparse-attention")
        return 1.0 / (((dense - x) ** 2).flatten(1).mean(1) + floor)

    return weights


def x0_mse_relative_l2_loss(floor: float = 1e-8, t1_fraction: float = 0.5, scored_only: bool = False):
    """:func:`x0_mse_mixed_loss` whose ``t = 1`` terms are weighted per image *and channel* by
    ``1 / sqrt(MSE of context_dense on that channel + floor)`` (normalised to mean 1 over those terms).

    Why: a field pair is scored by the relative L2 error of each channel, ``sqrt(MSE_ic) / ||x_ic||``,
    and where the network is near the estimate it refines, ``d sqrt(MSE) = d MSE / (2 sqrt(MSE))``: an
    error costs in proportion to ``1 / sqrt(MSE)`` of that estimate. Channels differ by orders of
    magnitude (a pressure known to 1% from its own points beside a coefficient wrong on 5% of its
    pixels); an unweighted or per-image loss spends the network on the worst channel and lets it add
    small errors to the good one. ``floor`` (``[-1, 1]`` units squared) bounds the weight of a channel
    its estimate already renders exactly.

    ``scored_only`` (``x0-mse-scored-l2``): the ``t = 1`` terms count only the channels a task scores,
    read from the per-channel ``observation_mask``: the channels observed nowhere in the image, or all
    of them when every channel is observed (the joint task). An observed channel's route is nearly
    exact (a smooth solution kriged from its own points), so with the weights above it would take
    most of the loss while the task scores only the channel it has to infer.
    """

    def weights(x, model_kwargs):
        dense = model_kwargs.get("context_dense")
        if dense is None:
            name, keys = (("x0-mse-scored-l2", "sparse-route") if scored_only else
                          ("x0-mse-relative-l2", "sparse-route, sparse-biharmonic, sparse-setconv or sparse-attention"))
            raise ValueError(f"loss {name} weighs channels by the error of the estimate the network refines "
                             f"(context_dense); use it with --conditioning {keys}")
        w = 1.0 / (((dense - x) ** 2).flatten(2).mean(2) + floor).sqrt()
        return w * scored_channels(model_kwargs["observation_mask"], x.shape[1]) if scored_only else w

    return x0_mse_loss(t1_fraction=t1_fraction, t1_weights=weights)


def scored_channels(observation_mask: torch.Tensor, channels: int) -> torch.Tensor:
    """``(B, C)``, 1 where a task scores the channel: the channels observed at no pixel, or every
    channel when all are observed. A mask shared by the channels (``(B, 1, H, W)``) observes them all."""
    observed = (observation_mask.flatten(2) > 0).any(2).expand(-1, channels)
    return (~observed | observed.all(1, keepdim=True)).to(observation_mask.dtype)

"""Conditional sampling: several samples per image from its context, their mean and spread."""
from __future__ import annotations

import torch
from ddo import schedules
from ddo.models import coordinate_grid
from ddo.progress import progress_bar
from ddo.sampling import check_step, denoise_step, timesteps

from .models import ConditionalNetwork


def _deblur(gen_sde, z: torch.Tensor) -> torch.Tensor:
    fd = gen_sde.forward_diffusion
    zero = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
    log_a, _ = fd.log_alpha_sigma(zero, z.shape[-2:])
    return fd.from_modes(fd.to_modes(z) / log_a.exp().clamp_min(1e-3))


def _impose(z: torch.Tensor, s: float, observed: torch.Tensor, mask: torch.Tensor, generator) -> torch.Tensor:
    """Replace observed pixels of ``z_s`` by a draw of ``alpha(s) x_obs + sigma(s) eps`` (the
    pixel-space marginal of the noise process; under blurring an approximation that ignores the blur)."""
    t = torch.full((1,), s, device=z.device, dtype=z.dtype)
    a, sig = schedules.alpha_sigma(t)
    noisy = a * observed + sig * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return mask * noisy + (1 - mask) * z


def _network_device(gen_sde) -> torch.device:
    return next(gen_sde.network.parameters()).device


def _sample_group(gen_sde, shape, kwargs: dict, num_steps: int, sampler, generator, observed, deblur: bool, bar):
    """One group of samples ``shape = (B k, C, H, W)`` from prior noise; ``observed``: ``(context image,
    observation mask)`` tiled to the group, for data consistency, or ``None``."""
    device = _network_device(gen_sde)
    x0_model = gen_sde.parameterization in ("x0", "v")
    v = coordinate_grid(shape[0], shape[-2], shape[-1], device)
    z = gen_sde.prior_sample(shape, generator=generator, device=device)
    ts = timesteps(num_steps)
    for t, s in zip(ts[:-1], ts[1:]):
        if s <= 0 and deblur and x0_model:
            z = gen_sde.x0(z, t, v, **kwargs)
        else:
            z = sampler(gen_sde, z, t, s, v, generator, **kwargs)
            z = _deblur(gen_sde, z) if s <= 0 and deblur else z
        if observed is not None and s > 0:
            z = _impose(z, s, *observed, generator)
        bar.update(1)
    return z if observed is None else observed[1] * observed[0] + (1 - observed[1]) * z


@torch.no_grad()
def reconstruct(gen_sde, context: dict, shape, num_steps: int = 250, num_samples: int = 8, generator=None,
                sampler=denoise_step, data_consistency: bool = False, observation: tuple | None = None,
                progress: bool = False, deblur: bool = True, max_rows: int | None = None,
                cache: bool = True) -> dict:
    """Sample ``num_samples`` reconstructions of each image from its context.

    Args:
        gen_sde: a ``DenoisingDiffusion`` whose network takes the ``context`` kwargs.
        context: network kwargs for the batch, e.g. ``{"context_image": (B, C, H, W)}``.
        shape: ``(B, C, H, W)``.
        sampler: a step function (:mod:`ddo.sampling`; a registry key is resolved by the caller).
        data_consistency: re-impose the observed pixels, suitably noised, after every step, and
            exactly on the final reconstruction (observed pixels equal the context); needs
            ``observation = (context_image (B, C, H, W), observation_mask (B, 1, H, W))``.
        deblur: end at the clean image, not at the mean of ``z_0`` (``alpha_0 x0``, slightly blurred
            when ``sigma_blur_min > 0``, where the samplers end). For ``x0`` and ``v`` models the last
            step returns the network's ``x0`` estimate itself (exact at any resolution, where
            ``alpha_0`` of high modes falls below float precision); for ``eps`` models the final
            ``z_0`` is divided by ``alpha_0`` per DCT mode, floored at ``1e-3`` (the division would
            amplify the network's error in those modes).
        max_rows: the most rows (images x samples) per network call; default ``B``, so the samples
            are drawn one group of ``B`` after another. The result does not depend on it beyond the
            order of random draws. Smaller calls also bound memory (benchmarks/README.md compares
            row counts).
        cache: compute a :class:`ConditionalNetwork`'s step-invariant context terms once per group
            of samples (:meth:`~ConditionalNetwork.cache_context`) instead of at every step; same result.
    Returns ``{"samples": (S, B, C, H, W), "mean": (B, C, H, W), "std": (B, C, H, W)}``; the
    samples of image ``b`` are ``samples[:, b]``.
    """
    check_step(sampler)
    b = shape[0]
    per_call = max(1, (max_rows or b) // b)  # samples per network call
    if data_consistency and observation is None:
        raise ValueError("data consistency needs observation=(context_image, observation_mask)")
    groups = [min(per_call, num_samples - i) for i in range(0, num_samples, per_call)]
    bar = progress_bar(total=len(groups) * num_steps, desc="reconstruct", enabled=progress, leave=False)
    out = []
    for k in groups:
        def tile(x, k=k):
            return x.repeat(k, *([1] * (x.ndim - 1)))

        kwargs = {name: tile(val) for name, val in context.items()}
        network = getattr(gen_sde.network, "module", gen_sde.network)  # DistributedDataParallel
        if cache and isinstance(network, ConditionalNetwork):
            kwargs = network.cache_context(**kwargs)
        observed = tuple(tile(o.to(_network_device(gen_sde))) for o in observation) if data_consistency else None
        out.append(_sample_group(gen_sde, (b * k,) + tuple(shape[1:]), kwargs, num_steps, sampler, generator,
                                 observed, deblur, bar))
    bar.close()
    z = torch.cat(out)
    samples = z.reshape((num_samples,) + tuple(shape))
    std = samples.std(0, unbiased=True) if num_samples > 1 else torch.zeros_like(samples[0])
    return {"samples": samples, "mean": samples.mean(0), "std": std}

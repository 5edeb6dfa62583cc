"""Every model-side estimate of a conditional reconstruction, behind one :class:`SamplingPlan`.

:class:`Reconstructor` turns a batch's network kwargs into samples (their mean and std) and into
the posterior-mean estimate of an ``x0``/``v`` network (its ``t = 1`` output, averaged over the
square's rotations and flips). Randomness is per sample: the draws of sample ``j`` of the image
with global index ``i`` come from a generator seeded by ``(seed, i, j)`` alone
(:class:`ddo.api.RowGenerators`), so a reconstruction does not depend on the batch size, the rows
per network call, the order of the data or the number of processes. Nothing that is not finite
leaves this module: a diverged estimate raises :class:`ddo.api.NumericalError`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
from ddo.api import (X0_PARAMETERIZATIONS, RowGenerators, alpha_sigma, check_finite, check_step, coordinate_grid,
                     ddim_step, progress_bar, randn, sample)

from ..data.augment import apply_dihedral, dihedral_transforms, undo_dihedral
from ..data.points import dihedral_points
from ..nn.conditional_model import ConditionalNetwork
from .guidance import PixelObservation

ESTIMATE_STREAM = 1 << 20  # stream numbers of the t = 1 estimates (sample numbers stay below it)
DIVERGED_FIX = ("the network is not trained enough for this sampler: train longer, or train with "
                "--parameterization x0 (README: Known limitations)")


@dataclass(frozen=True)
class SamplingPlan:
    """How a model is sampled.

    ``samples`` per image, ``steps`` of the step function ``sampler`` (``sampler_name`` its registry
    key, for records), ``rows``: the most rows (images x samples) per network call, ``seed`` of the
    per-sample streams, ``precision`` of the network (``"fp32"``/``"bf16"``, set on the network by
    whoever loads it; recorded here), ``data_consistency``: re-impose the observed pixels at every
    step, ``symmetrize``: average the ``t = 1`` estimate over rotations and flips, ``progress``: show
    progress bars. ``guidance``: a factory ``(observation, scale) -> method`` of
    :mod:`~ddo_conditional.inference.guidance` (``guidance_name`` its key), applied to every step with the
    batch's observed pixels at ``guidance_scale`` (``None``: the method's default)."""

    samples: int = 4
    steps: int = 20
    sampler: Callable = field(default=ddim_step, compare=False)
    sampler_name: str = "ddim"
    rows: int = 32
    seed: int = 0
    precision: str = "fp32"
    data_consistency: bool = False
    symmetrize: bool = True
    progress: bool = False
    guidance: Callable | None = field(default=None, compare=False)
    guidance_name: str | None = None
    guidance_scale: float | None = None

    def __post_init__(self):
        check_step(self.sampler)
        if self.samples < 1 or self.steps < 1 or self.rows < 1:
            raise ValueError("samples, steps and rows must be at least 1")
        if (self.guidance is None) != (self.guidance_name is None):
            raise ValueError("a guided plan needs both the method (guidance) and its key (guidance_name)")

    def record(self) -> dict:
        """The plan as JSON-ready settings."""
        return {"num_samples": self.samples, "steps": self.steps, "sampler": self.sampler_name, "rows": self.rows,
                "seed": self.seed, "precision": self.precision, "data_consistency": self.data_consistency,
                "symmetrize_x0": self.symmetrize,
                **({"guidance": self.guidance_name, "guidance_scale": self.guidance_scale} if self.guidance_name else {})}


class Samples(NamedTuple):
    """``samples (S, B, C, H, W)``, their ``mean`` and unbiased ``std`` ``(B, C, H, W)``, in the model's units."""

    samples: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def _impose(z: torch.Tensor, s: float, observation: tuple, generator) -> torch.Tensor:
    """Replace observed pixels of ``z_s`` by a draw of ``alpha(s) x_obs + sigma(s) eps`` (the
    pixel-space marginal of the noise process; under blurring an approximation that ignores the blur)."""
    observed, mask = observation
    a, sig = alpha_sigma(torch.full((1,), s, device=z.device, dtype=z.dtype))
    noisy = a * observed + sig * randn(z.shape, generator, z.device, z.dtype)
    return mask * noisy + (1 - mask) * z


class Reconstructor:
    """A ``DenoisingDiffusion`` and a :class:`SamplingPlan`.

    ``deblur``: end at the clean image, not at ``z_0 = alpha_0 x`` (``clean_end`` of
    :func:`ddo.api.sample`). ``cache``: compute a :class:`ConditionalNetwork`'s
    step-invariant context terms once per group of samples (same result). ``conditional``: whether the
    network sees the context; an unconditional one (reconstructing through the plan's guidance alone)
    has no posterior-mean estimate, so :attr:`one_call` is ``False`` for it."""

    def __init__(self, denoiser, plan: SamplingPlan, deblur: bool = True, cache: bool = True,
                 conditional: bool = True):
        if not conditional and plan.guidance is None:
            raise ValueError("an unconditional model reconstructs from observations only with guidance")
        self.denoiser, self.plan, self.deblur, self.cache = denoiser, plan, deblur, cache
        self.device = next(denoiser.network.parameters()).device
        self.one_call = denoiser.parameterization in X0_PARAMETERIZATIONS and conditional

    def _generators(self, indices, streams) -> RowGenerators:
        """Row ``(j, b)`` (stream-major) seeded by ``(seed, indices[b], streams[j])``."""
        return RowGenerators.from_keys([(self.plan.seed, int(i), int(j)) for j in streams for i in indices], self.device)

    def _network_kwargs(self, context: dict, k: int) -> dict:
        kwargs = {name: val.repeat(k, *([1] * (val.ndim - 1))) for name, val in context.items()}
        network = getattr(self.denoiser.network, "module", self.denoiser.network)  # DistributedDataParallel
        return network.cache_context(**kwargs) if self.cache and isinstance(network, ConditionalNetwork) else kwargs

    @torch.no_grad()
    def samples(self, context: dict, shape, indices, observation: tuple | None = None, operator=None) -> Samples:
        """:class:`Samples` of the images ``indices`` (their global indices, ``(B,)``) of ``shape =
        (B, C, H, W)`` from their network kwargs ``context``. ``observation``: ``(context image,
        observation mask)``, needed by the plan's data consistency (observed pixels re-imposed after
        every step, and set to the context exactly in the output) and by the plan's guidance, which reads
        them as a :class:`~ddo_conditional.inference.guidance.PixelObservation` unless ``operator`` gives
        another observation operator (points at any coordinates)."""
        plan, b = self.plan, shape[0]
        if plan.data_consistency and observation is None:
            raise ValueError("data consistency needs observation=(context_image, observation_mask)")
        if plan.guidance is not None and operator is None:
            if observation is None:
                raise ValueError("guidance needs the observations: observation=(context_image, observation_mask) "
                                 "or an operator")
            operator = PixelObservation(*(o.to(self.device) for o in observation))
        per_call = max(1, plan.rows // b)
        groups = [range(j, min(j + per_call, plan.samples)) for j in range(0, plan.samples, per_call)]
        bar = progress_bar(total=len(groups), desc="sample groups", enabled=plan.progress, leave=False)
        out = []
        for streams in groups:
            k = len(streams)
            tiled = None
            if plan.data_consistency:
                tiled = tuple(o.to(self.device).repeat(k, 1, 1, 1) for o in observation)
            out.append(self._group((b * k,) + tuple(shape[1:]), self._network_kwargs(context, k),
                                   self._generators(indices, streams), tiled,
                                   None if operator is None else operator.repeat(k)))
            bar.update(1)
        bar.close()
        samples = torch.cat(out).reshape((plan.samples,) + tuple(shape))
        check_finite(samples, f"the samples of images {_span(indices)}", DIVERGED_FIX)
        std = samples.std(0, unbiased=True) if plan.samples > 1 else torch.zeros_like(samples[0])
        return Samples(samples, samples.mean(0), std)

    def _group(self, shape, kwargs: dict, generator, observation, operator) -> torch.Tensor:
        """One group of samples ``shape = (B k, C, H, W)`` from prior noise (:func:`ddo.api.sample`)."""
        plan = self.plan
        impose = observation is not None
        after = (lambda z, s: _impose(z, s, observation, generator)) if impose else None
        guide = None if plan.guidance is None else plan.guidance(operator, plan.guidance_scale)
        z = sample(self.denoiser, shape, plan.steps, plan.sampler, generator, progress=False, device=self.device,
                   v=coordinate_grid(shape[0], shape[-2], shape[-1], self.device), clean_end=self.deblur,
                   after_step=after, guidance=guide, **kwargs)
        return observation[1] * observation[0] + (1 - observation[1]) * z if impose else z

    @torch.no_grad()
    def posterior_mean(self, context: dict, shape, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """An ``x0``/``v`` network's estimate of ``E[x | context]``: its ``x0`` at ``t = 1`` from prior
        noise, one call per image, averaged over the square's rotations and flips when the plan
        symmetrises (the posterior mean under a prior invariant to them is equivariant to them, so
        the average keeps its target and lowers the network's error). Returns the estimate and the
        spread of the estimates it averages (zeros for one call), ``(B, C, H, W)`` in the model's units."""
        if not self.one_call:
            raise ValueError("the one-call posterior mean needs an x0 or v network")
        moves = dihedral_transforms(shape[-2], shape[-1]) if self.plan.symmetrize else [(0, False)]
        gens = self._generators(indices, [ESTIMATE_STREAM + m for m in range(len(moves))])
        rows = torch.stack([self._at_one(context, shape, gens.generators[m * shape[0]:(m + 1) * shape[0]], k, flip)
                            for m, (k, flip) in enumerate(moves)])
        check_finite(rows, f"the posterior-mean estimate of images {_span(indices)}", DIVERGED_FIX)
        spread = rows.std(0) if len(moves) > 1 else torch.zeros_like(rows[0])
        return rows.mean(0), spread

    def _at_one(self, context: dict, shape, generators, k: int, flip: bool) -> torch.Tensor:
        t = torch.ones(shape[0], device=self.device)
        coords = coordinate_grid(shape[0], shape[-2], shape[-1], self.device)
        z = self.denoiser.prior_sample(shape, generator=RowGenerators(generators), device=self.device)
        kw = {n: _moved(n, val, k, flip) for n, val in context.items()}
        return undo_dihedral(self.denoiser.x0(z, t, coords, **kw), k, flip)


def _moved(name: str, value, k: int, flip: bool):
    """A network kwarg under :func:`apply_dihedral`: images are moved, point coordinates too."""
    if name == "context_coords":
        return dihedral_points(value, k, flip)
    return apply_dihedral(value, k, flip) if torch.is_tensor(value) and value.ndim == 4 else value


def _span(indices) -> str:
    idx = [int(i) for i in indices]
    return str(idx[0]) if len(idx) == 1 else f"{min(idx)}-{max(idx)}"


def reconstruct(denoiser, context: dict, shape, plan: SamplingPlan | None = None, indices=None,
                observation: tuple | None = None) -> dict:
    """Samples of each image from its context (a functional form of :meth:`Reconstructor.samples`):
    ``{"samples": (S, B, C, H, W), "mean": (B, C, H, W), "std": (B, C, H, W)}``. ``indices``: the
    images' global indices (default ``0 .. B-1``), which with the plan's seed fix every draw."""
    indices = range(shape[0]) if indices is None else indices
    out = Reconstructor(denoiser, plan or SamplingPlan()).samples(context, shape, indices, observation)
    return out._asdict()


__all__ = ["SamplingPlan", "Samples", "Reconstructor", "reconstruct", "DIVERGED_FIX"]

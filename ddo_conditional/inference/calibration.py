"""Everything about the spread and the shrinkage: coverage, fits and the loops that gather them (the
file that keeps them with their model: :mod:`~ddo_conditional.io.calibration_file`).

The recalibrated spread is ``std' = sqrt((a std)^2 + (b r)^2 + c^2)`` (:func:`fit_spread`), ``r`` the
context's leave-one-out interpolation error. The file holds its parameters, the shrinkage of an
``x0`` model's correction (:mod:`~ddo_conditional.inference.shrinkage`) when one was fitted, where and how
they were fitted, and the SHA-256 of the checkpoint they were fitted for, so a calibration never
silently applies to other weights. It is written atomically; a file that is unreadable or
malformed is refused in one line.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from ddo.api import NumericalError, UserError

from .batches import batches
from .shrinkage import features, fit_shrinkage

PARAMETERS = ("spread_scale", "spread_roughness", "spread_floor")
COVERAGE_KEYS = ("within_1std", "within_2std", "gaussian_loglik", "within_t95", "within_range")
SHRINKAGE_LIMIT = 512  # validation images the shrinkage is fitted on (one symmetrised x0 estimate each)


def coverage(mean: torch.Tensor, std: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor,
             min_std: float = 1e-3, samples: torch.Tensor | None = None) -> dict[str, float]:
    """Calibration of a predictive spread on the entries that ``mask`` selects.

    Always: coverage of ``mean +- std`` and ``mean +- 2 std`` and the Gaussian log-likelihood per
    entry. With ``samples (S, B, C, H, W)`` (``mean``/``std`` their mean and unbiased std), two checks
    that account for having only ``S`` samples: ``within_t95``, the coverage of the Student-t 95%
    predictive interval ``mean +- t_{0.975, S-1} sqrt(1 + 1/S) std`` (95% if the truth and the samples
    are exchangeable Gaussian draws; the naive 2-std interval holds only ~83% for ``S = 4`` even
    then), and ``within_range``, the share of entries whose truth lies between the smallest and
    largest sample, ``(S - 1) / (S + 1)`` under exchangeability whatever the distribution.
    """
    m = mask.expand_as(truth).bool()
    err = (truth - mean)[m].abs()
    s = std[m].clamp_min(min_std)
    ll = -0.5 * (err / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)
    out = {"within_1std": float((err <= s).float().mean()), "within_2std": float((err <= 2 * s).float().mean()),
           "gaussian_loglik": float(ll.mean())}
    if samples is not None and samples.shape[0] > 1:
        from scipy.stats import t as student_t

        n = samples.shape[0]
        q = float(student_t.ppf(0.975, n - 1)) * math.sqrt(1 + 1 / n)
        inside = (truth >= samples.min(0).values) & (truth <= samples.max(0).values)
        out.update(within_t95=float((err <= q * s).float().mean()), within_range=float(inside[m].float().mean()),
                   within_range_expected=(n - 1) / (n + 1))
    return out


class CoverageSum:
    """:func:`coverage` accumulated over batches, weighted by query entries."""

    def __init__(self):
        self.n, self.sums = 0, {}

    def add(self, mean, std, truth, qmask, samples: torch.Tensor | None = None) -> None:
        q = int(qmask.sum().item()) * truth.shape[1]
        got = coverage(mean, std, truth, qmask, samples=samples)
        for k in COVERAGE_KEYS:
            if k in got:  # the sample-based checks need the samples, not a rescaled std
                self.sums[k] = self.sums.get(k, 0.0) + got[k] * q
        self.n += q

    def result(self) -> dict | None:
        return {k: v / self.n for k, v in self.sums.items()} if self.n else None


def fit_spread(mean: torch.Tensor, std: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor,
               roughness: torch.Tensor | None = None, min_std: float = 1e-3) -> dict[str, float]:
    """The ``a, b, c`` of ``std' = sqrt((a std)^2 + (b r)^2 + c^2)`` that maximise the Gaussian
    likelihood of ``truth`` on the entries ``mask`` selects (``b = 0`` without ``roughness``).

    ``a`` rescales the samples' spread; ``b r`` is an error floor proportional to ``r = roughness``, a
    per-image ``(B,)`` measure of how hard the image is known from its context (errors that the
    samples share, larger on rough images); ``c`` is a constant floor. Fit it on images the scores
    are not taken on. Returns ``{"spread_scale": a, "spread_roughness": b, "spread_floor": c}``."""
    m = mask.expand_as(truth).bool()
    e2 = ((truth - mean)[m].double()) ** 2
    s2 = std[m].double().clamp_min(min_std) ** 2
    r2 = None if roughness is None else (roughness.double().view(-1, 1, 1, 1).expand_as(truth)[m]) ** 2
    rms = math.log(max(float(e2.mean().sqrt()), 1e-4))
    params = torch.tensor([0.0, rms] if r2 is None else [0.0, rms - 1.0, 0.0], dtype=torch.float64,
                          requires_grad=True)
    opt = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def nll():
        opt.zero_grad()
        var = torch.exp(2 * params[0]) * s2 + torch.exp(2 * params[1])
        if r2 is not None:
            var = var + torch.exp(2 * params[2]) * r2
        loss = 0.5 * (e2 / var + var.log()).mean()
        loss.backward()
        return loss

    opt.step(nll)
    got = params.detach().exp().tolist()
    fitted = {"spread_scale": got[0], "spread_roughness": got[2] if r2 is not None else 0.0, "spread_floor": got[1]}
    if not all(math.isfinite(v) for v in fitted.values()):
        raise NumericalError(f"the spread calibration diverged ({fitted}); check that the samples are finite and "
                             "vary, or fit on more images (--limit)")
    return fitted


def apply_spread(std: torch.Tensor, spread: dict, roughness: torch.Tensor | None = None) -> torch.Tensor:
    """``sqrt((a std)^2 + (b r)^2 + c^2)`` for a :func:`fit_spread` result (``std`` and the per-image
    ``roughness`` ``(B,)`` in the units it was fitted in)."""
    var = (spread["spread_scale"] * std) ** 2 + spread["spread_floor"] ** 2
    b = spread.get("spread_roughness", 0.0)
    if b:
        if roughness is None:
            raise ValueError("this spread was fitted with a roughness term; pass the images' roughness")
        var = var + (b * roughness.view(-1, *([1] * (std.dim() - 1)))) ** 2
    return torch.sqrt(var)


def fit_spread_on(reconstructor, wrapper, dataset, limit: int) -> dict[str, float]:
    """:func:`fit_spread` of the samples' per-pixel std on the query pixels of the first ``limit``
    images of ``dataset`` (calibration images: never the test split)."""
    if reconstructor.plan.samples < 2:
        raise ValueError("a spread needs at least 2 samples")
    parts = [[], [], [], [], []]
    for b in batches(dataset, wrapper, reconstructor, limit, desc="calibrate"):
        for lst, t in zip(parts, (b.samples.mean, b.samples.std, b.truth, b.query_mask, b.roughness)):
            lst.append(t)
    return fit_spread(*(torch.cat(lst) for lst in parts))


def fit_shrinkage_on(reconstructor, wrapper, dataset, limit: int) -> dict:
    """:func:`~ddo_conditional.inference.shrinkage.fit_shrinkage` on the first ``limit`` images of ``dataset``
    (held out from training: a validation split), from the posterior-mean estimates."""
    parts = {k: [] for k in ("x0", "spread", "dense", "truth", "qmask", "roughness")}
    for b in batches(dataset, wrapper, reconstructor, limit, desc="fit shrinkage"):
        for k, v in zip(parts, (*b.x0, b.dense, b.truth, b.query_mask, b.roughness)):
            parts[k].append(v)
    t = {k: torch.cat(v) for k, v in parts.items()}
    return fit_shrinkage(t["x0"], t["dense"], t["truth"], t["qmask"],
                         features(t["x0"], t["spread"], t["dense"], t["roughness"]))


def fit_calibration(reconstructor, wrapper, base, limit: int, held_out: bool = False,
                    shrinkage_limit: int = SHRINKAGE_LIMIT) -> dict:
    """The spread recalibration fitted on the first ``limit`` images of ``base`` under masks of the
    model's mask seed + 1 (not the masks it was trained or is scored on), its samples drawn with the
    plan's seed + 1. ``held_out`` (``base`` is a validation split): also the shrinkage of an
    ``x0``/``v`` model's estimate toward the interpolation it refines, when its kwargs hold one; on
    training images it would learn the model's over-fit."""
    plan = reconstructor.plan
    if plan.samples < 2:
        raise UserError("a spread calibration needs --num-samples 2 or more")
    shifted = type(reconstructor)(reconstructor.denoiser, replace(plan, seed=plan.seed + 1))
    masked = wrapper.mask_dataset(base, seed=wrapper.mask_seed + 1)
    record = {**fit_spread_on(shifted, wrapper, masked, limit), "fitted_images": min(limit, len(masked)),
              "fitted_mask_seed": wrapper.mask_seed + 1, "fitted_samples": plan.samples,
              "fitted_steps": plan.steps, "fit": "Gaussian maximum likelihood on query entries"}
    if held_out and wrapper.dense_in_kwargs and shifted.one_call:
        record["shrinkage"] = fit_shrinkage_on(shifted, wrapper, masked, shrinkage_limit)
    return record


__all__ = ["coverage", "CoverageSum", "fit_spread", "apply_spread", "fit_spread_on", "fit_shrinkage_on",
           "fit_calibration", "PARAMETERS",
           "SHRINKAGE_LIMIT"]

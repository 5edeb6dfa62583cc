"""Evaluation of a conditional model against classical interpolation on the same masks.

:func:`evaluate` builds the methods once (a name and a function from a
:class:`~ddo_conditional.inference.batches.Batch` to an image in ``[0, 1]``), runs them on every batch,
accumulates per-image metrics and the spread's coverage, and returns an :class:`Evaluation`:
data, no text and no files (:mod:`~ddo_conditional.io.report` turns it into both).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..classical.baselines import BASELINES, baseline_batch
from ..classical.gaussian_prior import krige_images
from .batches import Batch, batches
from .calibration import CoverageSum, apply_spread
from .metrics import distribution_metrics, image_metrics
from .shrinkage import features, kept, shrink

MODEL_METHODS = ("ddo-mean", "ddo-samples-mean", "ddo-x0", "ddo-x0-shrunk", "ddo-sample")
MEAN_SOURCES = ("ddo-x0-shrunk", "ddo-x0", "ddo-samples-mean")  # ddo-mean: the first the evaluation has
DISTRIBUTION_KEYS = ("crps_query", "coverage_1std", "coverage_2std")
GAUSSIAN_BASELINES = ("kriging",)  # classical methods with a posterior: scored as distributions too
FIGURE_IMAGES = 8


@dataclass
class Evaluation:
    """What an evaluation measured.

    ``methods``: per method, the mean of each per-image metric and ``psnr_query_per_image``;
    ``ddo-mean`` is the posterior mean the project reports (its ``source`` names the method it is).
    Methods with a predictive distribution (the model's samples, 2 or more; the Gaussian posterior of
    ``kriging``) also have ``crps_query`` and the query entries' ``coverage_1std`` / ``coverage_2std``.
    ``coverage`` / ``coverage_calibrated``: the raw and recalibrated spread's coverage on query
    entries (``None`` without samples to spread or without a calibration). ``arrays``: per image,
    ``(N, C, H, W)`` in ``[0, 1]``: ``mean`` (``ddo-mean``), ``std_raw`` and, calibrated, ``std``.
    ``figure``: the first batch's rows by name (:data:`FIGURE_ROWS`), each ``(k, C, H, W)``. ``masks``:
    the dataset's mask settings; ``field_record``: its field record, if any; ``plan``: the sampling plan's
    record; ``seconds``: time in the model and in the baselines."""

    methods: dict
    num_images: int
    masks: dict
    plan: dict
    coverage: dict | None = None
    coverage_calibrated: dict | None = None
    arrays: dict = field(default_factory=dict)
    figure: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    field_record: dict | None = None

    @property
    def mean_source(self) -> str:
        return self.methods["ddo-mean"]["source"]

    def best_baseline(self) -> str:
        return max((m for m in self.methods if m not in MODEL_METHODS), key=lambda m: self.methods[m]["psnr_query"])


def model_methods(reconstructor, shrinkage: dict | None) -> dict[str, Callable[[Batch], torch.Tensor]]:
    """The model's rows: the mean of samples, the first sample, and for ``x0``/``v`` networks the
    posterior-mean estimate (``ddo-x0``) and, with a kept shrinkage, its shrunk form."""
    methods = {"ddo-samples-mean": lambda b: b.samples.mean, "ddo-sample": lambda b: b.samples.samples[0]}
    if not reconstructor.one_call:
        return methods
    methods["ddo-x0"] = lambda b: b.x0[0]
    if shrinkage:
        if shrinkage["feature"] == "disagreement" and not reconstructor.plan.symmetrize:
            raise ValueError("this shrinkage reads the disagreement of the rotated estimates; evaluate with them")
        methods["ddo-x0-shrunk"] = lambda b: shrink(b.x0[0], b.dense, features(*b.x0, b.dense, b.roughness), shrinkage)
    return methods


def baseline_methods(names=BASELINES) -> dict[str, Callable[[Batch], torch.Tensor]]:
    return {m: (lambda b, m=m: baseline_batch(b.truth, b.items["context_indices"], m).to(b.truth.device))
            for m in names if m not in GAUSSIAN_BASELINES}


def gaussian_methods(names, prior) -> dict[str, Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]]:
    """The classical methods with a Gaussian posterior, ``batch -> (mean, std)`` in ``[0, 1]``."""
    if "kriging" not in names:
        return {}
    if prior is None:
        raise ValueError("the kriging baseline needs a Gaussian prior of the training fields")
    return {"kriging": lambda b: krige_images(prior, b.truth, b.items["context_indices"])}


class _Accumulator:
    """Per-image metrics, coverage, arrays and the figure, gathered batch after batch."""

    def __init__(self, spread: dict | None, samples: int):
        self.spread, self.samples = spread, samples
        self.per_image, self.arrays, self.figure, self.n = {}, {}, {}, 0
        self.raw, self.calibrated = CoverageSum(), CoverageSum()

    def add(self, b: Batch, preds: dict, posteriors: dict) -> None:
        """``preds``: each method's image; ``posteriors``: the Gaussian methods' ``(mean, std)``."""
        self.n += b.shape[0]
        for m, p in preds.items():
            for k, val in image_metrics(p, b.truth, b.query_mask).items():
                self.per_image.setdefault(m, {}).setdefault(k, []).append(val.cpu())
        std_cal = None if self.spread is None else apply_spread(b.samples.std, self.spread, b.roughness)
        dists = {m: {"mean": mean, "std": std} for m, (mean, std) in posteriors.items()}
        if self.samples > 1:  # the samples' CRPS; coverage of the spread the report applies
            dists["ddo-samples-mean"] = {"mean": b.samples.mean, "std": b.samples.std if std_cal is None else std_cal,
                                         "samples": b.samples.samples}
        for m, d in dists.items():
            for k, val in distribution_metrics(b.truth, b.query_mask, **d).items():
                self.per_image[m].setdefault(k, []).append(val.cpu())
        got = {"mean": preds[mean_source(preds)], "std_raw": b.samples.std}
        if std_cal is not None:
            got["std"] = std_cal
        for k, v in got.items():
            self.arrays.setdefault(k, []).append(v.cpu())
        if self.samples > 1:
            self.raw.add(b.samples.mean, b.samples.std, b.truth, b.query_mask, samples=b.samples.samples)
            if std_cal is not None:
                self.calibrated.add(b.samples.mean, std_cal, b.truth, b.query_mask)
        if not self.figure:
            self.figure = figure_rows(b, preds)


def evaluate(reconstructor, wrapper, dataset, spread: dict | None = None, limit: int | None = None,
             baselines=BASELINES, field_record: dict | None = None, prior=None) -> Evaluation:
    """Reconstruct the first ``limit`` images of a :class:`FixedSparseMaskDataset` and score every method
    on its masks: the model's rows (:func:`model_methods`), every classical baseline, and ``ddo-mean``:
    ``ddo-x0-shrunk`` when ``spread`` holds a kept shrinkage (fitted on a validation split), else
    ``ddo-x0`` when the model has one, else ``ddo-samples-mean`` (a fixed rule, never chosen by the
    scores). ``spread``: a stored calibration (:mod:`~ddo_conditional.inference.calibration`), applied to the
    samples' std. ``field_record``: the dataset's field record (units, sign), kept with the result.
    ``prior``: the Gaussian prior of the training fields, which the ``kriging`` baseline conditions."""
    shrinkage = kept((spread or {}).get("shrinkage")) if reconstructor.one_call else None
    model, classical = model_methods(reconstructor, shrinkage), baseline_methods(baselines)
    gaussian = gaussian_methods(baselines, prior)
    acc = _Accumulator(spread, reconstructor.plan.samples)
    seconds = {"model_s": 0.0, "baselines_s": 0.0}
    for b in batches(dataset, wrapper, reconstructor, limit):
        preds = {name: fn(b) for name, fn in model.items()}
        t0 = time.perf_counter()
        preds.update({name: fn(b) for name, fn in classical.items()})
        posteriors = {name: fn(b) for name, fn in gaussian.items()}
        preds.update({name: mean for name, (mean, _) in posteriors.items()})
        seconds["baselines_s"] += time.perf_counter() - t0
        seconds["model_s"] += b.model_seconds
        acc.add(b, preds, posteriors)
    masks = {"context_ratio": dataset.context_ratio, "query_ratio": dataset.query_ratio,
             "mask_pattern": dataset.pattern, "mask_seed": dataset.seed}
    raw = acc.raw.result()
    return Evaluation(
        methods=summarise(acc.per_image), num_images=acc.n, masks=masks, plan=reconstructor.plan.record(),
        coverage=None if raw is None else {**raw, "within_range_expected": (acc.samples - 1) / (acc.samples + 1)},
        coverage_calibrated=None if acc.calibrated.result() is None else {**acc.calibrated.result(), **spread},
        arrays={k: torch.cat(v).numpy() for k, v in acc.arrays.items()}, figure=acc.figure,
        seconds={k: round(v, 2) for k, v in seconds.items()}, field_record=field_record)


def mean_source(preds: dict) -> str:
    return next(m for m in MEAN_SOURCES if m in preds)


FIGURE_ROWS = ("context", "sample 1", "sample 2", "posterior mean", "std", "truth", "biharmonic")


def figure_rows(b: Batch, preds: dict) -> dict[str, torch.Tensor]:
    """The figure's rows for the first images of a batch (:data:`FIGURE_ROWS`; a row is absent when
    there is no second sample or no biharmonic baseline), each ``(k, C, H, W)`` in ``[0, 1]``; the std
    row is the channel mean scaled to its maximum."""
    k, c = min(FIGURE_IMAGES, b.shape[0]), b.shape[1]
    obs = b.context["observation_mask"][:k]
    rows = {"context": obs * (b.context["context_image"][:k] + 1) / 2 + (1 - obs) * 0.5}
    for i in range(min(2, b.samples.samples.shape[0])):
        rows[f"sample {i + 1}"] = b.samples.samples[i, :k]
    std = b.samples.std[:k].mean(1, keepdim=True).expand(-1, c, -1, -1)
    rows.update({"posterior mean": preds[mean_source(preds)][:k], "std": std / std.max().clamp_min(1e-6),
                 "truth": b.truth[:k]})
    if "biharmonic" in preds:
        rows["biharmonic"] = preds["biharmonic"][:k]
    return {name: row.clamp(0, 1).cpu() for name, row in rows.items()}


def summarise(per_image: dict) -> dict:
    """Mean of every per-image metric per method, the per-image query PSNR, and ``ddo-mean``."""
    methods = {}
    for m, metrics in per_image.items():
        cat = {k: torch.cat(v) for k, v in metrics.items()}
        methods[m] = {k: float(v.mean()) for k, v in cat.items()}
        methods[m]["psnr_query_per_image"] = [round(float(x), 3) for x in cat["psnr_query"]]
    source = mean_source(methods)
    methods["ddo-mean"] = {**methods[source], "source": source}
    if "crps_query" in methods.get("ddo-samples-mean", {}):  # the mean's predictive distribution: the samples
        methods["ddo-mean"].update({k: methods["ddo-samples-mean"][k] for k in DISTRIBUTION_KEYS})
    return methods


__all__ = ["Evaluation", "evaluate", "model_methods", "baseline_methods", "MODEL_METHODS", "FIGURE_ROWS"]

"""Evaluation of a ``sparse-route`` model on a PDE task (forward, inverse or joint) beside the classical
estimates on the same observations.

:func:`evaluate_task` returns a :class:`TaskEvaluation` (data only; :mod:`~ddo_conditional.pde.report`
turns it into text and files). Errors are measured on the physical fields
(:func:`~ddo_conditional.pde.routes.task_errors`): relative L2 per channel, Darcy's coefficient as the
thresholded error rate; a task's error is the mean over its target channels (the solution for
forward, the input for inverse, both for joint). The task's headline is the best estimate the product
ships (:data:`SHIPPED`), the model's error and distribution beside it: CRPS and interval coverage of
the model's samples and of a reference posterior's draws (:meth:`~ddo_conditional.pde.routes.Routes.reference_draws`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..classical.biharmonic import biharmonic_inpaint
from ..data.datasets import own_context
from ..data.masks import OBSERVED
from ..inference.batches import batches
from ..inference.metrics import crps_ensemble, interval_coverage
from .cache import EstimateCache, RouteCache, slow_estimate, slow_method
from .datasets import to_physical
from .routes import Routes, physical_values, task_errors

TARGETS = {"forward": (1,), "inverse": (0,), "joint": (0, 1)}
FIGURE_IMAGES = 4
# the best estimate the product ships, in order of preference among those a task evaluated: Darcy's
# posterior mean (forward, its own grid), Darcy's inversion (inverse, joint), else the classical route
SHIPPED = ("posterior", "inversion", "interpolation")
REFERENCE_DRAWS = 16


@dataclass
class TaskEvaluation:
    """What a task evaluation measured. ``errors``: per method, ``per_image (N, 2)`` errors (fractions);
    ``seconds``: per method, seconds per reconstruction; ``scores``: per distribution (``ddo``, the
    model's samples; ``reference``, the reference posterior's draws) :func:`distribution_scores` of the
    target channels, ``(N, T)`` each, and ``score_seconds`` the seconds per pair of its draws; ``figure``: the first images' physical fields by row name
    (``observed``, ``truth``, ``ddo``, ``error``, ``std``), each ``(k, 2, H, W)``."""

    kind: str
    task: str
    points: int
    resolution: int
    errors: dict
    seconds: dict
    plan: dict
    scores: dict = field(default_factory=dict)
    score_seconds: dict = field(default_factory=dict)
    figure: dict = field(default_factory=dict)

    @property
    def best(self) -> str:
        """The best estimate the product ships among those evaluated (:data:`SHIPPED`)."""
        return next(m for m in SHIPPED if m in self.errors)

    def score(self, method: str, name: str) -> float:
        """A distribution's mean ``name`` (``crps``, ``coverage_1std``, ``coverage_2std``) over images and targets."""
        return float(self.scores[method][name].mean())

    def target(self, method: str) -> float:
        """The mean error (percent) of ``method`` on the task's target channels."""
        per = self.errors[method][:, list(TARGETS[self.task])]
        return float(per.mean()) * 100

    def channel(self, method: str, c: int) -> float:
        return float(self.errors[method][:, c].mean()) * 100


def _classical(routes: Routes, batch, task: str, slow: bool, cache: EstimateCache) -> dict:
    """``{method: (physical estimates (B, 2, H, W), seconds)}``: co-kriging, for the joint task the
    biharmonic inpainting of each channel from its own points and, unless ``slow`` is off, the estimates
    of seconds per pair, read from ``cache`` where computed before: for Darcy's inverse and joint tasks
    the coefficient fitted to the observations through the solver (``inversion``, :meth:`Routes.inversion`)
    and for Darcy's forward task on the pairs' own grid the posterior mean (``posterior``, :meth:`Routes.posterior`)."""
    items, kind, observed = batch.items, routes.kind, OBSERVED[task]
    context = own_context(items)
    pixels = [p for p, _ in context]
    values = [physical_values(kind, v.double()) for _, v in context]
    t0 = time.perf_counter()
    out = {"kriging": (torch.stack([routes.kriging(p, v, observed) for p, v in zip(pixels, values)]),
                       time.perf_counter() - t0)}
    if task == "joint":
        h, w = batch.shape[-2:]
        t0 = time.perf_counter()
        est = torch.stack([biharmonic_inpaint(v[None].float(), p[None], h, w)[0] for p, v in zip(pixels, values)])
        out["biharmonic"] = (est.double(), time.perf_counter() - t0)
    if slow and slow_method(routes, observed) is not None:
        got = [slow_estimate(routes, cache, p, v, observed) for p, v in zip(pixels, values)]
        out[got[0][0]] = (torch.stack([g[1] for g in got]), sum(g[2] for g in got))
    return out


def _reference(routes: Routes, batch, task: str, draws: int, cache: EstimateCache) -> tuple[torch.Tensor, float]:
    """``(draws, B, T, H, W)``: the task's ``T`` target channels of :meth:`Routes.reference_draws` of every
    image of ``batch`` (kept in ``cache`` as float32, the target channels only), and the seconds they took."""
    kind, observed, targets = routes.kind, OBSERVED[task], list(TARGETS[task])
    out, seconds = [], 0.0
    for p, v in own_context(batch.items):
        v = physical_values(kind, v.double())
        key = cache.key(routes.fingerprint, "reference", (routes.h, routes.w), p, v, observed, draws=draws)
        got, sec = cache.get("reference", key,
                             lambda p=p, v=v: routes.reference_draws(p, v, observed, draws)[:, targets].float())
        out.append(got)
        seconds += sec
    return torch.stack(out, 1).double(), seconds


def distribution_scores(draws: torch.Tensor, truth: torch.Tensor) -> dict:
    """Per image and channel ``(B, T)``, in the fields' units: the ensemble CRPS of ``draws (m, B, T, H, W)``
    over every pixel and the share of pixels within 1 and 2 of the draws' std of their mean."""
    mean, std = draws.mean(0), draws.std(0)
    one = range(truth.shape[1])
    return {"crps": torch.stack([crps_ensemble(draws[:, :, c:c + 1], truth[:, c:c + 1]) for c in one], 1),
            **{f"coverage_{k}std": torch.stack([interval_coverage(mean[:, c:c + 1], std[:, c:c + 1], truth[:, c:c + 1],
                                                                   float(k), min_std=0.0) for c in one], 1)
               for k in (1, 2)}}


def physical_scale(kind: str) -> torch.Tensor:
    """``(2, 1, 1)``: physical units per model unit of each channel."""
    return to_physical(kind, torch.ones(2, 1, 1, dtype=torch.float64)) - to_physical(kind, torch.zeros(2, 1, 1, dtype=torch.float64))


@dataclass(frozen=True)
class TaskSettings:
    """How :func:`evaluate_task` reads the model and which estimates it computes. ``samples``: the model's
    estimate is the mean of its samples (no one-call estimate: unconditional or ``eps`` models); ``slow``
    off leaves out the inversion, the posterior and the reference draws (``reference_draws`` per image, 0
    for none); ``cache`` keeps them on disk; ``routes``: the classical routes (default the wrapper's; a
    guided unconditional model has none of its own)."""

    samples: bool = False
    slow: bool = True
    cache: EstimateCache | None = None
    reference_draws: int = REFERENCE_DRAWS
    routes: RouteCache | None = None


def _model_rows(batch, kind: str, targets: list, settings: TaskSettings, distribution: bool):
    """The model's estimate ``(physical (B, 2, H, W), seconds)``, its samples' target channels in physical
    units with their seconds (or ``None``) and their std (or ``None``). The estimate is timed alone: a
    one-call model's samples, drawn after it, are its distribution's cost."""
    estimate = batch.samples.mean if settings.samples else batch.x0[0]
    row = (to_physical(kind, estimate.double().cpu() * 2 - 1), batch.model_seconds)
    if not (settings.samples or distribution):
        return row, None, None
    before = batch.model_seconds
    out = batch.samples
    draws = to_physical(kind, out.samples.double().cpu() * 2 - 1)[:, :, targets]
    spent = batch.model_seconds if settings.samples else batch.model_seconds - before
    return row, (draws, spent), out.std.double().cpu() * 2 * physical_scale(kind)


def _collect(into: dict, name: str, value) -> None:
    into.setdefault(name, []).append(value)


def evaluate_task(kind: str, task: str, dataset, wrapper, reconstructor, limit: int | None = None,
                  settings: TaskSettings = TaskSettings()) -> TaskEvaluation:
    """Every method on the first ``limit`` images of ``dataset`` (a masked pair dataset observing
    ``task``): ``kriging``, ``interpolation`` (the classical route the network refines, computed once for
    both), ``biharmonic`` (joint only), ``inversion`` (Darcy inverse and joint), ``posterior`` (Darcy
    forward, 128x128) and ``ddo``, the model's posterior-mean estimate, or with ``settings.samples`` the
    mean of the plan's samples (:class:`TaskSettings`). With 2 or more samples in the plan, the samples
    are scored as a distribution, beside the reference posterior's draws unless the slow estimates are off."""
    cache = settings.cache or EstimateCache(None)
    route_cache = settings.routes or wrapper.routes
    routes = route_cache.routes_at(dataset[0]["image"].shape[-1])
    targets, distribution = list(TARGETS[task]), reconstructor.plan.samples >= 2
    errors, seconds, draw_seconds, scores, figure = {}, {}, {}, {}, {}
    n = 0
    for batch in batches(dataset, wrapper, reconstructor, limit, desc=f"{kind} {task}"):
        truth = to_physical(kind, batch.items["image"].double())
        found = _classical(routes, batch, task, settings.slow, cache)
        t0 = time.perf_counter()
        dense = batch.kwargs["context_dense"] if "context_dense" in batch.kwargs else route_cache.dense(batch.items)
        found["interpolation"] = (to_physical(kind, dense.double().cpu()), batch.model_seconds + time.perf_counter() - t0)
        found["ddo"], sampled, std = _model_rows(batch, kind, targets, settings, distribution)
        for name, (est, sec) in found.items():
            _collect(errors, name, task_errors(kind, est, truth))
            seconds[name] = seconds.get(name, 0.0) + sec
        if distribution:
            draws = {"ddo": sampled}
            if settings.slow and settings.reference_draws >= 2:
                draws["reference"] = _reference(routes, batch, task, settings.reference_draws, cache)
            for name, (d, sec) in draws.items():
                draw_seconds[name] = draw_seconds.get(name, 0.0) + sec
                for key, value in distribution_scores(d, truth[:, targets]).items():
                    _collect(scores.setdefault(name, {}), key, value)
        if not figure:
            k = min(FIGURE_IMAGES, len(truth))
            mask = batch.context["observation_mask"][:k].cpu().double()
            figure = {"observed": truth[:k] * mask, "truth": truth[:k], "ddo": found["ddo"][0][:k],
                      "error": found["ddo"][0][:k] - truth[:k], **({"std": std[:k]} if std is not None else {})}
        n += len(truth)
    return TaskEvaluation(kind, task, int(dataset[0]["context_count"]), int(dataset[0]["image"].shape[-1]),
                          {m: torch.cat(e) for m, e in errors.items()}, {m: s / n for m, s in seconds.items()},
                          reconstructor.plan.record(), {m: {k: torch.cat(v) for k, v in d.items()} for m, d in scores.items()},
                          {m: s / n for m, s in draw_seconds.items()}, figure)


__all__ = ["TaskEvaluation", "TaskSettings", "evaluate_task", "distribution_scores", "physical_scale", "TARGETS", "SHIPPED",
           "REFERENCE_DRAWS"]

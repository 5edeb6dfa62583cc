"""Evaluation of a ``sparse-route`` model on a PDE task (forward, inverse or joint) beside the classical
estimates on the same observations.

:func:`evaluate_task` returns a :class:`TaskEvaluation` (data only; :mod:`~ddo_conditional.pde.report`
turns it into text and files). Errors are measured on the physical fields
(:func:`~ddo_conditional.pde.routes.task_errors`): relative L2 per channel, Darcy's coefficient as the
thresholded error rate; a task's error is the mean over its target channels (the solution for
forward, the input for inverse, both for joint).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..classical.biharmonic import biharmonic_inpaint
from ..data.datasets import own_context
from ..data.masks import OBSERVED
from ..inference.batches import batches
from .datasets import PAIR_NATIVE, to_physical
from .routes import Routes, physical_values, task_errors

TARGETS = {"forward": (1,), "inverse": (0,), "joint": (0, 1)}
FIGURE_IMAGES = 4


@dataclass
class TaskEvaluation:
    """What a task evaluation measured. ``errors``: per method, ``per_image (N, 2)`` errors (fractions);
    ``seconds``: per method, seconds per reconstruction; ``figure``: the first images' physical fields
    by row name (``observed``, ``truth``, ``ddo``, ``error``, ``std``), each ``(k, 2, H, W)``."""

    kind: str
    task: str
    points: int
    resolution: int
    errors: dict
    seconds: dict
    plan: dict
    figure: dict = field(default_factory=dict)

    def target(self, method: str) -> float:
        """The mean error (percent) of ``method`` on the task's target channels."""
        per = self.errors[method][:, list(TARGETS[self.task])]
        return float(per.mean()) * 100

    def channel(self, method: str, c: int) -> float:
        return float(self.errors[method][:, c].mean()) * 100


def _classical(routes: Routes, batch, task: str) -> dict:
    """``{method: (physical estimates (B, 2, H, W), seconds)}``: co-kriging, for the joint task the
    biharmonic inpainting of each channel from its own points, for Darcy's inverse and joint tasks the
    coefficient fitted to the observations through the solver (``inversion``, :meth:`Routes.inversion`)
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
    if kind == "darcy-pair" and task == "forward" and routes.h == PAIR_NATIVE:
        t0 = time.perf_counter()
        out["posterior"] = (torch.stack([routes.posterior(p, v) for p, v in zip(pixels, values)]), time.perf_counter() - t0)
    if kind == "darcy-pair" and task != "forward":
        t0 = time.perf_counter()
        out["inversion"] = (torch.stack([routes.inversion(p, v, observed) for p, v in zip(pixels, values)]),
                            time.perf_counter() - t0)
    return out


def physical_scale(kind: str) -> torch.Tensor:
    """``(2, 1, 1)``: physical units per model unit of each channel."""
    return to_physical(kind, torch.ones(2, 1, 1, dtype=torch.float64)) - to_physical(kind, torch.zeros(2, 1, 1, dtype=torch.float64))


def evaluate_task(kind: str, task: str, dataset, wrapper, reconstructor, limit: int | None = None,
                  samples: bool = False) -> TaskEvaluation:
    """Every method on the first ``limit`` images of ``dataset`` (a masked pair dataset observing
    ``task``): ``kriging``, ``interpolation`` (the classical route the network refines, computed once for
    both), ``biharmonic`` (joint only), ``inversion`` (Darcy inverse and joint), ``posterior`` (Darcy
    forward, 128x128) and ``ddo``, the model's posterior-mean estimate, or with ``samples`` the mean of
    the plan's samples (their std then in the figure)."""
    routes = wrapper.routes.routes_at(dataset[0]["image"].shape[-1])
    errors: dict = {}
    seconds: dict = {}
    figure: dict = {}
    n = 0
    for batch in batches(dataset, wrapper, reconstructor, limit, desc=f"{kind} {task}"):
        truth = to_physical(kind, batch.items["image"].double())
        found = _classical(routes, batch, task)
        found["interpolation"] = (to_physical(kind, batch.kwargs["context_dense"].double().cpu()), batch.model_seconds)
        if samples:
            out = batch.samples
            estimate, std = out.mean, out.std.double().cpu() * 2 * physical_scale(kind)
        else:
            estimate, std = batch.x0[0], None
        found["ddo"] = (to_physical(kind, estimate.double().cpu() * 2 - 1), batch.model_seconds)
        for name, (est, sec) in found.items():
            errors.setdefault(name, []).append(task_errors(kind, est, truth))
            seconds[name] = seconds.get(name, 0.0) + sec
        if not figure:
            k = min(FIGURE_IMAGES, len(truth))
            mask = batch.context["observation_mask"][:k].cpu().double()
            figure = {"observed": truth[:k] * mask, "truth": truth[:k], "ddo": found["ddo"][0][:k],
                      "error": found["ddo"][0][:k] - truth[:k]}
            if std is not None:
                figure["std"] = std[:k]
        n += len(truth)
    return TaskEvaluation(kind, task, int(dataset[0]["context_count"]), int(dataset[0]["image"].shape[-1]),
                          {m: torch.cat(e) for m, e in errors.items()}, {m: s / n for m, s in seconds.items()},
                          reconstructor.plan.record(), figure)


__all__ = ["TaskEvaluation", "evaluate_task", "physical_scale", "TARGETS"]

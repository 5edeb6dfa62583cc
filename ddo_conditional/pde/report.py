"""Text, JSON and figures of :class:`~ddo_conditional.pde.tasks.TaskEvaluation` s."""
from __future__ import annotations

import torch

from ..io.report import diverging
from .tasks import TARGETS, TaskEvaluation

METHOD_ORDER = ("ddo", "interpolation", "inversion", "posterior", "kriging", "biharmonic")
ERROR_GAIN = 5.0  # the error row is drawn 5x stronger than the fields: a few percent is visible


def methods_of(ev: TaskEvaluation) -> list[str]:
    return [m for m in METHOD_ORDER if m in ev.errors]


def task_record(ev: TaskEvaluation, channels=("input", "solution")) -> dict:
    """One task's JSON record: the best estimate the product ships (``best_estimate``), per method the
    target error (percent), each channel's error and the seconds per reconstruction, the errors per
    image (fractions) for re-analysis; per distribution (the model's samples, the reference posterior)
    its CRPS in the target fields' units and its 1 and 2 std coverage, over images and targets."""
    targets = [channels[c] for c in TARGETS[ev.task]]
    return {"task": ev.task, "points_per_channel": ev.points, "resolution": ev.resolution, "plan": ev.plan,
            "target_channels": targets, "best_estimate": {"method": ev.best, "error_percent": ev.target(ev.best)},
            "methods": {m: {"error_percent": ev.target(m),
                            "channel_error_percent": {channels[c]: ev.channel(m, c) for c in range(2)},
                            "seconds_per_reconstruction": ev.seconds.get(m),
                            "per_image": ev.errors[m].tolist()} for m in methods_of(ev)},
            "distributions": {m: {**{k: ev.score(m, k) for k in d},
                                  "channel_crps": {t: float(d["crps"][:, i].mean()) for i, t in enumerate(targets)},
                                  "seconds_per_reconstruction": ev.score_seconds.get(m)}
                              for m, d in ev.scores.items()}}


def task_table(evs: list[TaskEvaluation], channels=("input", "solution")) -> str:
    """A markdown table: one row per task and method, the target error and each channel's, the best
    estimate the product ships marked; then the CRPS and coverage of each distribution where scored."""
    lines = [f"| task | method | error (%) | {channels[0]} (%) | {channels[1]} (%) | s / reconstruction |",
             "|---|---|---|---|---|---|"]
    for ev in evs:
        for m in methods_of(ev):
            name = f"**{m}** (best estimate)" if m == ev.best else m
            lines.append(f"| {ev.task} | {name} | {ev.target(m):.2f} | {ev.channel(m, 0):.2f} | {ev.channel(m, 1):.2f} | "
                         f"{ev.seconds.get(m, float('nan')):.3f} |")
    scored = [ev for ev in evs if ev.scores]
    if scored:
        lines += ["", "| task | distribution | CRPS (field units) | within 1 / 2 std |", "|---|---|---|---|"]
        for ev in scored:
            for m in ev.scores:
                lines.append(f"| {ev.task} | {DISTRIBUTION_NAMES[m]} | {ev.score(m, 'crps'):.4g} | "
                             f"{ev.score(m, 'coverage_1std'):.0%} / {ev.score(m, 'coverage_2std'):.0%} |")
    return "\n".join(lines)


def headline(ev: TaskEvaluation) -> str:
    """The answer first: the best estimate the product ships, then the model's estimate and spread beside it."""
    text = f"{ev.task}: best estimate {ev.best} {ev.target(ev.best):.2f}%; the model (ddo) {ev.target('ddo'):.2f}%"
    if "ddo" in ev.scores:
        text += f", its samples' CRPS {ev.score('ddo', 'crps'):.4g}"
        if "reference" in ev.scores:
            text += f" (reference posterior {ev.score('reference', 'crps'):.4g})"
        text += f", {ev.score('ddo', 'coverage_2std'):.0%} of the truth within 2 std"
    return text


DISTRIBUTION_NAMES = {"ddo": "ddo (the model's samples)", "reference": "reference posterior (route draws)"}


def task_figure(ev: TaskEvaluation, image: int = 0) -> torch.Tensor:
    """``(rows x 2, 3, H, W)`` in ``[0, 1]``: for the first image, each figure row (observed, truth, ddo,
    error, std) of both channels, in a diverging map scaled per channel by the truth's largest value
    (the std in the same units as the field, the error :data:`ERROR_GAIN` times stronger)."""
    truth = ev.figure["truth"][image]
    scale = truth.flatten(1).abs().amax(1).clamp_min(1e-12).view(2, 1, 1)
    centre = truth.mean((1, 2), keepdim=True) if ev.kind == "darcy-pair" else torch.zeros(2, 1, 1, dtype=truth.dtype)
    tiles = []
    for name, rows in ev.figure.items():
        x = rows[image]
        x = x / scale * (ERROR_GAIN if name == "error" else 1.0) if name in ("error", "std") else (x - centre) / scale
        if name == "observed":
            x = torch.where(ev.figure["observed"][image] != 0, x, torch.zeros_like(x))
        tiles.append(diverging((0.5 + 0.5 * x.clamp(-1, 1)).float()[:, None]))
    return torch.cat(tiles)


__all__ = ["task_record", "task_table", "task_figure", "methods_of", "METHOD_ORDER", "DISTRIBUTION_NAMES", "headline"]

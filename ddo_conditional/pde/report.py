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
    """One task's JSON record: per method the target error (percent), each channel's error and the
    seconds per reconstruction; the errors per image (fractions) for re-analysis."""
    return {"task": ev.task, "points_per_channel": ev.points, "resolution": ev.resolution, "plan": ev.plan,
            "target_channels": [channels[c] for c in TARGETS[ev.task]],
            "methods": {m: {"error_percent": ev.target(m),
                            "channel_error_percent": {channels[c]: ev.channel(m, c) for c in range(2)},
                            "seconds_per_reconstruction": ev.seconds.get(m),
                            "per_image": ev.errors[m].tolist()} for m in methods_of(ev)}}


def task_table(evs: list[TaskEvaluation], channels=("input", "solution")) -> str:
    """A markdown table: one row per task and method, the target error and each channel's."""
    lines = [f"| task | method | error (%) | {channels[0]} (%) | {channels[1]} (%) | s / reconstruction |",
             "|---|---|---|---|---|---|"]
    for ev in evs:
        for m in methods_of(ev):
            lines.append(f"| {ev.task} | {m} | {ev.target(m):.2f} | {ev.channel(m, 0):.2f} | {ev.channel(m, 1):.2f} | "
                         f"{ev.seconds.get(m, float('nan')):.3f} |")
    return "\n".join(lines)


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


__all__ = ["task_record", "task_table", "task_figure", "methods_of", "METHOD_ORDER"]

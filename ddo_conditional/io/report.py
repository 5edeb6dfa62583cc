"""An :class:`~ddo_conditional.inference.evaluate.Evaluation` (or a point reconstruction) as tables, text,
figures and files. Every file is written atomically, and only after everything in it was checked
finite: a result that diverged is never written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from ddo.api import atomic_write, check_finite, save_grid

from ..inference.evaluate import Evaluation
from ..inference.reconstruct import DIVERGED_FIX
from ..inference.shrinkage import MIN_GAIN_DB


def metrics_record(ev: Evaluation, **run) -> dict:
    """The ``metrics.json`` record of an evaluation; ``run``: what the caller adds (checkpoint,
    resolution, parameterisation, dataset, ...)."""
    plan = ev.plan
    record = {"num_images": ev.num_images, **ev.masks, "num_samples": plan["num_samples"], "steps": plan["steps"],
              "data_consistency": plan["data_consistency"], "symmetrize_x0": plan["symmetrize_x0"],
              "methods": ev.methods, "seconds": ev.seconds, "sampler": plan["sampler"], "precision": plan["precision"],
              "seed": plan["seed"], "rows_per_call": plan["rows"]}
    if plan.get("guidance"):
        record.update(guidance=plan["guidance"], guidance_scale=plan["guidance_scale"])
    if ev.coverage:
        record["calibration"] = ev.coverage
    if ev.coverage_calibrated:
        record["calibration_rescaled"] = ev.coverage_calibrated
    if ev.field_record:
        record["field"] = ev.field_record
    return {**record, **run}


def table(metrics: dict) -> str:
    """A Markdown table of every method, best query PSNR first (with the relative L2 errors for fields, and
    the CRPS and 1/2-std coverage of the methods that give a distribution when any does)."""
    rows = sorted(((k, v) for k, v in metrics["methods"].items() if k != "ddo-mean"), key=lambda kv: -kv[1]["psnr_query"])
    field = bool(metrics.get("field"))
    spread = any("crps_query" in m for _, m in rows)
    lines = ["| method | PSNR query (dB) | SSIM query | PSNR full (dB) | SSIM full |" + (" rel. L2 query | rel. L2 full |" if field else "")
             + (" CRPS query | within 1 / 2 std |" if spread else ""),
             "|---|---|---|---|---|" + ("---|---|" if field else "") + ("---|---|" if spread else "")]
    for name, m in rows:
        line = f"| {name} | {m['psnr_query']:.2f} | {m['ssim_query']:.4f} | {m['psnr_full']:.2f} | {m['ssim_full']:.4f} |"
        line += f" {m['rel_l2_query']:.4f} | {m['rel_l2_full']:.4f} |" if field else ""
        if spread:
            line += (f" {m['crps_query']:.4f} | {m['coverage_1std']:.1%} / {m['coverage_2std']:.1%} |" if "crps_query" in m
                     else " - | - |")
        lines.append(line)
    return "\n".join(lines)


def coverage_table(m: dict) -> str:
    """A Markdown table of the spread's coverage on query pixels, raw and (if applied) calibrated."""
    rows = [("raw samples' std", m["calibration"])]
    if "calibration_rescaled" in m:
        rows.append(("calibrated std", m["calibration_rescaled"]))
    lines = ["| spread | within 1 std | within 2 std | Student-t 95% | Gaussian log-lik. |", "|---|---|---|---|---|"]
    for name, c in rows:
        t95 = f"{c['within_t95']:.1%}" if "within_t95" in c else "-"
        lines.append(f"| {name} | {c['within_1std']:.1%} | {c['within_2std']:.1%} | {t95} | {c['gaussian_loglik']:.3f} |")
    return "\n".join(lines)


def ratio_text(ratio) -> str:
    """A context ratio as a percentage, or a range of them (``"1%-30%"``)."""
    if isinstance(ratio, str):
        lo, hi = (float(v) for v in ratio.split(":"))
        return f"{lo:.0%}-{hi:.0%} (per image)"
    return f"{ratio:.0%}"


def mask_line(m: dict) -> str:
    src = m["masks"]["from_flags"]
    return (f"{ratio_text(m['context_ratio'])} context, {m['query_ratio']:.0%} query, {m['mask_pattern']} pattern, seed "
            f"{m['mask_seed']} ({'flags: ' + ', '.join(src) if src else 'all from the checkpoint'})")


def shrinkage_line(sh: dict) -> str:
    if "rejected" in sh:
        r = sh["rejected"]
        return (f"none kept (w = 1): the best rule ({r['feature']}) gained {r['gain_db']:+.3f} dB on the "
                f"{sh['fitted_images']} fitting images, below {MIN_GAIN_DB} dB")
    rule = f"w = clip({sh['a']:.2f}" + (f" {sh['b']:+.2f} ({sh['feature']} {-sh['center']:+.3f})" if sh["b"] else "") + ", 0, 1)"
    return (f"ddo-x0 shrunk toward the interpolation by {rule}; on the {sh['fitted_images']} fitting images "
            f"{sh['gain_db']:+.3f} dB query PSNR over ddo-x0")


def diverging(images01: torch.Tensor) -> torch.Tensor:
    """One-channel images in ``[0, 1]`` (0.5 = zero) as RGB: blue below zero, white at zero, red above."""
    t = (2 * images01[:, :1] - 1).clamp(-1, 1)
    neg, pos = (-t).clamp_min(0), t.clamp_min(0)
    return torch.cat([1 - neg, 1 - neg - pos, 1 - pos], dim=1)


def figure_image(rows: dict, signed: bool) -> torch.Tensor:
    """The figure's rows stacked; a signed one-channel field in a diverging map (its std row from
    white, 0, to red, the largest)."""
    if signed and next(iter(rows.values())).shape[1] == 1:
        rows = {k: diverging(0.5 + 0.5 * v if k == "std" else v) for k, v in rows.items()}
    fig = torch.cat(list(rows.values()))
    if fig.shape[-1] < 96:  # small patches: enlarge (nearest) so that pixels stay visible
        fig = torch.nn.functional.interpolate(fig, scale_factor=96 // fig.shape[-1], mode="nearest")
    return fig


def output_arrays(ev: Evaluation) -> dict[str, np.ndarray]:
    """``mean``, ``std`` (calibrated when a calibration was applied, else the samples'), ``std_raw`` and
    ``interval95`` (lower and upper ``mean -+ 1.96 std``, ``(2, N, C, H, W)``), in ``[0, 1]`` units."""
    arrays = dict(ev.arrays)
    arrays.setdefault("std", arrays["std_raw"])
    arrays["interval95"] = np.stack([arrays["mean"] - 1.96 * arrays["std"], arrays["mean"] + 1.96 * arrays["std"]])
    for name, value in arrays.items():
        check_finite(torch.from_numpy(np.asarray(value)), f"the reconstruction's {name}", DIVERGED_FIX)
    return arrays


def write_outputs(ev: Evaluation, record: dict, out_dir) -> None:
    """``metrics.json``, ``reconstructions.png`` and the per-image arrays (:func:`output_arrays`,
    ``.npy`` float32) in ``out_dir``, every one checked finite before the first is written."""
    arrays = output_arrays(ev)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        atomic_write(out_dir / f"{name}.npy", lambda f, v=value: np.save(f, v.astype(np.float32)))
    atomic_write(out_dir / "metrics.json", lambda f: f.write(json.dumps(record, indent=2).encode()))
    fig = figure_image(ev.figure, bool((ev.field_record or {}).get("signed")))
    save_grid(fig, out_dir / "reconstructions.png", nrow=len(next(iter(ev.figure.values()))), value_range=(0.0, 1.0),
              row_labels=list(ev.figure))


def demo_report(m: dict) -> str:
    """``report.md`` of ``ddo demo`` from its metrics record."""
    best = max((k for k in m["methods"] if not k.startswith("ddo-")), key=lambda k: m["methods"][k]["psnr_query"])
    margin = m["methods"]["ddo-mean"]["psnr_query"] - m["methods"][best]["psnr_query"]
    source = m["methods"]["ddo-mean"]["source"]
    lines = [
        f"# ddo demo: conditional sparse reconstruction on {m['dataset']}", "",
        f"{m['num_images']} test images; {ratio_text(m['context_ratio'])} context and {m['query_ratio']:.0%} query pixels "
        f"({m['mask_pattern']} masks, seed {m['mask_seed']}). Model: `{m['conditioning']}` wrapper, "
        f"{m['parameters']:,} parameters, `{m['parameterization']}` parameterisation, loss `{m['loss']}`, "
        f"{m['train_steps']} steps in {m['train_seconds']:.0f} s. Sampling: {m['num_samples']} samples x {m['steps']} "
        f"steps of `{m['sampler']}`, network in {m['precision']}.", "", table(m), "",
        f"`ddo-mean` is the model's posterior-mean estimate: `ddo-x0` (the network's x0 at t = 1"
        f"{', averaged over the 8 rotations and flips of the context' if m.get('symmetrize_x0') else ', one call'}) for x0/v "
        f"models, the mean of samples otherwise, shrunk toward the interpolation when a shrinkage was fitted on the "
        f"validation split; here `{source}`. Its margin over the best classical baseline ({best}): {margin:+.2f} dB "
        "on query pixels.", ""]
    fitted = m.get("calibration_rescaled") or {}
    if fitted.get("shrinkage"):
        lines += [f"Shrinkage (fitted on {fitted.get('fitted_on')}): {shrinkage_line(fitted['shrinkage'])}.", ""]
    lines += _coverage_lines(m)
    lines += ["![reconstructions](reconstructions.png)", "",
              "Rows: context (grey = unobserved), two samples, posterior mean (ddo-x0 when the model has one, else the "
              "mean of samples), per-pixel std of samples, ground truth, biharmonic.", "", "Full numbers: `metrics.json`.", ""]
    return "\n".join(lines)


def _coverage_lines(m: dict) -> list[str]:
    cal = m.get("calibration")
    if not cal:
        return []
    lines = [f"Calibration of the sample spread on query pixels: {cal['within_1std']:.1%} within 1 std, "
             f"{cal['within_2std']:.1%} within 2 std, Gaussian log-likelihood {cal['gaussian_loglik']:.3f} "
             "per entry (a calibrated Gaussian would hold 68% and 95%)."]
    if "within_t95" in cal:
        lines += [f"With {m['num_samples']} samples: {cal['within_t95']:.1%} within the Student-t 95% predictive "
                  f"interval (95% if calibrated), {cal['within_range']:.1%} between the smallest and largest "
                  f"sample ({cal['within_range_expected']:.1%} if the truth were exchangeable with the samples)."]
    rc = m.get("calibration_rescaled")
    if rc:
        lines += [f"Recalibrated spread (sqrt(({rc['spread_scale']:.2f} std)^2 + ({rc.get('spread_roughness', 0):.2f} r)^2 "
                  f"+ {rc['spread_floor']:.4f}^2), r the leave-one-out interpolation error of the context, fitted by "
                  f"maximum likelihood on {rc['fitted_images']} crops of {rc.get('fitted_on', 'the training split')} "
                  f"under other masks): {rc['within_1std']:.1%} within 1 std, {rc['within_2std']:.1%} within 2 std, "
                  f"Gaussian log-likelihood {rc['gaussian_loglik']:.3f} per entry on the test images."]
    return lines + [""]


def points_image(coords: np.ndarray, values: np.ndarray, res: int) -> torch.Tensor:
    """The observations drawn on a grey ``res x res`` canvas (each point a square of ~1/64 of the side),
    ``(C, res, res)`` in ``[0, 1]``."""
    canvas = torch.full((values.shape[1], res, res), 0.5)
    r = max(1, res // 128)
    for (x, y), v in zip(coords, values):
        col, row = min(res - 1, int(x * res)), min(res - 1, int(y * res))
        canvas[:, max(0, row - r):row + r + 1, max(0, col - r):col + r + 1] = torch.from_numpy(v)[:, None, None]
    return canvas


def write_points(out: Path, arrays: dict, observations: tuple, record: dict) -> None:
    """A point reconstruction: ``mean``/``std``/``samples`` as ``.npy`` and ``.png``, ``reconstruction.png``
    (rows labelled points, mean, std) and ``points.json``; ``observations``: ``(coords (K, 2), values (K, C))``."""
    for name, value in arrays.items():
        check_finite(value, f"the reconstruction's {name}", DIVERGED_FIX)
    out.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        atomic_write(out / f"{name}.npy", lambda f, v=value: np.save(f, v.cpu().numpy().astype(np.float32)))
    res = arrays["mean"].shape[-1]
    std = arrays["std"].mean(0, keepdim=True)
    std = (std / std.max().clamp_min(1e-6)).expand_as(arrays["mean"])
    panels = torch.stack([points_image(*observations, res), arrays["mean"].cpu(), std.cpu()])
    save_grid(panels, out / "reconstruction.png", nrow=1, value_range=(0.0, 1.0), row_labels=["points", "mean", "std"])
    save_grid(arrays["samples"].cpu(), out / "samples.png", nrow=len(arrays["samples"]), value_range=(0.0, 1.0))
    save_grid(panels[1][None], out / "mean.png", nrow=1, value_range=(0.0, 1.0))
    save_grid(panels[2][None], out / "std.png", nrow=1, value_range=(0.0, 1.0))
    atomic_write(out / "points.json", lambda f: f.write(json.dumps(record, indent=2).encode()))


__all__ = ["metrics_record", "table", "coverage_table", "mask_line", "shrinkage_line", "write_outputs", "demo_report",
           "write_points", "points_image", "diverging"]

"""Evaluation of a conditional model against classical interpolation on the same masks."""
from __future__ import annotations

import json
import math
import time
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Subset

from ddo.checkpoint import atomic_write
from ddo.models import coordinate_grid
from ddo.progress import progress_bar
from ddo.sampling import ddim_step
from ddo.visual import save_grid

from .baselines import BASELINES, baseline_batch
from .datasets import apply_dihedral, context_tensors, create_query_mask_batched, dihedral_transforms, undo_dihedral
from .metrics import calibration, image_metrics
from .points import dihedral_points
from .models import NormalizedConvolution
from .reconstruct import reconstruct
from .shrinkage import features, fit_shrinkage, kept, shrink

MODEL_METHODS = ("ddo-mean", "ddo-samples-mean", "ddo-x0", "ddo-x0-shrunk", "ddo-sample")
MEAN_SOURCES = ("ddo-x0-shrunk", "ddo-x0", "ddo-samples-mean")  # ddo-mean: the first the evaluation has
FIGURE_IMAGES = 8


class Reconstructed(NamedTuple):
    """One evaluated batch: the collated ``batch``, ``truth`` in ``[0, 1]``, the query mask
    ``(B, 1, H, W)``, the context tensors, the network kwargs, :func:`reconstruct`'s output and the
    seconds spent sampling."""

    batch: dict
    truth: torch.Tensor
    qmask: torch.Tensor
    ctx: dict
    kwargs: dict
    out: dict
    seconds: float


def _reconstructed_batches(gen_sde, wrapper, dataset, generator, *, num_samples, steps, sampler, batch_size,
                           data_consistency, limit, device, progress, desc):
    """:class:`Reconstructed` batches of a :class:`FixedSparseMaskDataset` (its first ``limit`` images).
    ``generator`` draws every sample, batch after batch, so draws made with it between batches stay
    in sequence."""
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    if len(dataset) == 0:
        raise ValueError("no images to evaluate")
    bar = progress_bar(total=len(dataset), desc=desc, enabled=progress)
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x = batch["image"].to(device)
        qmask = create_query_mask_batched(batch["query_indices"].to(device), *x.shape[-2:], x.dtype)
        ctx = context_tensors(batch, device)
        t0 = time.perf_counter()
        kwargs = wrapper.model_kwargs(batch, device)
        out = reconstruct(gen_sde, kwargs, x.shape, num_steps=steps, num_samples=num_samples, generator=generator,
                          sampler=sampler, data_consistency=data_consistency,
                          observation=(ctx["context_image"], ctx["observation_mask"]))
        yield Reconstructed(batch, (x + 1) / 2, qmask, ctx, kwargs, out, time.perf_counter() - t0)
        bar.update(x.shape[0])
    bar.close()


CAL_KEYS = ("within_1std", "within_2std", "gaussian_loglik", "within_t95", "within_range")


class _CalibrationSum:
    """Calibration metrics accumulated over batches, weighted by query entries."""

    def __init__(self):
        self.n, self.sums = 0, {}

    def add(self, out, truth, qmask, std: torch.Tensor | None = None):
        """``std``: a recalibrated spread in ``[0, 1]`` units; ``None``: the samples' own (then the
        sample-based checks are added too)."""
        q = int(qmask.sum().item()) * truth.shape[1]
        cb = calibration((out["mean"] + 1) / 2, out["std"] / 2 if std is None else std, truth, qmask,
                         samples=(out["samples"] + 1) / 2 if std is None else None)
        for k in CAL_KEYS:
            if k in cb:  # the sample-based checks need the samples, not a rescaled std
                self.sums[k] = self.sums.get(k, 0.0) + cb[k] * q
        self.n += q

    def result(self) -> dict:
        return {k: v / self.n for k, v in self.sums.items()}


def fit_spread(mean: torch.Tensor, std: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor,
               roughness: torch.Tensor | None = None, min_std: float = 1e-3) -> dict[str, float]:
    """Post-hoc recalibration of a predictive spread: the ``a, b, c`` of
    ``std' = sqrt((a std)^2 + (b r)^2 + c^2)`` that maximise the Gaussian likelihood of ``truth`` on the
    entries ``mask`` selects (``b = 0`` when ``roughness`` is not given).

    ``a`` rescales the samples' spread; ``b r`` is an error floor proportional to ``r = roughness``, a
    per-image ``(B,)`` measure of how hard the image is known from its context (the leave-one-out
    interpolation error, :func:`context_roughness`), for errors that the samples share (a
    short-trained model's samples share its systematic errors, and they are larger on rough images);
    ``c`` is a constant floor. Fit it on images the scores are not taken on. Returns
    ``{"spread_scale": a, "spread_roughness": b, "spread_floor": c}``."""
    m = mask.expand_as(truth).bool()
    e2 = ((truth - mean)[m].double()) ** 2
    s2 = std[m].double().clamp_min(min_std) ** 2
    r2 = None if roughness is None else (roughness.double().view(-1, 1, 1, 1).expand_as(truth)[m]) ** 2
    rms = math.log(max(float(e2.mean().sqrt()), 1e-4))
    init = [0.0, rms] if r2 is None else [0.0, rms - 1.0, 0.0]
    params = torch.tensor(init, dtype=torch.float64, requires_grad=True)
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
    return {"spread_scale": got[0], "spread_roughness": got[2] if r2 is not None else 0.0, "spread_floor": got[1]}


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


def context_roughness(ctx: dict) -> torch.Tensor:
    """Per-image ``(B,)`` leave-one-out interpolation error of the context in ``[0, 1]`` units
    (:meth:`NormalizedConvolution.loo_rms`), the ``r`` of :func:`fit_spread`."""
    loo = NormalizedConvolution().to(ctx["context_image"].device)
    return loo.loo_rms(ctx["context_image"], ctx["observation_mask"]) / 2


def fit_spread_on(gen_sde, wrapper, dataset, *, num_samples: int, steps: int, sampler, limit: int,
                  batch_size: int = 32, seed: int = 1, data_consistency: bool = False, device="cpu",
                  progress: bool = True) -> dict[str, float]:
    """:func:`fit_spread` of the samples' per-pixel std (``[0, 1]`` units) on the query pixels of the
    first ``limit`` images of ``dataset`` (calibration images: training crops under other masks, never
    the test split)."""
    if num_samples < 2:
        raise ValueError("a spread needs at least 2 samples")
    parts = [[], [], [], [], []]
    g = torch.Generator(device=device).manual_seed(seed)
    for r in _reconstructed_batches(gen_sde, wrapper, dataset, g, num_samples=num_samples, steps=steps,
                                    sampler=sampler, batch_size=batch_size, data_consistency=data_consistency,
                                    limit=limit, device=device, progress=progress, desc="calibrate"):
        for lst, t in zip(parts, ((r.out["mean"] + 1) / 2, r.out["std"] / 2, r.truth, r.qmask,
                                  context_roughness(r.ctx))):
            lst.append(t)
    return fit_spread(*(torch.cat(lst) for lst in parts))


@torch.no_grad()
def fit_shrinkage_on(gen_sde, wrapper, dataset, *, limit: int, batch_size: int = 32, seed: int = 1, device="cpu",
                     progress: bool = True) -> dict:
    """:func:`~ddo_conditional.shrinkage.fit_shrinkage` on the first ``limit`` images of ``dataset`` (held
    out from training: a validation split), from the symmetrised ``ddo-x0`` estimates."""
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    g = torch.Generator(device=device).manual_seed(seed)
    parts = {k: [] for k in ("x0", "dense", "truth", "qmask", "spread", "roughness")}
    bar = progress_bar(total=len(dataset), desc="fit shrinkage", enabled=progress)
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x = batch["image"].to(device)
        kwargs = wrapper.model_kwargs(batch, device)
        x0, spread = x0_estimate(gen_sde, kwargs, x.shape, g, True)
        got = {"x0": x0, "dense": dense_01(kwargs), "truth": (x + 1) / 2, "spread": spread,
               "qmask": create_query_mask_batched(batch["query_indices"].to(device), *x.shape[-2:], x.dtype),
               "roughness": context_roughness(context_tensors(batch, device))}
        for k, v in got.items():
            parts[k].append(v)
        bar.update(x.shape[0])
    bar.close()
    t = {k: torch.cat(v) for k, v in parts.items()}
    return fit_shrinkage(t["x0"], t["dense"], t["truth"], t["qmask"],
                         features(t["x0"], t["spread"], t["dense"], t["roughness"]))


def evaluate(gen_sde, wrapper, dataset, *, num_samples: int = 4, steps: int = 20, sampler=ddim_step,
             batch_size: int = 32, seed: int = 0, data_consistency: bool = False, limit: int | None = None,
             device="cpu", progress: bool = True, baselines=BASELINES, symmetrize_x0: bool = True,
             spread: dict | None = None) -> dict:
    """Reconstruct every image of a :class:`FixedSparseMaskDataset` and score all methods on its masks.

    Rows: ``ddo-samples-mean`` (mean of ``num_samples`` samples), ``ddo-sample`` (the first sample),
    ``ddo-x0`` for ``x0``/``v`` models (:func:`posterior_mean_one_call`; ``symmetrize_x0``: averaged
    over the grid's rotations and flips), every classical baseline, and ``ddo-mean``, the posterior
    mean the project reports: ``ddo-x0-shrunk`` when ``spread`` holds a shrinkage that was kept
    (:mod:`~ddo_conditional.shrinkage`, fitted on a validation split), else ``ddo-x0`` when the model
    has one, else ``ddo-samples-mean`` (a fixed rule, never chosen by the scores). ``spread``: a
    recalibration of the samples' std fitted elsewhere (:func:`fit_spread_on`); ``metrics.json`` then
    also holds ``calibration_rescaled``.

    Returns ``{"metrics": <metrics.json dict>, "figure": (rows * 8, C, H, W) in [0, 1], "arrays": ...}``,
    the arrays per image in ``[0, 1]`` (:class:`_Arrays`).
    """
    one_call = gen_sde.parameterization in ("x0", "v")
    shrinkage = kept((spread or {}).get("shrinkage")) if one_call else None
    per_image = {m: {} for m in ("ddo-samples-mean", "ddo-sample") + (("ddo-x0",) if one_call else ())
                 + (("ddo-x0-shrunk",) if shrinkage else ()) + tuple(baselines)}
    cal, cal_scaled = _CalibrationSum(), _CalibrationSum()
    timing = {"model_s": 0.0, "baselines_s": 0.0}
    figure, n, arrays = None, 0, _Arrays()
    g = torch.Generator(device=device).manual_seed(seed)
    for r in _reconstructed_batches(gen_sde, wrapper, dataset, g, num_samples=num_samples, steps=steps,
                                    sampler=sampler, batch_size=batch_size, data_consistency=data_consistency,
                                    limit=limit, device=device, progress=progress, desc="evaluate"):
        n += r.truth.shape[0]
        preds = _predictions(gen_sde, r, g, one_call, symmetrize_x0, baselines, timing, device, shrinkage)
        std_cal = None if spread is None else apply_spread(r.out["std"] / 2, spread, context_roughness(r.ctx))
        arrays.add(r, preds, std_cal)
        for m, p in preds.items():
            for k, val in image_metrics(p, r.truth, r.qmask).items():
                per_image[m].setdefault(k, []).append(val.cpu())
        if num_samples > 1:
            cal.add(r.out, r.truth, r.qmask)
            if spread is not None:
                cal_scaled.add(r.out, r.truth, r.qmask, std=std_cal)
        if figure is None:
            figure = _figure(r, preds, num_samples)
    result = {
        "num_images": n, "context_ratio": dataset.context_ratio, "query_ratio": dataset.query_ratio,
        "mask_pattern": dataset.pattern, "mask_seed": dataset.seed, "num_samples": num_samples, "steps": steps,
        "data_consistency": data_consistency, "symmetrize_x0": symmetrize_x0, "methods": _summarise(per_image),
        "seconds": {k: round(v, 2) for k, v in timing.items()},
    }
    if cal.n:
        result["calibration"] = {**cal.result(), "within_range_expected": (num_samples - 1) / (num_samples + 1)}
    if cal_scaled.n:
        result["calibration_rescaled"] = {**cal_scaled.result(), **spread}
    return {"metrics": result, "figure": figure, "arrays": arrays.result(), "figure_std_row": 2 + min(2, num_samples)}


class _Arrays:
    """Per-image outputs to keep, ``(N, C, H, W)`` in ``[0, 1]``: ``mean`` (``ddo-mean``), ``std_raw`` (the
    samples' std) and, with a spread recalibration, ``std`` (the recalibrated std)."""

    def __init__(self):
        self.parts = {}

    def add(self, r: Reconstructed, preds: dict, std_calibrated: torch.Tensor | None) -> None:
        got = {"mean": preds[mean_source(preds)], "std_raw": r.out["std"] / 2}
        if std_calibrated is not None:
            got["std"] = std_calibrated
        for k, v in got.items():
            self.parts.setdefault(k, []).append(v.cpu())

    def result(self) -> dict:
        return {k: torch.cat(v).numpy() for k, v in self.parts.items()}


def _predictions(gen_sde, r: Reconstructed, g, one_call: bool, symmetrize: bool, baselines, timing: dict,
                 device, shrinkage: dict | None = None) -> dict:
    """Every method's reconstruction of one batch, ``(B, C, H, W)`` in ``[0, 1]``; adds to ``timing``."""
    preds = {"ddo-samples-mean": (r.out["mean"] + 1) / 2, "ddo-sample": (r.out["samples"][0] + 1) / 2}
    if one_call:
        t0 = time.perf_counter()
        x0, spread = x0_estimate(gen_sde, r.kwargs, r.truth.shape, g, symmetrize)
        preds["ddo-x0"] = x0
        if shrinkage:
            if shrinkage["feature"] == "disagreement" and not symmetrize:
                raise ValueError("this shrinkage reads the disagreement of the rotated estimates; evaluate with them")
            dense = dense_01(r.kwargs)
            preds["ddo-x0-shrunk"] = shrink(x0, dense, features(x0, spread, dense, context_roughness(r.ctx)), shrinkage)
        timing["model_s"] += time.perf_counter() - t0
    timing["model_s"] += r.seconds
    t0 = time.perf_counter()
    for m in baselines:
        preds[m] = baseline_batch(r.truth, r.batch["context_indices"], m).to(device)
    timing["baselines_s"] += time.perf_counter() - t0
    return preds


def x0_estimate(gen_sde, kwargs: dict, shape, g, symmetrize: bool):
    """``ddo-x0`` in ``[0, 1]`` and the spread of the estimates it averages (zeros for one call)."""
    if not symmetrize:
        x0 = (posterior_mean_one_call(gen_sde, kwargs, shape, g) + 1) / 2
        return x0, torch.zeros_like(x0)
    est = (dihedral_estimates(gen_sde, kwargs, shape, g) + 1) / 2
    return est.mean(0), est.std(0)


def dense_01(kwargs: dict) -> torch.Tensor:
    """The interpolation the network refines (``context_dense``), in ``[0, 1]``."""
    if kwargs.get("context_dense") is None:
        raise ValueError("a shrinkage toward the interpolation needs a model that refines one (context_dense)")
    return ((kwargs["context_dense"] + 1) / 2).clamp(0, 1)


def mean_source(preds: dict) -> str:
    return next(m for m in MEAN_SOURCES if m in preds)


def _figure(r: Reconstructed, preds: dict, num_samples: int) -> torch.Tensor:
    """Rows of the first batch's first images: context, two samples, posterior mean, std, truth, biharmonic."""
    k, c = min(FIGURE_IMAGES, r.truth.shape[0]), r.truth.shape[1]
    obs = r.ctx["observation_mask"][:k]
    rows = [obs * (r.ctx["context_image"][:k] + 1) / 2 + (1 - obs) * 0.5]
    rows += [(r.out["samples"][i, :k] + 1) / 2 for i in range(min(2, num_samples))]
    std = r.out["std"][:k].mean(1, keepdim=True).expand(-1, c, -1, -1)
    best = preds[mean_source(preds)]
    rows += [best[:k], (std / std.max().clamp_min(1e-6)), r.truth[:k]]
    if "biharmonic" in preds:
        rows.append(preds["biharmonic"][:k])
    return torch.cat([row.clamp(0, 1).cpu() for row in rows])


def _summarise(per_image: dict) -> dict:
    """Mean of every per-image metric per method, the per-image query PSNR, and ``ddo-mean``."""
    methods = {}
    for m, metrics in per_image.items():
        cat = {k: torch.cat(v) for k, v in metrics.items()}
        methods[m] = {k: float(v.mean()) for k, v in cat.items()}
        methods[m]["psnr_query_per_image"] = [round(float(x), 3) for x in cat["psnr_query"]]
    source = mean_source(methods)
    methods["ddo-mean"] = {**methods[source], "source": source}
    return methods


@torch.no_grad()
def posterior_mean_one_call(gen_sde, model_kwargs: dict, shape, generator=None, symmetrize: bool = False) -> torch.Tensor:
    """The network's ``x0`` estimate at ``t = 1`` from prior noise: one call per image. For a
    model trained with an ``x0`` loss at all times this is its estimate of ``E[x | context]``.

    ``symmetrize``: average the estimates of the rotated and flipped contexts, each mapped back
    (:func:`dihedral_estimates`; 8 calls on square images). The posterior mean under a prior that
    is invariant to these symmetries is equivariant to them, so the average keeps its target and
    lowers the network's error.
    """
    if not symmetrize:
        return _x0_at_one(gen_sde, model_kwargs, shape, generator, 0, False)
    return dihedral_estimates(gen_sde, model_kwargs, shape, generator).mean(0)


def _x0_at_one(gen_sde, model_kwargs: dict, shape, generator, k: int, flip: bool) -> torch.Tensor:
    device = next(gen_sde.network.parameters()).device
    t = torch.ones(shape[0], device=device)
    v = coordinate_grid(shape[0], shape[-2], shape[-1], device)
    z = gen_sde.prior_sample(shape, generator=generator, device=device)
    kw = {n: _moved(n, val, k, flip) for n, val in model_kwargs.items()}
    return undo_dihedral(gen_sde.x0(z, t, v, **kw), k, flip)


def _moved(name: str, value, k: int, flip: bool):
    """A network kwarg under :func:`apply_dihedral`: images are moved, point coordinates too."""
    if name == "context_coords":
        return dihedral_points(value, k, flip)
    return apply_dihedral(value, k, flip) if torch.is_tensor(value) and value.ndim == 4 else value


@torch.no_grad()
def dihedral_estimates(gen_sde, model_kwargs: dict, shape, generator=None) -> torch.Tensor:
    """The ``t = 1`` estimates ``(G, B, C, H, W)`` of the context under each element of
    :func:`dihedral_transforms` (every spatial kwarg transformed alike), each mapped back."""
    return torch.stack([_x0_at_one(gen_sde, model_kwargs, shape, generator, k, flip)
                        for k, flip in dihedral_transforms(shape[-2], shape[-1])])


def best_baseline(methods: dict) -> str:
    return max((m for m in methods if m not in MODEL_METHODS), key=lambda m: methods[m]["psnr_query"])


def table(metrics: dict) -> str:
    """A Markdown table of every method, best query PSNR first (with the relative L2 errors for fields)."""
    rows = sorted(((k, v) for k, v in metrics["methods"].items() if k != "ddo-mean"),
                  key=lambda kv: -kv[1]["psnr_query"])
    field = bool(metrics.get("field"))
    head = "| method | PSNR query (dB) | SSIM query | PSNR full (dB) | SSIM full |"
    lines = [head + (" rel. L2 query | rel. L2 full |" if field else ""), "|---|---|---|---|---|" + ("---|---|" if field else "")]
    for name, m in rows:
        line = f"| {name} | {m['psnr_query']:.2f} | {m['ssim_query']:.4f} | {m['psnr_full']:.2f} | {m['ssim_full']:.4f} |"
        lines.append(line + (f" {m['rel_l2_query']:.4f} | {m['rel_l2_full']:.4f} |" if field else ""))
    return "\n".join(lines)


def diverging(images01: torch.Tensor) -> torch.Tensor:
    """One-channel images in ``[0, 1]`` (0.5 = zero) as RGB: blue below zero, white at zero, red above."""
    t = (2 * images01[:, :1] - 1).clamp(-1, 1)
    neg, pos = (-t).clamp_min(0), t.clamp_min(0)
    return torch.cat([1 - neg, 1 - neg - pos, 1 - pos], dim=1)


def write_outputs(result: dict, out_dir) -> None:
    """``metrics.json``, ``reconstructions.png`` and the per-image arrays in ``out_dir`` (each written
    atomically): ``mean.npy`` (the posterior mean), ``std.npy`` (the recalibrated std when a calibration
    was applied, else the samples' std), ``std_raw.npy`` and ``interval95.npy`` (lower and upper
    ``mean -+ 1.96 std``, shape ``(2, N, C, H, W)``); all ``(N, C, H, W)`` in ``[0, 1]`` pixel units."""
    from pathlib import Path

    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = dict(result.get("arrays") or {})
    if arrays:
        arrays.setdefault("std", arrays["std_raw"])
        arrays["interval95"] = np.stack([arrays["mean"] - 1.96 * arrays["std"], arrays["mean"] + 1.96 * arrays["std"]])
        for name, value in arrays.items():
            atomic_write(out_dir / f"{name}.npy", lambda f, v=value: np.save(f, v.astype(np.float32)))
    atomic_write(out_dir / "metrics.json", lambda f: f.write(json.dumps(result["metrics"], indent=2).encode()))
    fig = result["figure"]
    if (result["metrics"].get("field") or {}).get("signed") and fig.shape[1] == 1:
        k = min(FIGURE_IMAGES, result["metrics"]["num_images"])
        row = slice(result["figure_std_row"] * k, (result["figure_std_row"] + 1) * k)
        fig = fig.clone()
        fig[row] = 0.5 + 0.5 * fig[row]  # the std map from white (0) to red (largest)
        fig = diverging(fig)
    if fig.shape[-1] < 96:  # small patches: enlarge (nearest) so that pixels stay visible
        fig = torch.nn.functional.interpolate(fig, scale_factor=96 // fig.shape[-1], mode="nearest")
    nrow = min(FIGURE_IMAGES, result["metrics"]["num_images"])
    save_grid(fig, out_dir / "reconstructions.png", nrow=nrow, value_range=(0.0, 1.0))


__all__ = ["evaluate", "fit_spread", "fit_spread_on", "apply_spread", "context_roughness", "table", "write_outputs", "best_baseline"]

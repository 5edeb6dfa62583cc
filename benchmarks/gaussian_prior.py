"""A Gaussian prior learned at 32x32 from the training split, used at every density and resolution of the
density grid (``density_resolution.py``): its conditional mean (kriging) against the classical methods on
the same test images and masks, beside the grid's model.

    python benchmarks/gaussian_prior.py                              # navier-stokes and darcy, the grid's cells
    python benchmarks/gaussian_prior.py --datasets darcy --resolutions 32 --limit 8

The prior is fitted once per dataset on its training split at ``--fit-resolution`` (the grid's models train
at 32x32 only): ``navier-stokes``, whose fields live on the torus, a stationary model there (a smooth mean
and the covariance of the deviations, ``TorusGaussian``); the others the mean and sample covariance of the
training fields (``EmpiricalGaussian``). At other resolutions it is resampled (``resampled``), never
refitted. Each cell ``(context ratio, resolution)``: the first test images (``--limit`` at 32x32 and as many
pixels above, as the grid), masks ``fixed_mask(--mask-seed, index, ...)`` of each image's dataset index
with 10% query pixels (the grid's masks), query PSNR on ``[0, 1]`` of biharmonic, cubic, the thin-plate spline and ``gaussian``; the margin
is ``gaussian`` minus the best of the three. ``--grid`` (the density grid's JSON) adds the model's margin
per cell. Writes ``--json``; prints a table per dataset.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ddo.plugins import load_host
from ddo_conditional.classical.baselines import baseline_batch
from ddo_conditional.classical.kriging import EmpiricalGaussian, TorusGaussian, krige
from ddo_conditional.data.masks import fixed_mask
from ddo_conditional.inference.metrics import psnr

BASELINES = ("biharmonic", "cubic", "thin-plate")
TORUS = ("navier-stokes",)  # periodic fields: a stationary prior on the torus


def images_at(limit: int, res: int) -> int:
    """As ``density_resolution.py``: ``limit`` images at 32x32, the same number of pixels above, at least 4."""
    return max(4, limit * 32 * 32 // (res * res)) if res > 32 else limit


def stack(dataset, n: int) -> torch.Tensor:
    return torch.stack([torch.as_tensor(dataset[i]["image"]) for i in range(n)]).double()  # (n, C, H, W), [-1, 1]


def fit_prior(host, name: str, res: int):
    train = host.datasets.get(name)(split="train", resolution=res)
    fields = stack(train, len(train))
    return TorusGaussian.fit(fields, mean_modes=4) if name in TORUS else EmpiricalGaussian.fit(fields)


def conditional_mean(prior, image: torch.Tensor, ctx: np.ndarray, jitter: float) -> torch.Tensor:
    """Kriging of every channel of ``image (C, H, W)`` from all channels at the pixels ``ctx``."""
    c = image.shape[0]
    pixels = torch.from_numpy(ctx).repeat(c)
    channels = torch.arange(c).repeat_interleave(len(ctx))
    return krige(prior, channels, pixels, image.flatten(1)[:, ctx].flatten(), jitter=jitter)


def cell(name: str, test, prior, ratio: float, res: int, a) -> dict:
    """One cell on the test split at ``res`` with the prior already resampled to it."""
    n = min(images_at(a.limit, res), len(test))
    images = stack(test, n)
    masks = [fixed_mask(a.mask_seed, int(test[i]["index"]), res, res, ratio, 0.1) for i in range(n)]  # the grid's
    ctx = torch.from_numpy(np.stack([m[0] for m in masks]))
    query = torch.zeros(n, 1, res * res)
    for i, (_, q) in enumerate(masks):
        query[i, 0, q] = 1
    query = query.view(n, 1, res, res).double()
    truth01 = (images + 1) / 2
    preds, seconds = {}, {}
    for m in BASELINES:
        t0 = time.time()
        preds[m] = baseline_batch(truth01, ctx, m)
        seconds[m] = time.time() - t0
    t0 = time.time()
    preds["gaussian"] = torch.stack([(conditional_mean(prior, img, m[0], a.jitter) + 1) / 2
                                     for img, m in zip(images, masks)]).clamp(0, 1)
    seconds["gaussian"] = time.time() - t0
    scores = {m: float(psnr(p, truth01, query).mean()) for m, p in preds.items()}
    best = max(BASELINES, key=scores.get)
    out = {"psnr_query": scores, "best_classical": best, "margin_db": scores["gaussian"] - scores[best],
           "images": n, "context_points": len(masks[0][0]), "seconds": {k: round(v, 2) for k, v in seconds.items()}}
    print(f"{name} {ratio:.0%} @ {res}: gaussian {scores['gaussian']:.2f} dB, {best} {scores[best]:.2f} "
          f"({out['margin_db']:+.2f})", file=sys.stderr, flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="navier-stokes,darcy")
    p.add_argument("--ratios", default="0.01,0.03,0.1,0.3")
    p.add_argument("--resolutions", default="32,64,128")
    p.add_argument("--fit-resolution", type=int, default=32)
    p.add_argument("--limit", type=int, default=32)
    p.add_argument("--mask-seed", type=int, default=1)
    p.add_argument("--jitter", type=float, default=1e-6, help="kriging's relative nugget")
    p.add_argument("--grid", default="benchmarks/results/density_resolution.json",
                   help="the density grid's JSON, for the model's margin per cell ('' for none)")
    p.add_argument("--json", default="benchmarks/results/gaussian_prior.json")
    a = p.parse_args()
    host = load_host()
    ratios = [float(r) for r in a.ratios.split(",")]
    resolutions = [int(r) for r in a.resolutions.split(",")]
    grid = json.loads(Path(a.grid).read_text())["datasets"] if a.grid else {}
    t0 = time.time()
    out = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "fit_resolution": a.fit_resolution, "limit": a.limit, "mask_seed": a.mask_seed,
           "jitter": a.jitter, "ratios": ratios, "resolutions": resolutions, "datasets": {}}
    for name in a.datasets.split(","):
        prior = fit_prior(host, name, a.fit_resolution)
        cells = {}
        for res in resolutions:
            test = host.datasets.get(name)(split="test", resolution=res)
            at_res = prior.resampled(res, res)
            for ratio in ratios:
                c = cell(name, test, at_res, ratio, res, a)
                model = grid.get(name, {}).get("cells", {}).get(f"{ratio}@{res}")
                if model is not None:
                    c["model_margin_db"] = model["margin_db"]
                cells[f"{ratio}@{res}"] = c
        out["datasets"][name] = {"prior": type(prior).__name__, "cells": cells}
        print(f"\n{name} ({type(prior).__name__} fitted at {a.fit_resolution}x{a.fit_resolution}): dB over the best "
              "classical, gaussian (model)")
        print("| context | " + " | ".join(f"{r}x{r}" for r in resolutions) + " |")
        print("|---" * (len(resolutions) + 1) + "|")
        for ratio in ratios:
            row = []
            for res in resolutions:
                c = cells[f"{ratio}@{res}"]
                model = f" ({c['model_margin_db']:+.2f})" if "model_margin_db" in c else ""
                row.append(f"{c['margin_db']:+.2f}{model}")
            print(f"| {ratio:.0%} | " + " | ".join(row) + " |")
    out["seconds"] = round(time.time() - t0, 1)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reconstruction from scattered points, at two target resolutions, against classical scattered-data
interpolation on identical points.

    python benchmarks/scattered.py --setconv runs/setconv/checkpoint.pt --attention runs/attention/checkpoint.pt \
        [--pixel runs/demo/checkpoint.pt] [--json benchmarks/results/scattered.json]

Images: the test split of `natural-patches` at 64x64 (the ground truth at 64) and its 2x2 area
average (the same scenes at 32x32). Points: each image's fixed 10% context mask of the 32x32 grid
(seed and global index, as in training), every point moved to its fixed jittered position inside
its cell, its value read from the 64x64 image there (bilinear). The same points are reconstructed
on both grids by every method: `griddata` linear and cubic (nearest outside the convex hull),
`RBFInterpolator` with the thin-plate-spline kernel, and each point-set model's posterior mean
(`ddo-x0`, averaged over the 8 rotations and flips of the points). Scored on the query cells (the
image's 10% query pixels of the 32x32 grid; at 64x64 their 4 sub-pixels each). At 32x32 the rows
"(on-grid context)" use the context pixels of the 32x32 image themselves (the pixel pipeline's own
conditioning): biharmonic inpainting and, with `--pixel`, a pixel-context model.

`--write-csv FILE --scene N`: write test scene N's points as a `ddo reconstruct --points` CSV instead
(and `FILE.truth.png`, the scene at 64x64).

`--throughput KEY [KEY ...]`: training throughput of the demo's configuration per conditioning key
instead (median of the per-step rates logged after the first 10 steps).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.interpolate import RBFInterpolator, griddata

from ddo.cli import main as ddo_main
from ddo.data import ArrayImages, SPLIT_OFFSETS, load_natural_patches
from ddo.plugins import load_host
from ddo.train import load_model
from ddo_conditional.classical.baselines import baseline_batch
from ddo_conditional.data.datasets import create_query_mask_batched
from ddo_conditional.inference.metrics import image_metrics
from ddo_conditional.classical.thin_plate import point_context
from ddo_conditional.data.points import bilinear, grid_points
from ddo_conditional.inference.reconstruct import Reconstructor, SamplingPlan


def scenes() -> tuple[torch.Tensor, torch.Tensor]:
    """The test split at 64x64 and its 2x2 area average, ``(N, 3, H, W)`` in ``[-1, 1]``."""
    fine = load_natural_patches("test", 64)
    x64 = torch.stack([fine[i]["image"] for i in range(len(fine))])
    return x64, torch.nn.functional.avg_pool2d(x64, 2)


def point_sets(wrapper, x32: torch.Tensor, x64: torch.Tensor) -> dict:
    """The context of every image as jittered points (the model's own mask and offsets), values
    read from the 64x64 image; the query indices of the 32x32 grid; and the images' global indices
    (which, with the seed, fix the models' random draws)."""
    uint8 = ((x32.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    masked = wrapper.mask_dataset(ArrayImages(uint8, SPLIT_OFFSETS["test"]), coords="jitter")
    items = [masked[i] for i in range(len(masked))]
    coords = torch.stack([it["context_coords"] for it in items])
    values = torch.stack([bilinear(x64[i], coords[i]) for i in range(len(items))])
    return {"coords": coords, "values": values, "valid": torch.ones(coords.shape[:2], dtype=torch.bool),
            "context_indices": torch.stack([it["context_indices"] for it in items]),
            "context_values": torch.stack([it["context_values"] for it in items]),
            "query_indices": torch.stack([it["query_indices"] for it in items]),
            "index": [it["index"] for it in items]}


def query_mask(query_indices: torch.Tensor, res: int) -> torch.Tensor:
    """The 32x32 query pixels as a mask on a ``res x res`` grid (each one's ``(res/32)^2`` sub-pixels)."""
    m = create_query_mask_batched(query_indices, 32, 32)
    return torch.nn.functional.interpolate(m, size=(res, res), mode="nearest")


def classical(pts: dict, res: int) -> dict[str, torch.Tensor]:
    """griddata linear / cubic (nearest outside the hull) and thin-plate RBF, ``(N, 3, res, res)`` in [0, 1]."""
    targets = grid_points(res, res, dtype=torch.float64).numpy()
    out = {"griddata-linear": [], "griddata-cubic": [], "rbf-thin-plate": []}
    for c, v in zip(pts["coords"].double().numpy(), ((pts["values"] + 1) / 2).double().numpy()):
        near = griddata(c, v, targets, method="nearest")
        for method in ("linear", "cubic"):
            g = griddata(c, v, targets, method=method)
            out[f"griddata-{method}"].append(np.where(np.isnan(g), near, g))
        out["rbf-thin-plate"].append(RBFInterpolator(c, v, kernel="thin_plate_spline")(targets))
    return {k: torch.from_numpy(np.stack(v)).float().clamp(0, 1).transpose(1, 2).reshape(-1, 3, res, res)
            for k, v in out.items()}


def estimator(gen_sde, batch: int) -> Reconstructor:
    """The posterior-mean estimate ``ddo-x0``, averaged over the 8 rotations and flips, seed 0."""
    return Reconstructor(gen_sde, SamplingPlan(rows=batch, seed=0, symmetrize=True))


@torch.no_grad()
def point_model(gen_sde, pts: dict, res: int, batch: int = 16) -> torch.Tensor:
    rec = estimator(gen_sde, batch)
    parts = []
    for s in range(0, len(pts["coords"]), batch):
        sl = slice(s, s + batch)
        kw = point_context(pts["coords"][sl], pts["values"][sl], pts["valid"][sl], res, res)
        n = pts["coords"][sl].shape[0]
        parts.append(rec.posterior_mean(kw, (n, 3, res, res), pts["index"][sl])[0])
    return ((torch.cat(parts) + 1) / 2).clamp(0, 1)


@torch.no_grad()
def pixel_model(gen_sde, wrapper, pts: dict, x32: torch.Tensor, batch: int = 16) -> torch.Tensor:
    rec = estimator(gen_sde, batch)
    parts = []
    for s in range(0, len(x32), batch):
        sl = slice(s, s + batch)
        b = {"image": x32[sl], "context_indices": pts["context_indices"][sl], "context_values": pts["context_values"][sl]}
        parts.append(rec.posterior_mean(wrapper.model_kwargs(b, "cpu"), x32[sl].shape, pts["index"][sl])[0])
    return ((torch.cat(parts) + 1) / 2).clamp(0, 1)


def score(preds: dict, truth01: torch.Tensor, qmask: torch.Tensor) -> dict:
    rows = {}
    for name, p in preds.items():
        m = image_metrics(p, truth01, qmask)
        rows[name] = {"psnr_query": float(m["psnr_query"].mean()), "ssim_query": float(m["ssim_query"].mean()),
                      "psnr_full": float(m["psnr_full"].mean())}
    return rows


def throughput(keys: list[str], steps: int) -> dict:
    flags = ["--preset", "cpu-small", "--parameterization", "x0", "--num-sample", "0", "--no-progress",
             "--iterations", str(steps), "--log-every", "1"]
    rates = {}
    for key in keys:
        extra = ["--loss", "x0-mse", "--loss-t1-fraction", "0.5"] + (
            ["--loss-weighting", "relative", "--loss-floor", "1e-4"] if key in ("sparse-biharmonic", "sparse-setconv",
                                                                               "sparse-attention") else [])
        with tempfile.TemporaryDirectory() as d:
            assert ddo_main(["train", "--out", d + "/r", "--conditioning", key, *flags, *extra]) == 0
            logged = [json.loads(line) for line in open(d + "/r/metrics.jsonl")]
        rates[key] = statistics.median(r["img_per_s"] for r in logged if r["step"] > 10)
        print(f"{key}: {rates[key]:.1f} training images/s (batch 32, median over steps 11-{steps})", flush=True)
    return rates


def write_csv(a) -> int:
    from ddo.visual import save_grid

    host = load_host()
    _, wrapper = load_model(a.setconv or a.attention, host, "cpu")[:2]
    x64, x32 = scenes()
    pts = point_sets(wrapper, x32, x64)
    c, v = pts["coords"][a.scene].numpy(), ((pts["values"][a.scene] + 1) / 2).clamp(0, 1).numpy()
    lines = ["x,y,r,g,b"] + [f"{x:.6f},{y:.6f},{r:.5f},{g:.5f},{b:.5f}" for (x, y), (r, g, b) in zip(c, v)]
    Path(a.write_csv).write_text("\n".join(lines) + "\n")
    save_grid(x64[a.scene:a.scene + 1], a.write_csv + ".truth.png", nrow=1)
    print(f"wrote {len(c)} points of test scene {a.scene} to {a.write_csv}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setconv")
    p.add_argument("--attention")
    p.add_argument("--pixel")
    p.add_argument("--throughput", nargs="+", metavar="KEY")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--json")
    p.add_argument("--write-csv")
    p.add_argument("--scene", type=int, default=0)
    a = p.parse_args()
    if a.write_csv:
        return write_csv(a)
    conditions = {"machine": platform.machine(), "processor": platform.processor(), "threads": torch.get_num_threads()}
    if a.throughput:
        result = {"conditions": {**conditions, "batch": 32, "config": "cpu-small, x0"},
                  "train_images_per_s": throughput(a.throughput, a.steps)}
    else:
        result = {"conditions": conditions, **evaluate_all(a)}
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return 0


def evaluate_all(a) -> dict:
    host = load_host()
    x64, x32 = scenes()
    models = {k: load_model(path, host, "cpu")[:2] for k, path in (("sparse-setconv", a.setconv),
                                                                  ("sparse-attention", a.attention)) if path}
    if not models:
        raise SystemExit("give --setconv and/or --attention checkpoints")
    pts = point_sets(next(iter(models.values()))[1], x32, x64)
    tables = {}
    for res, truth in ((32, x32), (64, x64)):
        t0 = time.monotonic()
        preds = classical(pts, res)
        for key, (gen_sde, _) in models.items():
            preds[key] = point_model(gen_sde, pts, res)
        if res == 32:  # the pixel pipeline's own context: the context pixels of the 32x32 image
            preds["biharmonic (on-grid context)"] = baseline_batch((x32 + 1) / 2, pts["context_indices"], "biharmonic")
        if a.pixel and res == 32:
            gen_sde, wrapper = load_model(a.pixel, host, "cpu")[:2]
            preds["pixel-model (on-grid context)"] = pixel_model(gen_sde, wrapper, pts, x32)
        tables[res] = score(preds, (truth + 1) / 2, query_mask(pts["query_indices"], res))
        print(f"\n{len(x64)} test scenes, {pts['coords'].shape[1]} jittered points each, target {res}x{res} "
              f"({time.monotonic() - t0:.0f} s)\n\n| method | query PSNR | query SSIM | full PSNR |\n|---|---|---|---|")
        for name, r in sorted(tables[res].items(), key=lambda kv: -kv[1]["psnr_query"]):
            print(f"| {name} | {r['psnr_query']:.2f} | {r['ssim_query']:.4f} | {r['psnr_full']:.2f} |")
    return {"images": len(x64), "points_per_image": int(pts["coords"].shape[1]), "tables": tables,
            "checkpoints": {"setconv": a.setconv, "attention": a.attention, "pixel": a.pixel}}


if __name__ == "__main__":
    sys.exit(main())

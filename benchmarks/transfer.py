"""Does the margin over biharmonic transfer? One training configuration, scored on training crops,
on the validation photograph and on the test photographs of `natural-patches`, per image.

    python benchmarks/transfer.py --out runs/transfer/base --iterations 1000 [ddo train flags ...]

Trains `ddo demo`'s configuration (its defaults, any `ddo train` flag given after the known ones
added, e.g. `--augment photometric --crop-scales continuous`) for `--iterations` steps unless
`--out` already holds a checkpoint, then reconstructs every validation and test crop and every
`--every`-th training crop with `ddo demo`'s posterior mean (`ddo-x0`, averaged over the 8
rotations and flips) and with biharmonic interpolation on the same masks. Per split: mean query
PSNR and SSIM, the crops won, the margin per third of crops ordered by biharmonic PSNR, the mean
margin of the worst tenth, and per photograph. Writes `transfer.json` and the per-image arrays
(`transfer_<split>.npz`, what a shrinkage rule is fitted on) into `--out`.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from ddo.cli import main as ddo_main
from ddo.plugins import load_host
from ddo.train import load_model
from ddo_conditional.classical.baselines import baseline_batch
from ddo_conditional.inference.batches import batches
from ddo_conditional.inference.metrics import image_metrics
from ddo_conditional.inference.reconstruct import Reconstructor, SamplingPlan

DEMO_FLAGS = ["--preset", "cpu-small", "--conditioning", "sparse-biharmonic", "--parameterization", "x0",
              "--refiner-width", "32", "--residual-scale", "context-input", "--loss", "x0-mse", "--loss-weighting", "relative", "--loss-floor", "1e-4",
              "--num-sample", "0", "--seed", "0"]
SPLITS = ("train", "val", "test")


def train(out: Path, iterations: int, extra: list[str]) -> None:
    if (out / "checkpoint.pt").exists():
        return
    rc = ddo_main(["train", "--out", str(out), "--iterations", str(iterations), "--no-progress", *DEMO_FLAGS, *extra])
    if rc:
        raise SystemExit(rc)


@torch.no_grad()
def collect(gen_sde, wrapper, dataset, batch_size: int) -> dict[str, np.ndarray]:
    """Per image: the 8 estimates' mean and their disagreement, biharmonic, truth, query mask, roughness."""
    reconstructor = Reconstructor(gen_sde, SamplingPlan(rows=batch_size, seed=0, symmetrize=True))
    keys = ("x0", "spread", "biharmonic", "truth", "qmask", "roughness")
    parts = {k: [] for k in keys}
    for b in batches(dataset, wrapper, reconstructor):
        got = (*b.x0, baseline_batch(b.truth, b.items["context_indices"], "biharmonic"), b.truth, b.query_mask,
               b.roughness)
        for k, v in zip(keys, got):
            parts[k].append(v.cpu())
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def summary(arrays: dict, estimate: np.ndarray, sources: list[str]) -> dict:
    """Margins of ``estimate`` over biharmonic on the query pixels, per image and aggregated."""
    t = {k: torch.from_numpy(arrays[k]) for k in ("truth", "qmask", "biharmonic")}
    ours = image_metrics(torch.from_numpy(estimate), t["truth"], t["qmask"])
    bih = image_metrics(t["biharmonic"], t["truth"], t["qmask"])
    a, b = ours["psnr_query"].numpy(), bih["psnr_query"].numpy()
    margin = a - b
    order = np.argsort(b)  # hardest (lowest biharmonic PSNR) first
    thirds = [float(margin[part].mean()) for part in np.array_split(order, 3)]
    worst = np.sort(margin)[: max(1, len(margin) // 10)]
    photos = defaultdict(list)
    for name, m in zip(sources, margin):
        photos[name].append(float(m))
    return {"crops": len(a), "ddo_x0": float(a.mean()), "biharmonic": float(b.mean()), "margin": float(margin.mean()),
            "ssim_ddo_x0": float(ours["ssim_query"].mean()), "ssim_biharmonic": float(bih["ssim_query"].mean()),
            "won": int((margin > 0).sum()), "thirds": thirds, "worst_tenth": float(worst.mean()),
            "photos": {k: float(np.mean(v)) for k, v in photos.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--every", type=int, default=4, help="score every N-th training crop (default 4)")
    p.add_argument("--batch-size", type=int, default=32)
    a, extra = p.parse_known_args()
    out = Path(a.out)
    t0 = time.monotonic()
    train(out, a.iterations, extra)
    train_s = time.monotonic() - t0
    host = load_host()
    gen_sde, wrapper, config = load_model(out / "checkpoint.pt", host, "cpu")
    step = int(torch.load(out / "checkpoint.pt", weights_only=True, map_location="cpu")["step"])
    result = {"run": out.name, "train_steps": step, "train_seconds": round(train_s, 1), "extra_flags": extra,
              "config": {k: config.get(k) for k in ("augment", "crop_scales", "seed", "conditioning", "loss")},
              "conditions": {"machine": platform.machine(), "threads": torch.get_num_threads(),
                             "estimate": "ddo-x0, mean of the 8 rotated/flipped one-call estimates"}}
    for split in SPLITS:
        base = host.datasets.get("natural-patches")(split=split, resolution=32)
        masked = wrapper.wrap_dataset(base, "test")  # fixed masks, no augmentation
        keep = list(range(0, len(masked), a.every if split == "train" else 1))
        arrays = collect(gen_sde, wrapper, Subset(masked, keep), a.batch_size)
        np.savez_compressed(out / f"transfer_{split}.npz", sources=np.array([base.sources[i] for i in keep]), **arrays)
        result[split] = summary(arrays, arrays["x0"], [base.sources[i] for i in keep])
        r = result[split]
        print(f"{out.name} {split}: ddo-x0 {r['ddo_x0']:.2f} vs biharmonic {r['biharmonic']:.2f} dB "
              f"({r['margin']:+.3f}; won {r['won']}/{r['crops']}; thirds "
              + " / ".join(f"{x:+.2f}" for x in r["thirds"]) + f"; worst tenth {r['worst_tenth']:+.2f}; "
              f"SSIM {r['ssim_ddo_x0']:.4f} vs {r['ssim_biharmonic']:.4f})", flush=True)
    (out / "transfer.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

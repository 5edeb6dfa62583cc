"""Where a model's posterior mean gains or loses against a baseline, image by image, from the
``psnr_query_per_image`` lists of a ``metrics.json`` (``ddo demo`` / ``ddo reconstruct``).

    python benchmarks/per_image_gap.py runs/demo/metrics.json [--model ddo-x0] [--baseline biharmonic]

Prints and writes (``--json``): the images won, the mean of per-image PSNR (the reported score), the
PSNR of the pooled MSE (what a plain MSE loss optimises), and the mean margin within thirds of the
images ordered by the baseline's PSNR (hard, middle, smooth).
"""
from __future__ import annotations

import argparse
import json
import math
import sys


def pooled_psnr(values: list[float]) -> float:
    """PSNR of the mean of the per-image MSEs behind ``values`` (same data range)."""
    return -10 * math.log10(sum(10 ** (-p / 10) for p in values) / len(values))


def gap(metrics: dict, model: str, baseline: str, groups: int = 3) -> dict:
    a = metrics["methods"][model]["psnr_query_per_image"]
    b = metrics["methods"][baseline]["psnr_query_per_image"]
    n = len(a)
    order = sorted(range(n), key=lambda i: b[i])
    parts = [order[k * n // groups:(k + 1) * n // groups] for k in range(groups)]
    return {
        "model": model, "baseline": baseline, "images": n, "won": sum(x > y for x, y in zip(a, b)),
        "mean_psnr": [sum(a) / n, sum(b) / n], "pooled_mse_psnr": [pooled_psnr(a), pooled_psnr(b)],
        "groups_by_baseline_psnr": [{"baseline_psnr": sum(b[i] for i in p) / len(p),
                                     "margin": sum(a[i] - b[i] for i in p) / len(p)} for p in parts],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics")
    p.add_argument("--model", default="ddo-x0")
    p.add_argument("--baseline", default="biharmonic")
    p.add_argument("--json")
    a = p.parse_args()
    with open(a.metrics) as f:
        r = gap(json.load(f), a.model, a.baseline)
    print(f"{a.model} vs {a.baseline} on {r['images']} images: won {r['won']}; mean of per-image PSNR "
          f"{r['mean_psnr'][0]:.2f} vs {r['mean_psnr'][1]:.2f}; PSNR of pooled MSE {r['pooled_mse_psnr'][0]:.2f} vs "
          f"{r['pooled_mse_psnr'][1]:.2f}")
    print("| thirds by baseline PSNR | baseline PSNR | margin (dB) |\n|---|---|---|")
    for name, g in zip(("hard", "middle", "smooth"), r["groups_by_baseline_psnr"]):
        print(f"| {name} | {g['baseline_psnr']:.2f} | {g['margin']:+.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every method on every mask pattern, and a 32x32-trained model at 64x64, in one invocation.

    python benchmarks/reconstruction.py --checkpoint runs/demo/checkpoint.pt --limit 64 --json recon.json

Rows are measured in this run on the same images and masks for all methods (natural-patches test
split: crops of two held-out photographs). Prints one Markdown table.
"""
import argparse
import json
import platform
import sys
import time

import torch

from ddo.models import count_parameters
from ddo.plugins import load_host
from ddo.train import load_model
from ddo_conditional.inference.evaluate import evaluate
from ddo_conditional.data.masks import PATTERNS
from ddo_conditional.inference.reconstruct import Reconstructor, SamplingPlan


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--limit", type=int, default=64)
    p.add_argument("--num-samples", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="benchmarks/results/reconstruction.json")
    a = p.parse_args()
    host = load_host()
    gen, wrapper, cfg = load_model(a.checkpoint, host)
    cases = [(pattern, cfg["resolution"]) for pattern in PATTERNS] + [("random", 2 * cfg["resolution"])]
    plan = SamplingPlan(samples=a.num_samples, steps=a.steps, sampler=host.samplers.get(a.sampler), sampler_name=a.sampler,
                        seed=a.seed)
    rows = {}
    for pattern, res in cases:
        t0 = time.time()
        test = host.datasets.get("natural-patches")(split="test", resolution=res)
        ds = wrapper.mask_dataset(test, pattern=pattern)
        ev = evaluate(Reconstructor(gen, plan), wrapper, ds, limit=a.limit)
        rows[f"{pattern}@{res}"] = {"methods": {k: {kk: v[kk] for kk in ("psnr_query", "ssim_query", "psnr_full")}
                                                for k, v in ev.methods.items()},
                                    "ddo_mean_source": ev.mean_source,
                                    "calibration": ev.coverage, "seconds": round(time.time() - t0, 1)}
        print(pattern, res, {k: round(v["psnr_query"], 2) for k, v in ev.methods.items()}, flush=True)
    out = {"checkpoint": a.checkpoint, "config": {k: cfg.get(k) for k in ("conditioning", "loss", "parameterization",
                                                                             "resolution", "ch", "modes")},
           "parameters": count_parameters(gen.network), "test_images": a.limit, "num_samples": a.num_samples,
           "steps": a.steps, "sampler": a.sampler, "seed": a.seed, "threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(), "rows": rows}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    methods = ["ddo-mean", "ddo-x0", "ddo-samples-mean", "biharmonic", "linear", "cubic", "nearest"]
    print("| masks @ resolution | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for case, r in rows.items():
        cells = [f"{r['methods'][m]['psnr_query']:.2f}" if m in r["methods"] else "-" for m in methods]
        print(f"| {case} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fields: time per generated sample, and a trained field model against the classical baselines at
10% and 3% context, random and grid masks, at its training resolution and zero-shot at twice it.

    python benchmarks/fields.py --timing                                   # seconds per generated sample
    python benchmarks/fields.py --checkpoint runs/demo_ns/checkpoint.pt --limit 100 \\
        --json benchmarks/results/fields_navier_stokes.json

Every method is scored on the same images and masks within a case (the dataset's test split, indices
disjoint from training). Prints one Markdown table per measurement.
"""
import argparse
import json
import platform
import sys
import time

import torch

from ddo import data, fields
from ddo.plugins import load_host
from ddo.train import load_model
from ddo.api import dihedral_invariant
from ddo_conditional.inference.evaluate import evaluate
from ddo_conditional.inference.reconstruct import Reconstructor, SamplingPlan

CASES = [("random", 0.10, 1), ("random", 0.03, 1), ("grid", 0.10, 1), ("grid", 0.03, 1), ("random", 0.10, 2),
         ("random", 0.03, 2)]


def timing(count: int = 8) -> dict:
    out = {}
    for kind in ("navier-stokes", "darcy"):
        t0 = time.perf_counter()
        if kind == "navier-stokes":
            fields.navier_stokes(data.FIELD_SEED, range(10**6, 10**6 + count), **fields.NS_DEFAULTS)
        else:
            fields.darcy(data.FIELD_SEED, range(10**6, 10**6 + count), **fields.DARCY_DEFAULTS)
        out[kind] = round((time.perf_counter() - t0) / count, 3)
        print(f"{kind}: {out[kind]} s per sample ({count} samples at 64x64, one batch)", flush=True)
    return out


def cases(a) -> dict:
    host = load_host()
    gen, wrapper, cfg = load_model(a.checkpoint, host)
    rows = {}
    for pattern, ratio, mult in CASES:
        res = cfg["resolution"] * mult
        t0 = time.time()
        test = host.datasets.get(cfg["dataset"])(split="test", resolution=res)
        ds = wrapper.mask_dataset(test, pattern=pattern, context_ratio=ratio)
        plan = SamplingPlan(samples=a.num_samples, steps=a.steps, sampler=host.samplers.get("ddim"), sampler_name="ddim",
                            symmetrize=dihedral_invariant(test))
        methods = evaluate(Reconstructor(gen, plan), wrapper, ds, limit=a.limit).methods
        rows[f"{pattern} {ratio:.0%}@{res}"] = {
            "methods": {k: {kk: v[kk] for kk in ("psnr_query", "ssim_query", "rel_l2_query", "rel_l2_full")}
                        for k, v in methods.items()}, "seconds": round(time.time() - t0, 1)}
        print(pattern, ratio, res, {k: round(v["psnr_query"], 2) for k, v in methods.items()}, flush=True)
    methods = ["ddo-mean", "biharmonic", "linear", "cubic", "nearest"]
    print("| masks, context @ resolution | " + " | ".join(f"{m} PSNR / rel. L2" for m in methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for case, r in rows.items():
        cells = [f"{r['methods'][m]['psnr_query']:.2f} / {r['methods'][m]['rel_l2_query']:.3f}" for m in methods]
        print(f"| {case} | " + " | ".join(cells) + " |")
    return {"checkpoint": a.checkpoint, "dataset": cfg["dataset"], "train_context_ratio": cfg["context_ratio"],
            "test_images": a.limit, "num_samples": a.num_samples, "steps": a.steps, "rows": rows}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--timing", action="store_true")
    p.add_argument("--checkpoint")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--num-samples", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--json", default="benchmarks/results/fields.json")
    a = p.parse_args()
    out = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if a.timing:
        out["seconds_per_sample"] = timing()
    if a.checkpoint:
        out.update(cases(a))
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

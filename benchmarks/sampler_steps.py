"""Deterministic samplers with few steps against the 250-step ancestral sampler, in one invocation.

    python benchmarks/sampler_steps.py --checkpoint runs/demo/checkpoint.pt --limit 64 --json steps.json

Every row reconstructs the same test images (natural-patches test split) from the same masks, with
the same number of samples per image, and is scored on the query pixels. The comparison is on
``ddo-samples-mean`` (the mean of samples: what the sampler changes) and ``ddo-sample`` (one sample);
the one-call estimate does not depend on the sampler. Prints one Markdown table; writes JSON.
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
from ddo_conditional.inference.reconstruct import Reconstructor, SamplingPlan

DEFAULT_ROWS = "denoise:250,ddim:50,ddim:20,ddim-x0:50,ddim-x0:20"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--limit", type=int, default=64)
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--rows", default=DEFAULT_ROWS, help="sampler:steps pairs; the first is the reference")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="benchmarks/results/sampler_steps.json")
    a = p.parse_args()
    host = load_host()
    gen, wrapper, cfg = load_model(a.checkpoint, host)
    test = wrapper.wrap_dataset(host.datasets.get("natural-patches")(split="test", resolution=cfg["resolution"]), "test")
    rows = {}
    for spec in a.rows.split(","):
        sampler, steps = spec.split(":")
        t0 = time.time()
        plan = SamplingPlan(samples=a.num_samples, steps=int(steps), sampler=host.samplers.get(sampler), sampler_name=sampler,
                            seed=a.seed)
        ev = evaluate(Reconstructor(gen, plan), wrapper, test, limit=a.limit, baselines=("biharmonic",))
        rows[spec] = {"psnr_query": {k: ev.methods[k]["psnr_query"] for k in ("ddo-samples-mean", "ddo-sample", "biharmonic")},
                      "calibration": ev.coverage, "model_seconds": ev.seconds["model_s"],
                      "seconds": round(time.time() - t0, 1)}
        print(spec, rows[spec], flush=True)
    ref = next(iter(rows))
    out = {"checkpoint": a.checkpoint, "config": {k: cfg.get(k) for k in ("conditioning", "loss", "parameterization",
                                                                             "resolution", "ch", "modes")},
           "parameters": count_parameters(gen.network), "test_images": a.limit, "num_samples": a.num_samples,
           "seed": a.seed, "reference": ref, "threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "rows": rows}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"| sampler:steps | mean of {a.num_samples} samples | vs {ref} | one sample | biharmonic | model seconds |")
    print("|---|---|---|---|---|---|")
    r0 = rows[ref]["psnr_query"]["ddo-samples-mean"]
    for spec, r in rows.items():
        q = r["psnr_query"]
        print(f"| {spec} | {q['ddo-samples-mean']:.2f} | {q['ddo-samples-mean'] - r0:+.2f} | {q['ddo-sample']:.2f} | "
              f"{q['biharmonic']:.2f} | {r['model_seconds']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())

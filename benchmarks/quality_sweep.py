"""Short training runs of conditional variants, scored by the one-call posterior mean against
biharmonic interpolation on the same test images and masks. Writes JSON; prints a table.

    python benchmarks/quality_sweep.py --minutes 2 --limit 96 --json sweep.json
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch

from ddo.config import resolve
from ddo.plugins import load_host
from ddo.train import CHECKPOINT, load_model, train
from ddo_conditional.evaluate import evaluate

VARIANTS = {
    "interp-x0": {},
    "interp-x0-mixed": {"loss": "x0-mse-mixed"},
    "interp-x0-modes32": {"modes": 32},
    "interp-x0-refiner": {"refiner_width": 32},
    "interp-x0-refiner-mixed": {"refiner_width": 32, "loss": "x0-mse-mixed"},
    "biharm-x0-mixed": {"conditioning": "sparse-biharmonic", "loss": "x0-mse-mixed"},
    "biharm-x0-refiner-mixed": {"conditioning": "sparse-biharmonic", "refiner_width": 32, "loss": "x0-mse-mixed"},
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--limit", type=int, default=96)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--json", default="benchmarks/results/quality_sweep.json")
    a = p.parse_args()
    host = load_host()
    rows = {}
    for name in a.variants.split(","):
        cfg = resolve({"conditioning": "sparse-interp", "parameterization": "x0", "loss": "x0-mse",
                       "minutes": a.minutes, "num_sample": 0, **VARIANTS[name]}, a.preset, host)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.time()
            s = train(cfg, host, d, progress=False)
            gen, w, _ = load_model(os.path.join(d, CHECKPOINT), host)
            test = host.datasets.get("natural-patches")(split="test", resolution=32)
            r = evaluate(gen, w, w.wrap_dataset(test, "test"), num_samples=1, steps=1, sampler=host.samplers.get("ddim"),
                         limit=a.limit, progress=False, baselines=("biharmonic",))["metrics"]
        m = r["methods"]
        rows[name] = {"steps": s["step"], "seconds": round(time.time() - t0, 1),
                      "ddo_x0_psnr_query": m["ddo-x0"]["psnr_query"], "biharmonic_psnr_query": m["biharmonic"]["psnr_query"]}
        print(name, rows[name], flush=True)
    out = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "minutes_per_variant": a.minutes, "test_images": a.limit, "rows": rows}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    print("| variant | steps | ddo-x0 | biharmonic | margin |\n|---|---|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v['steps']} | {v['ddo_x0_psnr_query']:.2f} | {v['biharmonic_psnr_query']:.2f} | "
              f"{v['ddo_x0_psnr_query'] - v['biharmonic_psnr_query']:+.2f} |")


if __name__ == "__main__":
    sys.exit(main())

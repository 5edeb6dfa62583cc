"""fp32 against bf16 autocast (``ddo train --bf16``): loss curves and speed from the same seed, one run.

    python benchmarks/bf16_loss_curve.py --preset cpu-small --iterations 150 --json bf16.json
    python benchmarks/bf16_loss_curve.py --preset seed --device cuda --iterations 500 --json bf16_gpu.json

Both runs draw the same batches, times and noise; only the trunk's arithmetic differs (spectral
transforms and mode mixing stay fp32). Reports the logged losses side by side, their largest relative
gap, and images per second of each.
"""
import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from ddo.config import resolve
from ddo.plugins import load_host
from ddo.train import train


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--conditioning", default="none")
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default="benchmarks/results/bf16_loss_curve.json")
    a = p.parse_args()
    host = load_host()
    runs = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        cfg = resolve({"iterations": a.iterations, "log_every": a.log_every, "num_sample": 0, "bf16": bf16,
                       "conditioning": a.conditioning, "ckpt_every": 10**9}, a.preset, host)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.time()
            train(cfg, host, d, device=torch.device(a.device), progress=False)
            seconds = time.time() - t0
            log = [json.loads(ln) for ln in (Path(d) / "metrics.jsonl").read_text().splitlines()]
        runs[name] = {"steps": [r["step"] for r in log], "loss": [r["loss"] for r in log], "seconds": round(seconds, 1),
                      "img_per_s": round(a.iterations * cfg["batch_size"] / seconds, 2)}
        print(name, runs[name]["img_per_s"], "img/s", flush=True)
    gaps = [abs(b - f) / abs(f) for f, b in zip(runs["fp32"]["loss"], runs["bf16"]["loss"])]
    out = {"machine": platform.processor() or platform.machine(), "device": a.device,
           "threads": torch.get_num_threads(), "torch": torch.__version__, "preset": a.preset,
           "conditioning": a.conditioning, "iterations": a.iterations, "runs": runs,
           "max_relative_loss_gap": max(gaps), "median_relative_loss_gap": sorted(gaps)[len(gaps) // 2],
           "speedup_bf16": runs["fp32"]["seconds"] / runs["bf16"]["seconds"]}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"{a.preset}, {a.device}, {torch.get_num_threads()} threads; loss every {a.log_every} steps (mean of the window)")
    print("| step | fp32 | bf16 |\n|---|---|---|")
    for s, f, b in zip(runs["fp32"]["steps"], runs["fp32"]["loss"], runs["bf16"]["loss"]):
        print(f"| {s} | {f:.4f} | {b:.4f} |")
    print(f"largest relative gap {out['max_relative_loss_gap']:.3f}, median {out['median_relative_loss_gap']:.3f}; "
          f"bf16 speed-up {out['speedup_bf16']:.2f}x ({runs['fp32']['img_per_s']} -> {runs['bf16']['img_per_s']} img/s)")


if __name__ == "__main__":
    sys.exit(main())

"""Training and sampling throughput of a DDO configuration, with the machine's GEMM rate measured in
the same process. Prints a table and writes JSON.

    python benchmarks/throughput.py --preset seed --batch-size 128 --json throughput.json
    python benchmarks/throughput.py --preset cpu-small --batch-size 32 --resolutions 32,64,128
    python benchmarks/throughput.py --preset seed --device cuda --json gpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time

import torch

from ddo.config import resolve
from ddo.models import coordinate_grid, count_parameters
from ddo.plugins import load_host
from ddo.train import build_model


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup=2, repeat=5):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out), out


def gemm_gflops(device, n=2048, dtype=torch.float32):
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    med, _ = timed(lambda: a @ b, device, 2, 5)
    return 2 * n**3 / med / 1e9


def forward_flops(gen_sde, x, v, kwargs):
    from torch.utils.flop_counter import FlopCounterMode

    t = torch.rand(x.shape[0], device=x.device)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        gen_sde.model(x, t, v, **kwargs)
    return fc.get_total_flops()


def measure(config, host, device, batch, steps, autocast_bf16=False):
    gen_sde, wrapper = build_model(config, host)
    net = gen_sde.network.to(device)
    res, c = config["resolution"], config["channels"]
    x = torch.rand(batch, c, res, res, device=device) * 2 - 1
    v = coordinate_grid(batch, res, res, device)
    kwargs = {}
    if config["conditioning"] != "none":
        ctx = torch.zeros_like(x)
        mask = (torch.rand(batch, 1, res, res, device=device) < 0.1).float()
        kwargs = {"context_image": ctx + mask * x, "observation_mask": mask}
        kwargs = {k: kwargs[k] for k in getattr(wrapper, "needs", ("context_image",))}
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = gen_sde.dsm(x, v, **kwargs).mean()
        loss.backward()
        opt.step()

    t_train, all_train = timed(train_step, device, 2, steps)

    def sample_step():
        with torch.no_grad(), amp:
            gen_sde.denoise_step(x, 0.5, 250, v, **kwargs)

    t_sample, all_sample = timed(sample_step, device, 2, steps)
    flops = forward_flops(gen_sde, x[:1], v[:1], {k: t[:1] for k, t in kwargs.items()})
    return {"train_img_per_s": batch / t_train, "sample_img_steps_per_s": batch / t_sample,
            "train_step_s_all": all_train, "sample_step_s_all": all_sample,
            "model_gflops_per_img": flops / 1e9, "parameters": count_parameters(net)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="seed")
    p.add_argument("--conditioning", default="sparse-encoder", help="the spec's encoder wrapper by default")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported) after 2 warm-up steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--resolutions", default="", help="e.g. 32,64,128: time per image at each")
    p.add_argument("--json", default="throughput.json")
    a = p.parse_args()
    device = torch.device(a.device)
    host = load_host()
    config = resolve({"conditioning": a.conditioning}, a.preset)
    gemm = gemm_gflops(device)
    r = measure(config, host, device, a.batch_size, a.steps, a.bf16)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    train_gflops = 3 * r["model_gflops_per_img"] * r["train_img_per_s"]
    out = {
        "machine": platform.processor() or platform.machine(), "device": str(device),
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "preset": a.preset,
        "conditioning": a.conditioning, "batch_size": a.batch_size, "resolution": config["resolution"],
        "bf16": a.bf16, **r, "peak_rss_mb": peak_rss_mb, "gemm_gflops": gemm,
        "train_fraction_of_gemm": train_gflops / gemm,
        "note": "model FLOPs counted by torch's FlopCounterMode (matmuls and convolutions; FFTs not counted); "
                "a training step is taken as 3x the forward FLOPs",
    }
    if a.resolutions:
        scaling = {}
        for res in [int(s) for s in a.resolutions.split(",")]:
            cfg = {**config, "resolution": res}
            rr = measure(cfg, host, device, max(1, a.batch_size * 32 * 32 // (res * res)), 3, a.bf16)
            scaling[res] = {"train_ms_per_img": 1e3 / rr["train_img_per_s"],
                            "sample_ms_per_img_step": 1e3 / rr["sample_img_steps_per_s"]}
        import math

        rs = sorted(scaling)
        if len(rs) > 1:
            px = [math.log(r * r) for r in rs]
            for key in ("train_ms_per_img", "sample_ms_per_img_step"):
                ys = [math.log(scaling[r][key]) for r in rs]
                mx, my = sum(px) / len(px), sum(ys) / len(ys)
                slope = sum((a_ - mx) * (b_ - my) for a_, b_ in zip(px, ys)) / sum((a_ - mx) ** 2 for a_ in px)
                out[f"{key}_exponent_in_pixels"] = slope
        out["scaling"] = scaling
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"{a.preset} + {a.conditioning}, batch {a.batch_size}, {out['resolution']}x{out['resolution']}, "
          f"{device}, {out['cpu_threads']} threads, torch {torch.__version__}, {r['parameters']:,} parameters")
    print("| metric | value |\n|---|---|")
    for k in ("train_img_per_s", "sample_img_steps_per_s", "peak_rss_mb", "gemm_gflops", "model_gflops_per_img",
              "train_fraction_of_gemm"):
        print(f"| {k} | {out[k]:.3g} |")
    for k, val in out.get("scaling", {}).items():
        print(f"| {k}x{k} train ms/img, sample ms/img-step | {val['train_ms_per_img']:.2f}, "
              f"{val['sample_ms_per_img_step']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

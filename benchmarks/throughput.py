"""Training and sampling throughput of a DDO configuration, with the machine's GEMM rate measured in
the same process. Training steps are those of `ddo train` (`ddo.train.train` on random images);
sampling steps are `denoise_step` calls as reconstruction makes them. Prints a table and writes JSON.

    python benchmarks/throughput.py --preset seed --batch-size 128 --bf16-sampling \
        --json benchmarks/results/results_throughput_seed_inference.json
    python benchmarks/throughput.py --preset seed --batch-size 128 --sample-rows 16,32,64,128 --bf16-sampling \
        --baseline <checkout of an earlier commit> --json benchmarks/results/sampling_seed_rows.json
    python benchmarks/throughput.py --preset cpu-small --batch-size 32 --resolutions 32,64,128 --json scaling.json
    python benchmarks/throughput.py --preset seed --device cuda --json gpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ddo import hookimpl
from ddo.allocator import tune_malloc
from ddo.config import resolve
from ddo.diffusion import DenoisingDiffusion
from ddo.models import coordinate_grid, count_parameters
from ddo.plugins import load_host
from ddo.train import build_model, set_inference_dtype, train as train_run
from ddo_conditional.nn.conditional_model import ConditionalNetwork

RANDOM_IMAGES = "random-images"


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


class RandomImages:
    """Plugin object: the dataset ``random-images``, ``n`` random images of ``channels`` channels in
    ``[-1, 1]`` at the run's resolution (each a pure function of its index), so that training is timed
    through ``ddo.train.train`` without reading data from disk."""

    def __init__(self, channels: int, n: int):
        self.channels, self.n = channels, n

    @hookimpl
    def register_datasets(self, register):
        register(RANDOM_IMAGES, lambda split="train", resolution=32, **_: _Images(self.channels, resolution, self.n))


class _Images(torch.utils.data.Dataset):
    def __init__(self, channels: int, resolution: int, n: int):
        self.shape, self.n = (channels, resolution, resolution), n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"image": torch.rand(self.shape, generator=g) * 2 - 1, "index": i}


def forward_flops(gen_sde, x, v, kwargs):
    """The model's FLOPs with autograd, as training computes them: matmuls, convolutions, the spectral
    mode mixing, and the transforms of grids up to 16x16 (dense DFT matrices, i.e. matmuls); the FFTs of
    larger grids are not counted (FlopCounterMode ignores them)."""
    from torch.utils.flop_counter import FlopCounterMode

    t = torch.rand(x.shape[0], device=x.device)
    with FlopCounterMode(display=False) as fc, torch.enable_grad():
        gen_sde.model(x, t, v, **kwargs)
    return fc.get_total_flops()


def time_training(config, device, batch, steps, micro_batch=None, bf16=False, compile=False) -> list[float]:
    """Seconds of each of ``steps`` training steps after 2 warm-up steps, as ``ddo train`` runs them
    (``ddo.train.train``: data loader, ``batch / micro_batch`` accumulated parts as ``--grad-accum``,
    gradient clipping, Adam, EMA; ``--bf16``, ``--compile``), on random images."""
    mb = micro_batch or batch
    if batch % mb:
        raise SystemExit(f"--micro-batch {mb} does not divide the batch {batch}")
    host = load_host(extra_plugins=[RandomImages(config["channels"], 2 * batch)])
    run = {**config, "dataset": RANDOM_IMAGES, "data_root": None, "batch_size": batch, "grad_accum": batch // mb,
           "bf16": bf16, "compile": compile, "iterations": 2 + steps, "minutes": None, "log_every": 1,
           "ckpt_every": 3 + steps, "sample_every": None, "num_sample": 0, "num_workers": 0}
    with tempfile.TemporaryDirectory() as tmp:
        train_run(run, host, Path(tmp) / "run", device=device, progress=False)
        logged = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    return [batch / r["img_per_s"] for r in logged[2:]]


def measure(config, host, device, batch, steps, autocast_bf16=False, micro_batch=None, compile=False,
            train=True, bf16_sampling=False):
    """Median seconds of a training step (:func:`time_training`) and of a sampling step (``denoise_step``
    over ``batch`` images, in network calls of ``micro_batch`` rows when given)."""
    all_train = time_training(config, device, batch, steps, micro_batch, autocast_bf16, compile) if train else []
    t_train = statistics.median(all_train) if all_train else float("nan")
    gen_sde, wrapper = build_model(config, host)
    net = gen_sde.network.to(device)
    res, c = config["resolution"], config["channels"]
    x = torch.rand(batch, c, res, res, device=device) * 2 - 1
    v = coordinate_grid(batch, res, res, device)
    kwargs = {}
    if config["conditioning"] != "none":
        ctx = torch.zeros_like(x)
        mask = (torch.rand(batch, 1, res, res, device=device) < 0.1).float()
        # context_dense (an interpolation, for the wrappers that refine one): any image of the shape times the same
        kwargs = {"context_image": ctx + mask * x, "observation_mask": mask, "context_dense": x.clone()}
        kwargs = {k: kwargs[k] for k in getattr(wrapper, "needs", ("context_image",))}
    flops = forward_flops(gen_sde, x[:1], v[:1], {k: t[:1] for k, t in kwargs.items()})
    if compile:
        gen_sde = DenoisingDiffusion(gen_sde.forward_diffusion, torch.compile(net), gen_sde.parameterization)
    parts = [slice(i, i + (micro_batch or batch)) for i in range(0, batch, micro_batch or batch)]

    # as reconstruct(): the network's step-invariant context terms computed once per batch
    cache = net.cache_context if isinstance(net, ConditionalNetwork) else None
    with torch.no_grad():
        cached = [cache(**{k: t[sl] for k, t in kwargs.items()}) if cache else {k: t[sl] for k, t in kwargs.items()}
                  for sl in parts]

    def sample_step(use_cache=True):
        with torch.no_grad():
            for sl, kw in zip(parts, cached):
                gen_sde.denoise_step(x[sl], 0.5, 250, v[sl], **(kw if use_cache else {k: t[sl] for k, t in kwargs.items()}))

    t_sample, all_sample = timed(sample_step, device, 2, steps)
    t_uncached = timed(lambda: sample_step(False), device, 1, steps)[0] if cache else t_sample
    t_bf16 = float("nan")
    if bf16_sampling:  # as `ddo reconstruct --bf16`, timed in the same process right after fp32
        set_inference_dtype(net, torch.bfloat16)
        t_bf16 = timed(sample_step, device, 2, steps)[0]
        set_inference_dtype(net, None)
    return {"train_img_per_s": batch / t_train, "sample_img_steps_per_s": batch / t_sample,
            "sample_img_steps_per_s_bf16": batch / t_bf16,
            "sample_img_steps_per_s_uncached": batch / t_uncached,
            "train_step_s_all": all_train, "sample_step_s_all": all_sample,
            "model_gflops_per_img": flops / 1e9, "parameters": count_parameters(net)}


def sample_rows_only(config, host, device, a) -> int:
    """Sampling throughput for several rows-per-call settings, in fp32 and (``--bf16-sampling``) bf16 for
    each, measured in this process in the order given; with ``--baseline TREE`` also the fp32 figures of
    that tree's code (an earlier checkout of this package), measured by its own copy of this script in a
    child process right after, and the ratios."""
    rows = {}
    for n in [int(r) for r in a.sample_rows.split(",")]:
        r = measure(config, host, device, a.batch_size, a.steps, micro_batch=n, train=False,
                    bf16_sampling=a.bf16_sampling)
        rows[n] = {"sample_img_steps_per_s": r["sample_img_steps_per_s"], "sample_step_s_all": r["sample_step_s_all"]}
        line = f"{n} rows per call: fp32 {r['sample_img_steps_per_s']:.1f}"
        if a.bf16_sampling:
            rows[n]["sample_img_steps_per_s_bf16"] = r["sample_img_steps_per_s_bf16"]
            line += f", bf16 {r['sample_img_steps_per_s_bf16']:.1f}"
        print(line + " image-steps/s", flush=True)
    out = {"machine": platform.processor() or platform.machine(), "device": str(device),
           "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "preset": a.preset,
           "conditioning": a.conditioning, "batch_size": a.batch_size, "steps": a.steps, "order": a.sample_rows,
           "rows": rows}
    if a.baseline:
        out["baseline"] = _baseline_rows(a)
        out["baseline_commit"] = _commit_of(a.baseline)
        best_base = max(v["sample_img_steps_per_s"] for v in out["baseline"]["rows"].values())
        best = {"fp32": max(v["sample_img_steps_per_s"] for v in rows.values())}
        if a.bf16_sampling:
            best["bf16"] = max(v["sample_img_steps_per_s_bf16"] for v in rows.values())
        out["best"] = {**best, "baseline_fp32": best_base, **{f"{k}_over_baseline": v / best_base for k, v in best.items()}}
        print("| rows per call | baseline fp32 | fp32 | bf16 |\n|---|---|---|---|")
        for n, v in rows.items():
            base = out["baseline"]["rows"].get(str(n), {}).get("sample_img_steps_per_s", float("nan"))
            print(f"| {n} | {base:.1f} | {v['sample_img_steps_per_s']:.1f} | {v.get('sample_img_steps_per_s_bf16', float('nan')):.1f} |")
        print("best of each: " + ", ".join(f"{k} {v:.2f}" for k, v in out["best"].items()))
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    return 0


def _commit_of(tree: str) -> str | None:
    """The commit checked out in ``tree`` (recorded instead of the tree's path), or ``None``."""
    import subprocess

    r = subprocess.run(["git", "-C", tree, "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or None


def _baseline_rows(a) -> dict:
    """``--sample-rows`` of the tree ``a.baseline`` in fp32, run by that tree's own benchmarks/throughput.py
    with that tree first on the import path."""
    import os
    import subprocess
    import tempfile

    script = os.path.join(a.baseline, "benchmarks", "throughput.py")
    if not os.path.exists(script):
        raise SystemExit(f"--baseline {a.baseline}: no benchmarks/throughput.py there; pass a checkout of this package")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "baseline.json")
        env = {**os.environ, "PYTHONPATH": os.path.abspath(a.baseline)}
        cmd = [sys.executable, script, "--preset", a.preset, "--conditioning", a.conditioning, "--batch-size",
               str(a.batch_size), "--steps", str(a.steps), "--device", a.device, "--sample-rows", a.sample_rows,
               "--json", path]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        with open(path) as f:
            return json.load(f)


def _child_with_default_malloc(a) -> dict:
    """The same measurement (no comparisons, no scaling) in a child process with malloc left alone."""
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "child.json")
        cmd = [sys.executable, __file__, "--preset", a.preset, "--conditioning", a.conditioning, "--batch-size",
               str(a.batch_size), "--steps", str(a.steps), "--device", a.device, "--malloc", "default", "--json", path]
        cmd += ["--micro-batch", str(a.micro_batch)] if a.micro_batch is not None else []
        cmd += ["--bf16"] if a.bf16 else []
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
            child = json.load(f)
    keys = ("train_img_per_s", "sample_img_steps_per_s", "peak_rss_mb", "gemm_gflops", "train_step_s_all",
            "sample_step_s_all", "malloc_tuned")
    return {k: child[k] for k in keys}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="seed")
    p.add_argument("--conditioning", default="sparse-encoder", help="the spec's encoder wrapper by default")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported) after 2 warm-up steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast of the FNO trunk, as `ddo train --bf16`")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (compile time is in the warm-up)")
    p.add_argument("--micro-batch", type=int, help="train and sample the batch in parts of this size (training "
                   "accumulates the same gradient); default 32 on CPU, where larger calls of the seed model "
                   "allocate above glibc's mmap threshold; none on GPU")
    p.add_argument("--compare", action="store_true", help="also time the whole batch at once (no micro-batches), "
                   "in the same process")
    p.add_argument("--resolutions", default="", help="e.g. 32,64,128: time per image at each")
    p.add_argument("--sample-rows", default="", help="e.g. 16,32,64,128: only time sampling, with this many rows "
                   "per network call, in this order, in this (fresh) process (fp32; with --bf16-sampling also bf16)")
    p.add_argument("--baseline", metavar="TREE", help="with --sample-rows: also time the same sampling with the code of "
                   "TREE (a checkout of an earlier commit of this package) in a child process, and report the ratios")
    p.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                   help="glibc malloc as `ddo` commands set it (tuned: no mmap of large blocks, no trimming; "
                   "ddo/allocator.py) or left alone")
    p.add_argument("--compare-malloc", action="store_true", help="also measure the same configuration with "
                   "--malloc default, in a child process started by this one (malloc settings are per process)")
    p.add_argument("--bf16-sampling", action="store_true",
                   help="also time the sampling step with the network in bf16 (`ddo reconstruct --bf16`)")
    p.add_argument("--json", default="benchmarks/results/throughput.json")
    a = p.parse_args()
    malloc_tuned = tune_malloc({"DDO_MALLOC": a.malloc})
    device = torch.device(a.device)
    host = load_host()
    config = resolve({"conditioning": a.conditioning}, a.preset, host)
    if a.sample_rows:
        return sample_rows_only(config, host, device, a)
    gemm = gemm_gflops(device)
    mb = a.micro_batch if a.micro_batch is not None else (32 if device.type == "cpu" and a.batch_size > 32 else None)
    r = measure(config, host, device, a.batch_size, a.steps, a.bf16, micro_batch=mb, compile=a.compile,
                bf16_sampling=a.bf16_sampling)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before any whole-batch variant
    r["micro_batch"] = mb
    if a.compare:
        comp = {}
        rc = measure(config, host, device, a.batch_size, a.steps, a.bf16)
        comp["whole_batch"] = {k: rc[k] for k in ("train_img_per_s", "sample_img_steps_per_s", "train_step_s_all",
                                                  "sample_step_s_all")}
        comp["whole_batch"]["peak_rss_mb_so_far"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        r["comparison"] = comp
    train_gflops = 3 * r["model_gflops_per_img"] * r["train_img_per_s"]
    out = {
        "machine": platform.processor() or platform.machine(), "device": str(device),
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "preset": a.preset,
        "conditioning": a.conditioning, "batch_size": a.batch_size, "resolution": config["resolution"],
        "bf16": a.bf16, "compile": a.compile, "malloc_tuned": malloc_tuned, **r, "peak_rss_mb": peak_rss_mb, "gemm_gflops": gemm,
        "train_fraction_of_gemm": train_gflops / gemm,
        "note": "training timed through ddo.train.train on random images (data loader, --grad-accum parts of "
                "micro_batch images, gradient clipping, Adam, EMA); model FLOPs counted by torch's FlopCounterMode "
                "with autograd (matmuls, convolutions, the spectral mode mixing and the dense transforms of grids "
                "up to 16x16; FFTs of larger grids not counted); a training step is taken as 3x the forward "
                "FLOPs; sampling reuses the network's step-invariant context terms (cache_context, as "
                "reconstruct does), _uncached recomputes them every step; peak_rss_mb is measured before any whole-batch comparison",
    }
    if a.compare_malloc:
        out["malloc_default"] = _child_with_default_malloc(a)
    if a.resolutions:
        scaling = {}
        for res in [int(s) for s in a.resolutions.split(",")]:
            cfg = {**config, "resolution": res}
            rb = max(1, a.batch_size * 32 * 32 // (res * res))
            rr = measure(cfg, host, device, rb, 3, a.bf16, micro_batch=min(mb, rb) if mb else None)
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
    print(f"{a.preset} + {a.conditioning}, batch {a.batch_size} (micro-batch {mb}), {out['resolution']}x{out['resolution']}, "
          f"{device}, {out['cpu_threads']} threads, torch {torch.__version__}, {r['parameters']:,} parameters")
    print("| metric | value |\n|---|---|")
    for k in ("train_img_per_s", "sample_img_steps_per_s", "sample_img_steps_per_s_bf16", "sample_img_steps_per_s_uncached", "peak_rss_mb",
              "gemm_gflops", "model_gflops_per_img", "train_fraction_of_gemm"):
        print(f"| {k} | {out[k]:.3g} |")
    if "malloc_default" in out:
        d = out["malloc_default"]
        print(f"| malloc default (child process): train img/s, sample img-steps/s, peak RSS MB | "
              f"{d['train_img_per_s']:.3g}, {d['sample_img_steps_per_s']:.3g}, {d['peak_rss_mb']:.0f} |")
    for name, val in out.get("comparison", {}).items():
        print(f"| {name}: train img/s, sample img-steps/s | {val['train_img_per_s']:.3g}, "
              f"{val['sample_img_steps_per_s']:.3g} |")
    for k, val in out.get("scaling", {}).items():
        print(f"| {k}x{k} train ms/img, sample ms/img-step | {val['train_ms_per_img']:.2f}, "
              f"{val['sample_ms_per_img_step']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

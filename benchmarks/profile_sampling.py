"""Where a sampling step's time goes: the torch profiler's operators by self CPU time for
``denoise_step`` of one configuration (network calls of ``--rows`` rows, no autograd, context terms
cached as reconstruction does). Uses only interfaces that earlier versions of the package also have,
so the same script profiles an older tree: ``PYTHONPATH=<old tree> python benchmarks/profile_sampling.py``.

    python benchmarks/profile_sampling.py --preset seed --rows 32 [--bf16] --json profile.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import ddo
from ddo.allocator import tune_malloc
from ddo.config import resolve
from ddo.models import coordinate_grid
from ddo.plugins import load_host
from ddo.train import build_model, set_inference_dtype


def _code_version() -> str | None:
    """The commit of the tree the imported package comes from, ``+changes`` when its Python files differ
    from it (result files written by benchmarks do not count)."""
    import os
    import subprocess

    tree = os.path.dirname(os.path.dirname(os.path.abspath(ddo.__file__)))
    r = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run(["git", "-C", tree, "diff", "--quiet", "HEAD", "--", "*.py"]).returncode != 0
    return (r.stdout.strip() + ("+changes" if changed else "")) or None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="seed")
    p.add_argument("--conditioning", default="sparse-encoder")
    p.add_argument("--rows", type=int, default=32, help="rows per network call")
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after 3 warm-up steps)")
    p.add_argument("--bf16", action="store_true", help="the network in bf16 (`ddo reconstruct --bf16`)")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--json")
    a = p.parse_args()
    tune_malloc({})
    torch.manual_seed(0)
    host = load_host()
    config = resolve({"conditioning": a.conditioning}, a.preset, host)
    gen_sde, wrapper = build_model(config, host)
    net = gen_sde.network.eval()
    res, c = config["resolution"], config["channels"]
    x = torch.rand(a.rows, c, res, res) * 2 - 1
    v = coordinate_grid(a.rows, res, res)
    mask = (torch.rand(a.rows, 1, res, res) < 0.1).float()
    # context_dense (an interpolation, for the wrappers that refine one): any image of the shape times the same
    kwargs = {"context_image": mask * x, "observation_mask": mask, "context_dense": x.clone()}
    kwargs = {k: kwargs[k] for k in getattr(wrapper, "needs", ("context_image",))}
    with torch.no_grad():
        kwargs = net.cache_context(**kwargs) if hasattr(net, "cache_context") else kwargs
    if a.bf16:
        set_inference_dtype(net, torch.bfloat16)

    def step():
        with torch.no_grad():
            gen_sde.denoise_step(x, 0.5, 250, v, **kwargs)

    for _ in range(3):
        step()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    rows = [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / a.steps,
             "share": e.self_cpu_time_total / total, "calls_per_step": e.count / a.steps} for e in events[: a.top]]
    out = {"code": _code_version(), "machine": platform.processor() or platform.machine(),
           "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "preset": a.preset,
           "conditioning": a.conditioning, "rows": a.rows, "bf16": a.bf16,
           "step_ms_median": 1e3 * statistics.median(times), "img_steps_per_s": a.rows / statistics.median(times),
           "profiled_self_ms_per_step": total / 1e3 / a.steps, "top": rows}
    print(f"{a.preset} + {a.conditioning}, {a.rows} rows, {'bf16' if a.bf16 else 'fp32'}, {out['cpu_threads']} threads: "
          f"{out['step_ms_median']:.1f} ms per step ({out['img_steps_per_s']:.1f} image-steps/s; code {out['code']})")
    print("| op | ms per step | share | calls per step |\n|---|---|---|---|")
    for r in rows:
        print(f"| `{r['op']}` | {r['self_ms_per_step']:.1f} | {r['share']:.0%} | {r['calls_per_step']:.0f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

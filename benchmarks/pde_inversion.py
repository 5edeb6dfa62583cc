"""Darcy's inverse and joint tasks through the physics: the coefficient fitted to the 500 observed
pressures (and, joint, to its own 500 points) by adjoint gradients through the solver, beside the
co-kriging that `pde_tasks.py` scores as Darcy's route there.

    python benchmarks/pde_inversion.py                             # 50 test pairs, mask seeds 1 and 2
    python benchmarks/pde_inversion.py --limit 4 --evaluations 20  # a quick look

The observations are `pde_tasks.py`'s (500 random points per observed channel on the 128x128 grid,
drawn by each ``--mask-seed`` with the same mask dataset). ``inversion``:
:meth:`ddo_conditional.pde.Routes.inversion` (L-BFGS from the co-kriged coefficient, at most
``--evaluations`` solves, each one factorisation and two solves, with a total-variation penalty; the
pressure solved from the thresholded coefficient, its misfit at the observed pressures inpainted).
Scored like `pde_tasks.py`: the coefficient's error rate in percent (inverse), the mean of it and the
pressure's relative L2 (joint), each channel beside it. Writes ``--json`` (default
``benchmarks/results/pde_darcy_inversion.json``).
"""
import argparse
import json
import platform
import sys
import time

import torch
from ddo.api import atomic_write, save_grid, to_physical
from ddo.plugins import load_host
from ddo_conditional.datasets import FixedSparseMaskDataset
from ddo_conditional.inversion import INVERSION_EVALUATIONS
from ddo_conditional.masks import OBSERVED
from ddo_conditional.pde import Routes, physical_values, task_errors
from ddo_conditional.report import diverging

KIND, POINTS, RES, TASKS = "darcy-pair", 500, 128, ("inverse", "joint")
SCORED = {"inverse": (0,), "joint": (0, 1)}


def run_task(routes: Routes, base, task: str, seed: int, limit: int, evaluations: int) -> dict:
    masked = FixedSparseMaskDataset(base, context_ratio=POINTS / RES ** 2, query_ratio=0.0, seed=seed, observe=task)
    observed = OBSERVED[task]
    methods = {"kriging": lambda p, v: routes.kriging(p, v, observed),
               "inversion": lambda p, v: routes.inversion(p, v, observed, evaluations)}
    errors, seconds, first = {m: [] for m in methods}, dict.fromkeys(methods, 0.0), {}
    for i in range(min(limit, len(masked))):
        item = masked[i]
        n = int(item["context_count"])
        pixels, values = item["context_indices"][:n], physical_values(KIND, item["context_values"][:n].double())
        truth = to_physical(KIND, item["image"].double())
        for name, estimate in methods.items():
            t0 = time.perf_counter()
            est = estimate(pixels, values)
            seconds[name] += time.perf_counter() - t0
            errors[name].append(task_errors(KIND, est[None], truth[None])[0])
            if i == 0:
                first[name], first["truth"], first["pixels"] = est[0], truth[0], pixels
    out = {}
    for name, e in errors.items():
        per = 100 * torch.stack(e)  # (N, 2): the coefficient's error rate, the pressure's relative L2
        out[name] = {"error_percent": round(float(per[:, SCORED[task]].mean()), 3),
                     "channel_error_percent": {"a": round(float(per[:, 0].mean()), 3), "u": round(float(per[:, 1].mean()), 3)},
                     "seconds_per_pair": round(seconds[name] / len(e), 3),
                     "per_pair": [[round(float(x), 3) for x in row] for row in per]}
    return out, first


def figure_row(first: dict) -> torch.Tensor:
    """``(6, 3, H, W)``: observed points, the true coefficient, co-kriging, inversion (blue 3, red 12),
    then co-kriging's and inversion's wrong pixels in black."""
    truth = first["truth"]
    points = torch.ones_like(truth).flatten().index_fill_(0, first["pixels"].long(), 0.0).view_as(truth)
    gray = lambda x: x.float()[None, None].expand(1, 3, -1, -1)
    coef = lambda a: diverging((0.5 + 0.5 * (a - 7.5) / 4.5).float()[None, None])
    wrong = lambda a: gray((a == truth).double())
    return torch.cat([gray(points), coef(truth), coef(first["kriging"]), coef(first["inversion"]),
                      wrong(first["kriging"]), wrong(first["inversion"])])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mask-seed", default="1,2", help="seeds of the test observations, comma-separated")
    p.add_argument("--limit", type=int, default=50, help="test pairs (default: all 50)")
    p.add_argument("--evaluations", type=int, default=INVERSION_EVALUATIONS,
                   help=f"solves per fit (default {INVERSION_EVALUATIONS})")
    p.add_argument("--json", default="benchmarks/results/pde_darcy_inversion.json")
    p.add_argument("--figure", default="docs/pde_darcy_inversion.png")
    a = p.parse_args()
    host, t0 = load_host(), time.time()
    routes, base = Routes.for_dataset(KIND, RES), host.datasets.get(KIND)(split="test", resolution=RES)
    out = {"points_per_channel": POINTS, "resolution": RES, "limit": a.limit, "evaluations": a.evaluations,
           "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "seeds": {}}
    print(f"Darcy, {POINTS} points per observed channel at {RES}x{RES}; error (%): inverse, the coefficient's "
          f"error rate; joint, its mean with the pressure's relative L2; at most {a.evaluations} solves per fit\n"
          "| mask seed | task | co-kriging | inversion (a / u) | s / pair (inversion) |\n|---|---|---|---|---|")
    rows = []
    for seed in (int(s) for s in a.mask_seed.split(",")):
        for task in TASKS:
            r, first = run_task(routes, base, task, seed, a.limit, a.evaluations)
            out["seeds"].setdefault(str(seed), {})[task] = r
            rows.append(figure_row(first)) if len(rows) < len(TASKS) else None
            inv = r["inversion"]
            print(f"| {seed} | {task} | {r['kriging']['error_percent']:.2f} | {inv['error_percent']:.2f} "
                  f"({inv['channel_error_percent']['a']:.2f} / {inv['channel_error_percent']['u']:.2f}) | "
                  f"{inv['seconds_per_pair']:.1f} |", flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    atomic_write(a.json, lambda f: f.write((json.dumps(out, indent=2) + "\n").encode()))
    save_grid(torch.cat(rows), a.figure, nrow=6, value_range=(0.0, 1.0))
    print(f"wrote {a.json} and {a.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

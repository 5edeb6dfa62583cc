"""Darcy's three tasks through the solver, beside the classical estimates of `pde_tasks.py`: forward, the
posterior mean of the pressure given the coefficient's 500 points beside the route (kriged
coefficient, thresholded, solved); inverse and joint, the coefficient fitted to the 500 observed
pressures (joint: and to its own 500 points) by adjoint gradients through the solver beside co-kriging.

    python benchmarks/pde_darcy.py --tasks inverse,joint --json benchmarks/results/pde_darcy_inversion.json
    python benchmarks/pde_darcy.py --tasks forward --json benchmarks/results/pde_darcy_posterior.json
    python benchmarks/pde_darcy.py --limit 4 --evaluations 20 --samples 8   # a quick look

The observations are `pde_tasks.py`'s (500 random points per observed channel on the 128x128 grid,
drawn by each ``--mask-seed`` with the same mask dataset). ``posterior``:
:meth:`ddo_conditional.pde.routes.Routes.posterior` (``--samples`` Gibbs draws of the coefficient's latent
Gaussian field given the observed signs, each completed, thresholded and solved; the pressures
averaged). ``inversion``: :meth:`ddo_conditional.pde.routes.Routes.inversion` (L-BFGS from the co-kriged
coefficient, at most ``--evaluations`` solves, each one factorisation and two solves, with a
total-variation penalty; the pressure solved from the thresholded coefficient, its misfit at the
observed pressures inpainted). Scored like `pde_tasks.py`: the pressure's relative L2 (forward), the
coefficient's error rate (inverse), their mean (joint), in percent, each channel beside it. Writes
``--json`` and ``--figure`` (the first pair of the first seed, a row per task: observed points, the
true coefficient, both methods' coefficients, and their wrong pixels in black).
"""
import argparse
import json
import platform
import sys
import time

import torch
from ddo.api import atomic_write, save_grid
from ddo.plugins import load_host
from ddo_conditional.data.datasets import FixedSparseMaskDataset
from ddo_conditional.pde.datasets import to_physical
from ddo_conditional.pde.inversion import INVERSION_EVALUATIONS
from ddo_conditional.data.masks import OBSERVED
from ddo_conditional.pde.routes import Routes, physical_values, task_errors
from ddo_conditional.pde.posterior import POSTERIOR_SAMPLES
from ddo_conditional.io.report import diverging

KIND, POINTS, RES = "darcy-pair", 500, 128
SCORED = {"forward": (1,), "inverse": (0,), "joint": (0, 1)}


def task_methods(routes: Routes, task: str, a) -> dict:
    """The classical estimate and the estimate through the solver of ``task``, by name."""
    observed = OBSERVED[task]
    if task == "forward":
        return {"interpolation": lambda p, v: routes.route(p, v, observed),
                "posterior": lambda p, v: routes.posterior(p, v, a.samples)}
    return {"kriging": lambda p, v: routes.kriging(p, v, observed),
            "inversion": lambda p, v: routes.inversion(p, v, observed, a.evaluations)}


def run_task(routes: Routes, base, task: str, seed: int, a) -> tuple[dict, dict]:
    masked = FixedSparseMaskDataset(base, context_ratio=POINTS / RES ** 2, query_ratio=0.0, seed=seed, observe=task)
    methods, limit = task_methods(routes, task, a), a.limit
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
    first["methods"] = list(methods)
    out = {}
    for name, e in errors.items():
        per = 100 * torch.stack(e)  # (N, 2): the coefficient's error rate, the pressure's relative L2
        out[name] = {"error_percent": round(float(per[:, SCORED[task]].mean()), 3),
                     "channel_error_percent": {"a": round(float(per[:, 0].mean()), 3), "u": round(float(per[:, 1].mean()), 3)},
                     "seconds_per_pair": round(seconds[name] / len(e), 3),
                     "per_pair": [[round(float(x), 3) for x in row] for row in per]}
    return out, first


def figure_row(first: dict) -> torch.Tensor:
    """``(6, 3, H, W)``: observed points, the true coefficient, both methods' (blue 3, red 12), then
    their wrong pixels in black."""
    truth, (classical, physics) = first["truth"], first["methods"]
    points = torch.ones_like(truth).flatten().index_fill_(0, first["pixels"].long(), 0.0).view_as(truth)
    gray = lambda x: x.float()[None, None].expand(1, 3, -1, -1)
    coef = lambda a: diverging((0.5 + 0.5 * (a - 7.5) / 4.5).float()[None, None])
    wrong = lambda a: gray((a == truth).double())
    return torch.cat([gray(points), coef(truth), coef(first[classical]), coef(first[physics]),
                      wrong(first[classical]), wrong(first[physics])])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="forward,inverse,joint", help="comma-separated (default: all three)")
    p.add_argument("--mask-seed", default="1,2", help="seeds of the test observations, comma-separated")
    p.add_argument("--limit", type=int, default=50, help="test pairs (default: all 50)")
    p.add_argument("--evaluations", type=int, default=INVERSION_EVALUATIONS,
                   help=f"solves per fit, inverse and joint (default {INVERSION_EVALUATIONS})")
    p.add_argument("--samples", type=int, default=POSTERIOR_SAMPLES, help=f"posterior draws, forward (default {POSTERIOR_SAMPLES})")
    p.add_argument("--json", default="benchmarks/results/pde_darcy.json")
    p.add_argument("--figure", default="docs/pde_darcy.png")
    a = p.parse_args()
    tasks = a.tasks.split(",")
    if not set(tasks) <= set(SCORED):
        p.error(f"--tasks takes forward, inverse and joint, not {a.tasks}")
    host, t0 = load_host(), time.time()
    routes, base = Routes.for_dataset(KIND, RES), host.datasets.get(KIND)(split="test", resolution=RES)
    out = {"points_per_channel": POINTS, "resolution": RES, "limit": a.limit, "evaluations": a.evaluations,
           "samples": a.samples, "machine": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "seeds": {}}
    print(f"Darcy, {POINTS} points per observed channel at {RES}x{RES}; error (%): forward, the pressure's relative L2; "
          "inverse, the coefficient's error rate; joint, their mean\n"
          "| mask seed | task | method | error | a | u | s / pair |\n|---|---|---|---|---|---|---|")
    rows = []
    for seed in (int(s) for s in a.mask_seed.split(",")):
        for task in tasks:
            r, first = run_task(routes, base, task, seed, a)
            out["seeds"].setdefault(str(seed), {})[task] = r
            rows.append(figure_row(first)) if len(rows) < len(tasks) else None
            for name, m in r.items():
                print(f"| {seed} | {task} | {name} | {m['error_percent']:.2f} | {m['channel_error_percent']['a']:.2f} | "
                      f"{m['channel_error_percent']['u']:.2f} | {m['seconds_per_pair']:.1f} |", flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    atomic_write(a.json, lambda f: f.write((json.dumps(out, indent=2) + "\n").encode()))
    save_grid(torch.cat(rows), a.figure, nrow=6, value_range=(0.0, 1.0))
    print(f"wrote {a.json} and {a.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

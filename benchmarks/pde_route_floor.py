"""What the classical routes of the PDE tasks (`pde_tasks.py`) lose to their own physics on each grid:
the route's solver fed the *true* observed field instead of its estimate.

    python benchmarks/pde_route_floor.py                     # both PDEs, 64x64 and 128x128, 50 test pairs

Forward: the true input solved (Navier-Stokes to T = 1; Darcy's coefficient thresholded, then solved).
Navier-Stokes inverse: the true w1 integrated backward with its low modes. The pairs are solved at
128x128 and area-downsampled for 64x64, so on 128x128 the forward floor is the solver against itself
(zero), and on 64x64 it is the coarse grid's discretisation error: an error a model trained at 64x64
can learn to remove from the route there, and that the route at 128x128 does not have. Writes
``--json`` (default ``benchmarks/results/pde_route_floor.json``): ``{pde: {resolution: {task: mean
relative L2 in percent}}}``.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from ddo_conditional.pde.datasets import load_pairs, to_physical
from ddo_conditional.pde.routes import exact_input_errors

PDES = {"navier-stokes-pair": "navier-stokes", "darcy-pair": "darcy"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolutions", default="64,128")
    p.add_argument("--limit", type=int, default=50, help="test pairs (default: all 50)")
    p.add_argument("--json", default="benchmarks/results/pde_route_floor.json")
    a = p.parse_args()
    out = {"limit": a.limit, "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "what": "mean relative L2 (%) of the route's physics fed the true observed field"}
    t0 = time.time()
    print("| PDE | grid | task | exact-input route error (%) |\n|---|---|---|---|")
    for kind, name in PDES.items():
        for res in (int(r) for r in a.resolutions.split(",")):
            pairs = torch.from_numpy(to_physical(kind, load_pairs(kind, "test", res).images[:a.limit])).double()
            errors = {task: round(100 * float(e.mean()), 3) for task, e in exact_input_errors(kind, pairs).items()}
            out.setdefault(name, {})[str(res)] = errors
            for task, e in errors.items():
                print(f"| {name} | {res}x{res} | {task} | {e:.3f} |", flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

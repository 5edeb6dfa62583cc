"""How much the project's Navier-Stokes pairs depend on its time stepping: ``w1`` at ``T = 1`` from the
project's scheme (Crank-Nicolson viscosity, Heun's method for advection and forcing, ``dt = 1e-3``,
float32 stepping: how ``navier-stokes-pair`` is generated) against the published benchmark's scheme
(Crank-Nicolson viscosity, forward Euler for advection and forcing, ``dt = 1e-4``, float64), on the
same initial fields at 128x128.

    python benchmarks/ns_time_step.py [--fields 2] [--json benchmarks/results/ns_time_step.json]

Prints and writes the relative L2 difference of ``w1`` per field.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ddo.fields import NavierStokes2d, ns_forcing, periodic_grf, sample_generator
from ddo_conditional.pde.datasets import NS_PAIR_DEFAULTS, PAIR_SEED


class ForwardEuler(NavierStokes2d):
    """The same spatial discretisation, advection and forcing stepped by forward Euler."""

    def step(self, w_hat: torch.Tensor) -> torch.Tensor:
        return (self.explicit * w_hat + self.dt * self.advection(w_hat)) / self.implicit


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fields", type=int, default=2)
    p.add_argument("--json", default="benchmarks/results/ns_time_step.json")
    a = p.parse_args()
    n, visc, t_end = NS_PAIR_DEFAULTS["resolution"], NS_PAIR_DEFAULTS["visc"], NS_PAIR_DEFAULTS["t_end"]
    w0 = periodic_grf([sample_generator(PAIR_SEED, i) for i in range(a.fields)], n, NS_PAIR_DEFAULTS["alpha"],
                      NS_PAIR_DEFAULTS["tau"], NS_PAIR_DEFAULTS["sigma"])
    f = ns_forcing(n)
    t0 = time.time()
    ours = NavierStokes2d(n, visc, NS_PAIR_DEFAULTS["dt"], f, dtype=torch.float32).solve(w0, t_end).double()
    t_ours = time.time() - t0
    t0 = time.time()
    theirs = ForwardEuler(n, visc, 1e-4, f).solve(w0, t_end)
    t_theirs = time.time() - t0
    heun_fine = NavierStokes2d(n, visc, 1e-4, f).solve(w0, t_end)
    rel = lambda a_, b: ((a_ - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).tolist()  # noqa: E731
    out = {"fields": a.fields, "resolution": n, "t_end": t_end,
           "ours_vs_euler_dt1e-4": rel(ours, theirs), "ours_vs_heun_dt1e-4_float64": rel(ours, heun_fine),
           "heun_vs_euler_both_dt1e-4": rel(heun_fine, theirs),
           "seconds_per_field": {"ours": t_ours / a.fields, "euler_dt1e-4": t_theirs / a.fields},
           "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__}
    print(json.dumps(out, indent=2))
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

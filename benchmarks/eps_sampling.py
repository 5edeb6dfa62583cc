"""Sampling of eps networks under blurring: each way of bounding the x0 estimate, on the same networks.

    python benchmarks/eps_sampling.py                       # trains the three models into a temporary folder
    python benchmarks/eps_sampling.py --workdir runs/eps    # keeps them there (and reuses those already trained)

An eps network's x0 estimate ``(u - sigma_t eps) / alpha_t`` multiplies its error in high DCT modes by
``sigma_t / alpha_t``, which grows like ``exp(|k|^2 tau(t))`` under blurring. Part 1 trains the spec's
``sparse-encoder`` model with the defaults of ``ddo train`` (eps, dsm) twice, as the issue did
(``--ch 16 --modes 8``, 100 steps of batch 8; ``--preset cpu-small``, 600 steps of batch 32), and runs
``ddo reconstruct --dataset natural-patches --split test --limit N`` (the default sampler of an eps
model, 250 ancestral steps, 4 samples) once per ``--x0-clip`` value: ``none`` is the reference's sampler.
Part 2 asks what a bound costs a good network: an x0 model (``sparse-biharmonic``, the key's defaults,
``--preset cpu-small``, 600 steps) is read as an eps network, ``eps = (z - a x0) / s`` per mode (the
same function, so only the sampler's arithmetic differs), and sampled with each bound beside its own
x0 reading. Prints one table per part; writes ``benchmarks/results/eps_sampling.json``.
"""
import argparse
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from ddo import schedules
from ddo.cli import main as ddo
from ddo.diffusion import X0_CLIPS, DenoisingDiffusion
from ddo.models import coordinate_grid, count_parameters
from ddo.plugins import load_host
from ddo.sampling import DEFAULT_SAMPLING, sample
from ddo.train import load_model

COMMON = ["--dataset", "natural-patches", "--no-progress"]
MODELS = {  # name -> (ddo train flags, what the issue called it)
    "enc100": (["--conditioning", "sparse-encoder", "--ch", "16", "--modes", "8", "--iterations", "100",
                "--batch-size", "8"], "the spec's ConditionalDDOModel, eps / dsm, 100 steps of batch 8"),
    "enc600": (["--conditioning", "sparse-encoder", "--preset", "cpu-small", "--iterations", "600"],
               "the same, --preset cpu-small, 600 steps of batch 32"),
    "bih600": (["--conditioning", "sparse-biharmonic", "--preset", "cpu-small", "--iterations", "600"],
               "sparse-biharmonic with the key's defaults (x0 / x0-mse weighted relative), cpu-small, 600 steps"),
}
METHODS = ("ddo-samples-mean", "ddo-sample", "biharmonic", "nearest")


def train(workdir: Path, name: str) -> Path:
    run = workdir / name
    if not (run / "checkpoint.pt").exists():
        t0 = time.time()
        if run.exists():
            shutil.rmtree(run)
        assert ddo(["train", *COMMON, *MODELS[name][0], "--num-sample", "0", "--out", str(run)]) == 0
        print(f"trained {name} in {time.time() - t0:.0f} s", file=sys.stderr)
    return run / "checkpoint.pt"


def with_x0_clip(checkpoint: Path, value: str, path: Path) -> Path:
    """A copy of ``checkpoint`` whose configuration says ``x0_clip=value`` (as ``--x0-clip value`` writes it)."""
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["x0_clip"] = value
    torch.save(state, path)
    return path


def reconstruct_rows(checkpoint: Path, workdir: Path, limit: int, num_samples: int) -> dict:
    """``ddo reconstruct`` of the test split once per ``--x0-clip`` value: query PSNR / SSIM per method."""
    rows = {}
    for clip in X0_CLIPS:
        out = workdir / f"{checkpoint.parent.name}_{clip}"
        ck = with_x0_clip(checkpoint, clip, workdir / f"{checkpoint.parent.name}_{clip}.pt")
        t0 = time.time()
        rc = ddo(["reconstruct", "--checkpoint", str(ck), "--dataset", "natural-patches", "--split", "test",
                  "--limit", str(limit), "--num-samples", str(num_samples), "--out", str(out), "--no-progress"])
        row = {"exit_code": rc, "seconds": round(time.time() - t0, 1)}
        if rc == 0:
            methods = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: float(c))["methods"]
            row.update({m: {"psnr_query": methods[m]["psnr_query"], "ssim_query": methods[m]["ssim_query"]}
                        for m in METHODS if m in methods})
        rows[clip] = row
        print(checkpoint.parent.name, clip, json.dumps(row), file=sys.stderr, flush=True)
    return rows


class EpsReading(torch.nn.Module):
    """An x0 network read as an eps network: ``eps = (z - a_t x0) / s_t`` per DCT mode, ``x0`` computed as
    the x0 parameterisation does (from ``alpha(t) z``)."""

    def __init__(self, network, fd):
        super().__init__()
        self.network, self.fd = network, fd

    def forward(self, z, t, v=None, **kwargs):
        x0 = self.network(z * schedules.alpha_sigma(t.to(z.dtype))[0].reshape(-1, 1, 1, 1), t, v, **kwargs)
        log_a, log_s = self.fd.log_alpha_sigma(t, z.shape[-2:])
        return self.fd.from_modes((self.fd.to_modes(z) - log_a.exp() * self.fd.to_modes(x0)) / log_s.exp())


def _query_psnr(pred: torch.Tensor, truth: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB, range 1) of ``pred`` and ``truth`` in ``[-1, 1]`` on the query pixels ``(B, 1, H, W)``."""
    err = (((pred.clamp(-1, 1) - truth) / 2) ** 2 * query).flatten(1).sum(1) / (query.flatten(1).sum(1) * truth.shape[1])
    return -10 * torch.log10(err)


def _deblur(gen, z):
    """``z_0`` divided by ``alpha_0`` per mode, floored at 1e-3 (what ``ddo reconstruct`` does for eps models)."""
    fd = gen.forward_diffusion
    log_a, _ = fd.log_alpha_sigma(torch.zeros(z.shape[0]), z.shape[-2:])
    return fd.from_modes(fd.to_modes(z) / log_a.exp().clamp_min(1e-3))


def cost_rows(checkpoint: Path, limit: int, num_samples: int, seed: int) -> dict:
    """Part 2: the x0 model sampled as itself (``ddim`` 20 and ``denoise`` 250, its x0 bound ``none``) and
    read as an eps network with each bound (``denoise`` 250, the eps default); mean query PSNR of the
    mean of samples and of one sample, with the biharmonic inpainting the model refines."""
    host = load_host()
    gen, wrapper, cfg = load_model(checkpoint, host)
    res = cfg["resolution"]
    test = wrapper.wrap_dataset(host.datasets.get("natural-patches")(split="test", resolution=res), "test")
    n = min(limit, len(test))
    batch = next(iter(DataLoader(Subset(test, range(n)), batch_size=n)))
    x = batch["image"]
    query = torch.zeros(x.shape[0], res * res).scatter_(1, batch["query_indices"].long(), 1.0).reshape(-1, 1, res, res)
    kwargs = wrapper.model_kwargs(batch, "cpu")
    rows = {"biharmonic": {"samples_mean": float(_query_psnr(kwargs["context_dense"], x, query).mean())}}
    readings = [("x0 reading, ddim 20", gen, "ddim", 20, False), ("x0 reading, denoise 250", gen, "denoise", 250, False)]
    for clip in X0_CLIPS:
        eps = DenoisingDiffusion(gen.forward_diffusion, EpsReading(gen.network, gen.forward_diffusion), "eps",
                                 x0_clip=clip)
        readings.append((f"eps reading, --x0-clip {clip}", eps, *DEFAULT_SAMPLING["eps"], True))
    tiled = {k: v.repeat(num_samples, *([1] * (v.dim() - 1))) for k, v in kwargs.items()}
    shape = (x.shape[0] * num_samples,) + tuple(x.shape[1:])
    for name, g, sampler, steps, deblur in readings:
        t0 = time.time()
        z = sample(g, shape, num_steps=steps, sampler=host.samplers.get(sampler),
                   generator=torch.Generator().manual_seed(seed), progress=False, device="cpu",
                   v=coordinate_grid(shape[0], res, res, "cpu"), **tiled)
        z = (_deblur(g, z) if deblur else z).reshape((num_samples,) + tuple(x.shape))
        finite = bool(torch.isfinite(z).all())
        mean = z.mean(0) if finite else torch.zeros_like(x)
        rows[name] = {"finite": finite, "samples_mean": float(_query_psnr(mean, x, query).mean()) if finite else None,
                      "sample": float(_query_psnr(z[0], x, query).mean()) if finite else None,
                      "seconds": round(time.time() - t0, 1)}
        print(name, json.dumps(rows[name]), file=sys.stderr, flush=True)
    return {"rows": rows, "parameters": count_parameters(gen.network), "images": x.shape[0],
            "note": "x0 readings end at the sampler's a_0 x0 (blurred by sigma_blur_min); eps readings are deblurred "
                    "as ddo reconstruct does for eps models"}


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", help="where the models are trained (and reused when already there); default: a "
                   "temporary folder, removed at the end")
    p.add_argument("--limit", type=int, default=32, help="test crops (default 32)")
    p.add_argument("--num-samples", type=int, default=4, help="samples per crop in part 1 (default 4, as ddo reconstruct)")
    p.add_argument("--cost-samples", type=int, default=2, help="samples per crop in part 2 (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="benchmarks/results/eps_sampling.json")
    a = p.parse_args()
    tmp = None if a.workdir else tempfile.TemporaryDirectory()
    workdir = Path(a.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    checkpoints = {name: train(workdir, name) for name in MODELS}
    part1 = {name: reconstruct_rows(checkpoints[name], workdir, a.limit, a.num_samples) for name in ("enc100", "enc600")}
    part2 = cost_rows(checkpoints["bih600"], a.limit, a.cost_samples, a.seed)
    out = {"models": {n: {"train": ["ddo", "train", *COMMON, *MODELS[n][0]], "what": MODELS[n][1]} for n in MODELS},
           "reconstruct": {"command": ["ddo", "reconstruct", "--dataset", "natural-patches", "--split", "test",
                                       "--limit", str(a.limit), "--num-samples", str(a.num_samples)],
                           "sampler": "%s %d steps (the eps default)" % DEFAULT_SAMPLING["eps"], "rows": part1},
           "cost_on_an_x0_network": part2, "threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "seconds": round(time.time() - t0, 1)}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"Part 1: `ddo reconstruct` of {a.limit} test crops, {a.num_samples} samples x "
          f"{DEFAULT_SAMPLING['eps'][1]} {DEFAULT_SAMPLING['eps'][0]} steps; query PSNR (dB)\n")
    print("| model | --x0-clip | exit | ddo-samples-mean | ddo-sample | biharmonic | nearest |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in part1.items():
        for clip, r in rows.items():
            cells = [_fmt(r.get(m, {}).get("psnr_query")) for m in METHODS]
            print(f"| {name} | {clip} | {r['exit_code']} | " + " | ".join(cells) + " |")
    print(f"\nPart 2: the x0 model {MODELS['bih600'][1]}, {part2['images']} test crops x {a.cost_samples} samples; "
          "query PSNR (dB)\n")
    print("| sampling | mean of samples | one sample |")
    print("|---|---|---|")
    for name, r in part2["rows"].items():
        print(f"| {name} | {_fmt(r.get('samples_mean'))} | {_fmt(r.get('sample'))} |")
    print(f"\nwrote {a.json}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

"""One model per dataset, judged on a grid of sensor densities and resolutions against the best
classical method on identical masks.

    python benchmarks/density_resolution.py                                  # the three datasets, 10 min each
    python benchmarks/density_resolution.py --datasets darcy --minutes 2 --limit 8 --workdir runs/grid
    python benchmarks/density_resolution.py --model-flags "--conditioning sparse-biharmonic --refiner-width 32 \
        --residual-scale context-input" --train-flags "--context-ratio 0.1"   # the demo's model and density

Each dataset's model is trained with the demo's budget and flags (preset ``cpu-small``, ``--augment
photometric``, ``--minutes`` of training on two cores), the conditioning of ``--model-flags`` (default:
``sparse-setconv`` on the pixels' centres, the observations the baselines get) and ``--train-flags``
(default: a log-uniform context ratio in 1%-30%, at 32x32). Every cell ``(context ratio, resolution)`` reconstructs the first test images
under masks of ``--mask-seed`` (not the training seed) by the posterior-mean estimate (``ddo-mean``,
averaged over the square's rotations and flips where the dataset has them), beside biharmonic
inpainting, cubic interpolation and the thin-plate spline on the same masks: ``--limit`` images at
32x32 and as many pixels at larger sizes (``limit (32 / N)^2`` images, at least 4). The margin of a
cell is ``ddo-mean`` minus the best of the three, in query PSNR. (The sampler's one required sample is
taken with one step and not reported.)

Writes ``--json`` (default ``benchmarks/results/density_resolution.json``) and one heat map of the
margins per dataset in ``--figure`` (default ``docs/density_resolution.png``); prints a table per
dataset. A model already in ``--workdir`` is reused.
"""
import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ddo.api import UserError
from ddo.cli import main as ddo
from ddo.plugins import load_host
from ddo.train import load_model
from ddo.api import dihedral_invariant
from ddo_conditional.inference.evaluate import evaluate
from ddo_conditional.inference.reconstruct import Reconstructor, SamplingPlan

DATASETS = ("darcy", "natural-patches", "navier-stokes")  # the costliest field generation (128x128) last
CHANNELS = {"navier-stokes": 1, "darcy": 1, "natural-patches": 3}
DEMO_FLAGS = ["--preset", "cpu-small", "--augment", "photometric", "--num-sample", "0", "--no-progress"]
# the point-set model on the pixels' centres (the baselines' observations), trained over the density
# range at 32x32: its spline and set convolution are functions of the points, so one model serves any grid
MODEL_FLAGS = "--conditioning sparse-setconv --context-coords grid"
BIHARMONIC_FLAGS = "--conditioning sparse-biharmonic --refiner-width 32 --residual-scale context-input"  # the demo's
TRAIN_FLAGS = "--context-ratio 0.01:0.3"
BASELINES = ("biharmonic", "cubic", "thin-plate")


def train_argv(dataset: str, minutes: float, extra: list[str]) -> list[str]:
    return ["train", "--dataset", dataset, "--channels", str(CHANNELS[dataset]), *DEMO_FLAGS, "--minutes", str(minutes),
            *extra]


def train(workdir: Path, dataset: str, minutes: float, extra: list[str]) -> Path:
    run = workdir / dataset
    wanted = extra[extra.index("--conditioning") + 1] if "--conditioning" in extra else None
    if (run / "checkpoint.pt").exists() and wanted:
        stored = json.loads((run / "config.json").read_text()).get("conditioning")
        if stored != wanted:
            raise SystemExit(f"{run} holds a {stored} model, not {wanted}: give another --workdir")
    if not (run / "checkpoint.pt").exists():
        t0 = time.time()
        argv = [*train_argv(dataset, minutes, extra), "--out", str(run)]
        print("ddo " + shlex.join(argv), file=sys.stderr, flush=True)
        if ddo(argv) != 0:
            raise SystemExit(f"training {dataset} failed")
        print(f"trained {dataset} in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return run / "checkpoint.pt"


def images_at(limit: int, res: int) -> int:
    """Test images of a cell at ``res``: ``limit`` at 32x32, the same number of pixels above, at least 4."""
    return max(4, limit * 32 * 32 // (res * res)) if res > 32 else limit


def cell(host, gen, wrapper, dataset: str, ratio: float, res: int, a) -> dict | None:
    """One grid cell: query PSNR and relative L2 of ``ddo-mean`` and the baselines (``None``: the
    dataset has no test split at ``res``)."""
    try:
        test = host.datasets.get(dataset)(split="test", resolution=res)
    except UserError as e:  # a resolution the dataset cannot give
        print(f"{dataset} @ {res}: skipped ({e})", file=sys.stderr, flush=True)
        return None
    masks = wrapper.mask_dataset(test, context_ratio=ratio, seed=a.mask_seed)
    plan = SamplingPlan(samples=1, steps=1, sampler=host.samplers.get("ddim"), sampler_name="ddim",
                        symmetrize=dihedral_invariant(test))
    t0 = time.time()
    limit = images_at(a.limit, res)
    ev = evaluate(Reconstructor(gen, plan), wrapper, masks, limit=limit, baselines=BASELINES)
    keep = ("psnr_query", "ssim_query", "rel_l2_query")
    methods = {m: {k: v[k] for k in keep if k in v} for m, v in ev.methods.items() if m in ("ddo-mean",) + BASELINES}
    best = max(BASELINES, key=lambda m: methods[m]["psnr_query"])
    out = {"methods": methods, "best_classical": best, "images": min(limit, len(test)),
           "context_points": int(ratio * res * res),  # floor, as the masks count
           "margin_db": methods["ddo-mean"]["psnr_query"] - methods[best]["psnr_query"],
           "seconds": round(time.time() - t0, 1), "model_seconds": round(ev.seconds.get("model_s", 0.0), 1)}
    print(f"{dataset} {ratio:.0%} @ {res}: ddo-mean {methods['ddo-mean']['psnr_query']:.2f} dB, {best} "
          f"{methods[best]['psnr_query']:.2f} ({out['margin_db']:+.2f}), {out['seconds']} s", file=sys.stderr,
          flush=True)
    return out


def heat_maps(results: dict, ratios, resolutions, path: Path) -> None:
    """One panel per dataset: rows the context ratios, columns the resolutions, each cell the margin
    in dB over the best classical method (green ahead, red behind; grey where the dataset has no cell)."""
    cw, ch, left, top, gap = 92, 34, 64, 44, 24
    names = list(results)
    width = max(480, len(names) * (left + cw * len(resolutions)) + (len(names) - 1) * gap + 8)
    height = top + ch * len(ratios) + 30
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    for n, name in enumerate(names):
        x0 = n * (left + cw * len(resolutions) + gap)
        d.text((x0 + left, 6), f"{name}: dB over best classical", fill="black")
        for j, res in enumerate(resolutions):
            d.text((x0 + left + j * cw + cw // 2 - 12, top - 16), f"{res}x{res}", fill="black")
        for i, ratio in enumerate(ratios):
            d.text((x0 + 6, top + i * ch + ch // 2 - 6), f"{ratio:.0%}", fill="black")
            for j, res in enumerate(resolutions):
                c = results[name]["cells"].get(f"{ratio}@{res}")
                box = (x0 + left + j * cw, top + i * ch, x0 + left + (j + 1) * cw - 2, top + (i + 1) * ch - 2)
                if c is None:
                    d.rectangle(box, fill=(220, 220, 220))
                    continue
                m = c["margin_db"]
                s = min(1.0, abs(m) / 10.0) ** 0.5  # saturates at 10 dB
                fill = (int(255 * (1 - s)), 255, int(255 * (1 - s))) if m >= 0 else (255, int(255 * (1 - s)), int(255 * (1 - s)))
                d.rectangle(box, fill=fill)
                d.text((box[0] + 24, box[1] + ch // 2 - 6), f"{m:+.2f}", fill="black")
    d.text((8, height - 20), "cells: ddo-mean minus max(biharmonic, cubic, thin-plate), query PSNR, same masks",
           fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--minutes", type=float, default=10.0, help="training per model (the demo's budget: 10)")
    p.add_argument("--model-flags", default=MODEL_FLAGS, help=f"the conditioning and its options (default "
                   f"{MODEL_FLAGS!r}; the demo's model: {BIHARMONIC_FLAGS!r})")
    p.add_argument("--train-flags", default=TRAIN_FLAGS, help=f"added to the demo's training flags (default "
                   f"{TRAIN_FLAGS!r})")
    p.add_argument("--ratios", default="0.01,0.03,0.1,0.3")
    p.add_argument("--resolutions", default="32,64,128")
    p.add_argument("--limit", type=int, default=32, help="test images per cell at 32x32 (default 32; as many "
                   "pixels at larger sizes)")
    p.add_argument("--mask-seed", type=int, default=1)
    p.add_argument("--workdir", default="runs/density_resolution")
    p.add_argument("--json", default="benchmarks/results/density_resolution.json")
    p.add_argument("--figure", default="docs/density_resolution.png")
    a = p.parse_args()
    ratios = [float(r) for r in a.ratios.split(",")]
    resolutions = [int(r) for r in a.resolutions.split(",")]
    host, results, t_start = load_host(), {}, time.time()

    def save() -> None:  # after every cell, so that a long run keeps what it measured
        out = {"datasets": results, "ratios": ratios, "resolutions": resolutions, "limit": a.limit,
               "images_per_cell": {r: images_at(a.limit, r) for r in resolutions}, "mask_seed": a.mask_seed,
               "baselines": list(BASELINES), "minutes": a.minutes, "machine": platform.processor() or platform.machine(),
               "threads": torch.get_num_threads(), "torch": torch.__version__, "seconds": round(time.time() - t_start, 1)}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
        heat_maps(results, ratios, resolutions, Path(a.figure))

    for dataset in a.datasets.split(","):
        t0 = time.time()
        reused = (Path(a.workdir) / dataset / "checkpoint.pt").exists()
        checkpoint = train(Path(a.workdir), dataset, a.minutes, shlex.split(a.model_flags) + shlex.split(a.train_flags))
        train_s = time.time() - t0
        gen, wrapper, cfg = load_model(checkpoint, host)
        steps = int(torch.load(checkpoint, weights_only=True)["step"])
        cells = {}
        results[dataset] = {"train": {"command": None if reused else ["ddo", *train_argv(dataset, a.minutes,
                                                                                          shlex.split(a.model_flags) + shlex.split(a.train_flags))],
                                      "reused": reused, "steps": steps, "minutes": cfg.get("minutes"),
                                      "seconds": None if reused else round(train_s, 1),
                                      "context_ratio": cfg.get("context_ratio"),
                                      "resolutions": cfg.get("resolutions") or [cfg["resolution"]]},
                            "cells": cells, "worst_margin_db": None}
        for res in resolutions:
            for ratio in ratios:
                c = cell(host, gen, wrapper, dataset, ratio, res, a)
                if c is not None:
                    cells[f"{ratio}@{res}"] = c
                    results[dataset]["worst_margin_db"] = min(x["margin_db"] for x in cells.values())
                    save()
        print(f"\n{dataset}: margin of ddo-mean over the best classical method (dB, query PSNR), {steps} training "
              f"steps, test images per cell " + ", ".join(f"{images_at(a.limit, r)} at {r}" for r in resolutions)
              + f", mask seed {a.mask_seed}\n")
        print("| context | " + " | ".join(f"{r}x{r}" for r in resolutions) + " |")
        print("|---" * (len(resolutions) + 1) + "|")
        for ratio in ratios:
            row = [cells.get(f"{ratio}@{r}") for r in resolutions]
            print(f"| {ratio:.0%} | " + " | ".join("-" if c is None else
                                                  f"{c['margin_db']:+.2f} ({c['methods']['ddo-mean']['psnr_query']:.2f} vs "
                                                  f"{c['best_classical']} {c['methods'][c['best_classical']]['psnr_query']:.2f})"
                                                  for c in row) + " |")
        sys.stdout.flush()
    print(f"\nwrote {a.json} and {a.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

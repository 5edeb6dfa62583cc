"""Observation guidance of an unconditional model beside the trained conditional model, the classical
methods and kriging, on the same masks of the same test images.

    python benchmarks/guidance.py                                   # navier-stokes, darcy, natural-patches
    python benchmarks/guidance.py --datasets navier-stokes --minutes 2 --limit 8 --workdir runs/g

Per dataset (10% context, 32x32):

1. an unconditional ``x0`` model trained for ``--minutes`` with the demo's preset (``cpu-small``, loss
   ``x0-mse``), and the demo's conditional model (``ddo demo --minutes``, ``sparse-biharmonic``); a run
   already in ``--workdir`` is reused;
2. each guidance method's scale and step count chosen on the validation split (``--val-limit`` images,
   2 samples, masks of ``--mask-seed``): ``dps`` at scales 0.3 / 1 / 3, ``projection`` at 0.5 / 1, each at
   20 and 100 DDIM steps, by the samples' mean query PSNR;
3. on the test split (``--limit`` images, ``--samples`` samples, the same mask seed, which is not the
   training one): the unconditional model with each method, the conditional model alone and with each
   method at the unconditional model's chosen settings, and biharmonic, cubic, thin-plate and kriging
   from the same runs. Each row: query PSNR of the model's mean (the samples' mean for guided rows, which
   have no one-call estimate), CRPS and 1 / 2-std coverage of the samples, seconds per image.

Per field pair of ``--pdes`` (default ``darcy-pair``; a probe, not the published grid): an unconditional
``x0`` model of the pair trained for ``--minutes`` at ``--pde-resolution`` (64), then ``ddo task
--guidance dps`` on each task (forward, inverse, joint) with 500 points per observed channel, mask seed 1,
the first ``--pde-limit`` test pairs, 2 samples, 8 reference draws: the tasks' errors beside the best
estimate the product ships, co-kriging and the route, CRPS and coverage beside the reference posterior.

Writes ``--json`` (default ``benchmarks/results/guidance.json``), a figure of the first test fields
(``--figure``, default ``docs/guidance.png``) and prints a table per dataset. Everything goes through
the ``ddo`` commands a user runs.
"""
import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ddo.api import save_grid
from ddo.cli import main as ddo
from ddo.plugins import load_host

DATASETS = ("navier-stokes", "darcy", "natural-patches")
CHANNELS = {"navier-stokes": 1, "darcy": 1, "natural-patches": 3}
UNCONDITIONAL = ["--preset", "cpu-small", "--parameterization", "x0", "--loss", "x0-mse", "--num-sample", "0",
                 "--no-progress"]
GRID = {"dps": (0.3, 1.0, 3.0), "projection": (0.5, 1.0)}
STEPS = (20, 100)
BASELINES = "biharmonic,cubic,thin-plate,kriging"
FIGURE_IMAGES = 6


def run(argv: list[str]) -> None:
    print("$ ddo " + shlex.join(argv), flush=True)
    code = ddo(argv)
    if code != 0:
        sys.exit(f"ddo {argv[0]} exited with {code}")


def models(workdir: Path, dataset: str, minutes: float) -> dict:
    """The unconditional and the demo's conditional checkpoint of ``dataset``, trained unless present."""
    uncond, demo = workdir / dataset / "uncond", workdir / dataset / "demo"
    if not (uncond / "checkpoint.pt").exists():
        run(["train", "--out", str(uncond), "--dataset", dataset, "--channels", str(CHANNELS[dataset]),
             "--minutes", str(minutes), *UNCONDITIONAL])
    if not (demo / "checkpoint.pt").exists():
        run(["demo", "--dataset", dataset, "--minutes", str(minutes), "--out", str(demo), "--limit", "1",
             "--no-progress"])
    return {"unconditional": uncond / "checkpoint.pt", "conditional": demo / "checkpoint.pt"}


REUSED = []  # the runs read back from --workdir instead of run by this invocation


def reconstruct(checkpoint: Path, dataset: str, out: Path, split: str, limit: int, samples: int, mask_seed: int,
                baselines: str, guidance: tuple | None = None) -> dict:
    """``ddo reconstruct`` of the first ``limit`` images of ``split``; its ``metrics.json``. ``guidance``:
    ``(key, scale, steps)``."""
    if (out / "metrics.json").exists():
        REUSED.append(str(out))
    else:
        argv = ["reconstruct", "--checkpoint", str(checkpoint), "--dataset", dataset, "--split", split,
                "--limit", str(limit), "--num-samples", str(samples), "--mask-seed", str(mask_seed),
                "--context-ratio", "0.1", "--baselines", baselines, "--out", str(out), "--no-progress"]
        if guidance is not None:
            key, scale, steps = guidance
            argv += ["--guidance", key, "--guidance-scale", str(scale), "--steps", str(steps)]
        run(argv)
    return json.loads((out / "metrics.json").read_text())


def choose(checkpoint: Path, dataset: str, work: Path, args) -> dict:
    """Per method, the ``(scale, steps)`` of the best samples' mean on the validation split."""
    chosen = {}
    for key, scales in GRID.items():
        scores = {}
        for scale in scales:
            for steps in STEPS:
                m = reconstruct(checkpoint, dataset, work / f"val-{key}-{scale:g}-{steps}", "val", args.val_limit, 2,
                                args.mask_seed, "biharmonic", (key, scale, steps))
                scores[(scale, steps)] = row(m)["psnr_query"]
        best = max(scores, key=scores.get)
        chosen[key] = {"scale": best[0], "steps": best[1],
                       "validation": {f"{s:g}@{n}": round(v, 3) for (s, n), v in scores.items()}}
    return chosen


def row(m: dict, name: str | None = None) -> dict:
    """A table row of ``metrics.json``: the classical method ``name``, or (``None``) the model: its
    reported mean, except for guided runs, whose estimate is the mean of their guided samples (a
    conditional model's one-call mean does not see the guidance)."""
    key = name or ("ddo-samples-mean" if m.get("guidance") else "ddo-mean")
    got = m["methods"][key]
    out = {"psnr_query": round(got["psnr_query"], 3)}
    for k in ("crps_query", "coverage_1std", "coverage_2std"):
        if k in got:
            out[k] = round(got[k], 5)
    if name is None:
        out["source"] = got.get("source", key)
        out["seconds_per_image"] = round(m["seconds"]["model_s"] / m["num_images"], 3)
    return out


def one_dataset(dataset: str, args) -> dict:
    work = args.workdir / dataset
    ckpt = models(args.workdir, dataset, args.minutes)
    chosen = choose(ckpt["unconditional"], dataset, work, args)
    test = {"split": "test", "limit": args.limit, "samples": args.samples, "mask_seed": args.mask_seed}
    rows, arrays = {}, {}
    for model, path in ckpt.items():
        runs = [(model, None)] if model == "conditional" else []
        runs += [(f"{model} + {key}", (key, c["scale"], c["steps"])) for key, c in chosen.items()]
        for name, guidance in runs:
            out = work / ("test-" + name.replace(" + ", "-"))
            m = reconstruct(path, dataset, out, "test", args.limit, args.samples, args.mask_seed, BASELINES, guidance)
            rows[name] = {**row(m), "steps": m["steps"], "sampler": m["sampler"]}
            arrays[name] = np.load(out / "mean.npy")[:FIGURE_IMAGES]  # ddo-mean's images
            classical = {k: row(m, k) for k in BASELINES.split(",")}
    # the figure: the conditional model's mean and the guided unconditional samples' means (a guided
    # conditional run's mean.npy is its one-call estimate, the conditional row's again)
    figure_rows = {name: arrays[name] for name in rows if not name.startswith("conditional +")}
    base = load_host().datasets.get(dataset)(split="test", resolution=32)
    figure_rows["truth"] = ((torch.stack([base[i]["image"] for i in range(FIGURE_IMAGES)]) + 1) / 2).numpy()
    return {"chosen_on_validation": chosen, "test": test, "rows": rows, "classical": classical,
            "train_steps": {k: _steps(p) for k, p in ckpt.items()}, "figure": figure_rows}


TASKS = ("forward", "inverse", "joint")
PDE_POINTS = 500


def one_pde(pde: str, args) -> dict:
    """The guided unconditional model of ``pde`` on each task, through ``ddo task``'s ``metrics.json``."""
    work = args.workdir / pde
    uncond = work / "uncond"
    if not (uncond / "checkpoint.pt").exists():
        run(["train", "--out", str(uncond), "--dataset", pde, "--channels", "2", "--resolution", str(args.pde_resolution),
             "--minutes", str(args.minutes), *UNCONDITIONAL])
    rows = {}
    for task in TASKS:
        out = work / f"{task}-dps"
        if (out / "metrics.json").exists():
            REUSED.append(str(out))
        else:
            run(["task", "--checkpoint", str(uncond / "checkpoint.pt"), "--task", task, "--resolution",
                 str(args.pde_resolution), "--points-per-channel", str(PDE_POINTS), "--limit", str(args.pde_limit),
                 "--num-samples", "2", "--guidance", "dps", "--reference-draws", "8", "--mask-seed", "1",
                 "--out", str(out), "--no-progress"])
        m = json.loads((out / "metrics.json").read_text())
        rows[task] = {"best_estimate": m["best_estimate"],
                      "error_percent": {k: round(v["error_percent"], 3) for k, v in m["methods"].items()},
                      "seconds_per_reconstruction": {k: round(v["seconds_per_reconstruction"], 3)
                                                     for k, v in m["methods"].items()},
                      "distributions": {k: {n: round(v[n], 6) for n in ("crps", "coverage_1std", "coverage_2std")}
                                        for k, v in m["distributions"].items()}}
    return {"resolution": args.pde_resolution, "points_per_channel": PDE_POINTS, "pairs": args.pde_limit,
            "mask_seed": 1, "samples": 2, "guidance": "dps", "train_steps": _steps(uncond / "checkpoint.pt"),
            "tasks": rows}


def pde_table(pde: str, result: dict) -> str:
    lines = [f"### {pde} ({result['resolution']}x{result['resolution']}, guided unconditional model)", "",
             "| task | ddo + dps (%) | best estimate (%) | co-kriging (%) | CRPS ddo / reference | s / pair ddo |",
             "|---|---|---|---|---|---|"]
    for task, r in result["tasks"].items():
        e, d = r["error_percent"], r["distributions"]
        lines.append(f"| {task} | {e['ddo']:.2f} | {r['best_estimate']['error_percent']:.2f} "
                     f"({r['best_estimate']['method']}) | {e['kriging']:.2f} | {d['ddo']['crps']:.4g} / "
                     f"{d['reference']['crps']:.4g} | {r['seconds_per_reconstruction']['ddo']:.2f} |")
    return "\n".join(lines)


def _steps(checkpoint: Path) -> int:
    lines = (checkpoint.parent / "metrics.jsonl").read_text().splitlines()
    return max(json.loads(ln)["step"] for ln in lines if ln.strip())


def table(dataset: str, result: dict) -> str:
    lines = [f"### {dataset}", "", "| method | query PSNR (dB) | CRPS | within 1 / 2 std | s / image | steps |",
             "|---|---|---|---|---|---|"]
    entries = list(result["rows"].items()) + list(result["classical"].items())
    for name, r in sorted(entries, key=lambda kv: -kv[1]["psnr_query"]):
        cov = f"{r['coverage_1std']:.0%} / {r['coverage_2std']:.0%}" if "coverage_1std" in r else "-"
        crps = f"{r['crps_query']:.4f}" if "crps_query" in r else "-"
        secs = f"{r['seconds_per_image']:.2f}" if "seconds_per_image" in r else "-"
        steps = f"{r['steps']} {r['sampler']}" if "steps" in r else "-"
        lines.append(f"| {name} | {r['psnr_query']:.2f} | {crps} | {cov} | {secs} | {steps} |")
    return "\n".join(lines)


def figure(results: dict, path: Path) -> None:
    """Rows: each model row's mean on the first test fields of each dataset (one-channel fields as grey)."""
    rows, labels = [], []
    for dataset, r in results.items():
        for name, arr in r.pop("figure").items():
            x = torch.from_numpy(arr).float()
            rows.append(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)
            labels.append(f"{dataset}: {name}")
    save_grid(torch.cat(rows), path, nrow=rows[0].shape[0], value_range=(0.0, 1.0), row_labels=labels)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--minutes", type=float, default=10.0, help="training budget of each model (the demo's)")
    p.add_argument("--workdir", type=Path, default=Path("runs/guidance"))
    p.add_argument("--limit", type=int, default=64, help="test images")
    p.add_argument("--val-limit", type=int, default=16, help="validation images for the choice of scale and steps")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--mask-seed", type=int, default=7, help="masks of the evaluation (the models train on seed 42)")
    p.add_argument("--pdes", default="darcy-pair", help="field pairs of the task probe, comma-separated ('' for none)")
    p.add_argument("--pde-resolution", type=int, default=64)
    p.add_argument("--pde-limit", type=int, default=16, help="test pairs per task of the probe")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/guidance.json"))
    p.add_argument("--figure", type=Path, default=Path("docs/guidance.png"))
    args = p.parse_args()
    t0 = time.time()
    results = {d: one_dataset(d, args) for d in args.datasets.split(",") if d}
    pdes = {p: one_pde(p, args) for p in args.pdes.split(",") if p}
    figure(results, args.figure)
    record = {"conditions": {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                             "torch": torch.__version__, "minutes_per_model": args.minutes, "context_ratio": 0.1,
                             "resolution": 32, "command": shlex.join(sys.argv), "seconds_this_invocation": round(time.time() - t0),
                             "runs_reused_from_workdir": len(REUSED)},
              "datasets": results, "pde_tasks": pdes}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    for d, r in results.items():
        print(table(d, r) + "\n")
    for p, r in pdes.items():
        print(pde_table(p, r) + "\n")
    print(f"wrote {args.json} and {args.figure}")


if __name__ == "__main__":
    main()

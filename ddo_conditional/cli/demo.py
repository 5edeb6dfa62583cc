"""``ddo demo``: train a conditional model for a few minutes, calibrate it on held-out images,
reconstruct the test split, and report against classical interpolation."""
from __future__ import annotations

import time
from pathlib import Path

from ddo.api import (CHECKPOINT, LR_SCHEDULES, PARAMETERIZATIONS, UserError, atomic_write, check_out_dir,
                     count_parameters, dihedral_invariant, inference_dtype, load_model, nonneg_int, positive_float,
                     positive_int, preset_value, resolve, resolve_device, sampling_choice, seed_int,
                     set_inference_dtype, train, validate)

from ..classical.baselines import BASELINES
from ..classical.gaussian_prior import PRIOR_IMAGES
from ..data.augment import augment_list, check_dihedral
from ..data.masks import ratio_range
from ..inference.calibration import SHRINKAGE_LIMIT
from ..inference.evaluate import evaluate
from ..inference.memory import ReconstructionSize, check_kriging, check_reconstruction
from ..inference.reconstruct import Reconstructor, SamplingPlan
from ..io.calibration_file import calibrate_and_save, load_calibration
from ..io.prior_file import fit_and_save_prior
from ..io.report import demo_report, metrics_record, table, write_outputs
from ..nn.refiners import RESIDUAL_SCALES
from ..options import INTERP_KEYS
from .flags import precision_name

PRECISIONS = ("auto", "bf16", "fp32")
DEMO_KEYS = ("dataset", "conditioning", "loss", "minutes", "parameterization", "refiner_width", "residual_scale",
             "lr_schedule", "augment", "seed")
DEMO_PRESET = "cpu-small"
SPLIT_BOUND = 1024  # images of a built-in dataset's test or validation split, at most (natural-patches: 252, 412)
INTERP_DEFAULTS = {"refiner_width": 32, "residual_scale": "context-input"}  # the demo's measured best for these keys


def add_demo_parser(parser, host=None) -> None:
    parser.add_argument("--minutes", type=positive_float, default=10.0, help="training budget (default 10)")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--dataset", default="natural-patches",
                        help="dataset key: trained on its train split, scored on its test split")
    parser.add_argument("--conditioning", default="sparse-biharmonic")
    parser.add_argument("--parameterization", choices=PARAMETERIZATIONS,
                        help="default: the conditioning key's (x0 for sparse-biharmonic, `ddo plugins` lists them)")
    parser.add_argument("--refiner-width", type=nonneg_int,
                        help=f"sparse-interp / sparse-biharmonic only; default {INTERP_DEFAULTS['refiner_width']}")
    parser.add_argument("--residual-scale", choices=RESIDUAL_SCALES,
                        help=f"sparse-interp / sparse-biharmonic only; default {INTERP_DEFAULTS['residual_scale']}")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant")
    parser.add_argument("--augment", type=augment_list, default="photometric",
                        help="none, dihedral, photometric (default; chosen on the validation split), or both: "
                        "dihedral,photometric")
    parser.add_argument("--loss", help="default: the conditioning key's (x0-mse weighted relative for sparse-biharmonic)")
    parser.add_argument("--num-samples", type=positive_int, default=4)
    parser.add_argument("--steps", type=positive_int, help="default: the best measured for the parameterisation")
    parser.add_argument("--sampler", help="default: the best measured for the parameterisation (ddim for x0/v, "
                        "denoise for eps)")
    parser.add_argument("--limit", type=positive_int, help="evaluate the first N test images only")
    parser.add_argument("--calibrate-spread", type=positive_int, default=64, metavar="N",
                        help="crops on which the spread calibration is fitted and stored with the model: of the "
                        "validation split (which also fits the shrinkage) or, without one, of the train split "
                        "(default 64; see `ddo calibrate`)")
    parser.add_argument("--calibrate-shrinkage", type=positive_int, default=SHRINKAGE_LIMIT, metavar="N",
                        help=f"validation crops on which the shrinkage of the model's correction is fitted (default "
                        f"{SHRINKAGE_LIMIT})")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="network precision of the calibration and evaluation: auto (default) is bf16 where it "
                        "is faster (a GPU with bf16; on a CPU with native bf16, a short timing of the network's kernels decides; "
                        "the same numbers within 0.002 dB), "
                        "fp32 elsewhere; bf16 or fp32 force one")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--device")
    parser.add_argument("--no-progress", action="store_true")


def _calibrate(reconstructor, wrapper, host, train_split, args) -> dict | None:
    """Fit the spread calibration (and, on a validation split, the shrinkage) and store it with the
    demo's checkpoint: on the dataset's validation split when it has one, else on training crops."""
    if args["num_samples"] < 2:
        return None
    val = _split_or_none(host, args["dataset"], "val")
    split, base = ("train", train_split) if val is None else ("val", val)
    checkpoint = Path(args["out"]) / CHECKPOINT
    calibrate_and_save(checkpoint, reconstructor, wrapper, base, f"{args['dataset']}/{split}", args["calibrate_spread"],
                       args["calibrate_shrinkage"])
    return load_calibration(checkpoint)


def _split_or_none(host, dataset: str, split: str):
    """The dataset's ``split`` at the demo's resolution, or ``None`` when it has no such split."""
    try:
        return host.datasets.get(dataset)(split=split, resolution=preset_value(DEMO_PRESET, "resolution"))
    except UserError:
        return None


def _checked_flags(args: dict, host, device):
    """The demo's configuration flags and its sampling choice ``(key, step, steps)``, every
    combination and the evaluation's memory checked before any data is read or anything printed."""
    flags = {k: args[k] for k in DEMO_KEYS}
    if args["conditioning"] in INTERP_KEYS:
        flags.update({k: v for k, v in INTERP_DEFAULTS.items() if flags[k] is None})
    config = resolve({**flags, "num_sample": 0}, DEMO_PRESET, host)  # 3 channels: the most any dataset has
    validate(config, host)
    sampling = sampling_choice(host, config, args["sampler"], args["steps"])
    kept = min(args["limit"] or SPLIT_BOUND, SPLIT_BOUND) + min(args["calibrate_spread"], SPLIT_BOUND)
    check_reconstruction(config, ReconstructionSize(config["resolution"], kept, args["num_samples"], SamplingPlan.rows), device,
                         "the demo's calibration and evaluation", flags=("num_samples",))
    # the kriging baseline beside the model: its prior of (at most) PRIOR_IMAGES training images and its solve
    check_kriging(ratio_range(config["context_ratio"])[1], 3, config["resolution"], PRIOR_IMAGES)  # on the CPU
    return flags, sampling


def run_demo(args: dict, host) -> int:
    out = check_out_dir(args["out"])
    device = resolve_device(args.get("device"))
    if (out / CHECKPOINT).exists():
        raise UserError(f"{out} already holds a run; remove it or pass another --out")
    # resolved before training: --precision bf16 on a CPU without bf16 is refused now, not after it
    dtype = inference_dtype({"auto": "auto", "bf16": True, "fp32": False}[args["precision"]], device,
                            fix="--precision bf16: {}; use --precision auto or fp32")
    flags, (key, step, steps) = _checked_flags(args, host, device)
    train_split = host.datasets.get(args["dataset"])(split="train", resolution=preset_value(DEMO_PRESET, "resolution"))
    check_dihedral(args["augment"], train_split)
    config = resolve({**flags, "num_sample": 0, "channels": int(train_split[0]["image"].shape[0])}, DEMO_PRESET, host)
    t0 = time.monotonic()
    # on stdout, like the rest of the report: stderr holds nothing but a refusal's one line
    print(f"ddo demo: training {args['conditioning']} on {args['dataset']} for {args['minutes']:g} minutes", flush=True)
    summary = train(config, host, out, device=device, progress=not args["no_progress"])
    train_s = time.monotonic() - t0
    denoiser, wrapper, config = load_model(out / CHECKPOINT, host, device)
    set_inference_dtype(denoiser.network, dtype)
    test = host.datasets.get(args["dataset"])(split="test", resolution=config["resolution"])
    plan = SamplingPlan(samples=args["num_samples"], steps=steps, sampler=step, sampler_name=key, seed=args["seed"],
                        precision=precision_name(denoiser.network), symmetrize=dihedral_invariant(test),
                        progress=not args["no_progress"])
    reconstructor = Reconstructor(denoiser, plan)
    spread = _calibrate(reconstructor, wrapper, host, train_split, args)
    prior = fit_and_save_prior(out / CHECKPOINT, train_split, config["resolution"], args["dataset"],
                               f"{args['dataset']}/train")
    ev = evaluate(reconstructor, wrapper, wrapper.wrap_dataset(test, "test"), spread=spread, limit=args.get("limit"),
                  baselines=BASELINES + ("kriging",), field_record=getattr(test, "field", None), prior=prior)
    record = metrics_record(ev, train_steps=summary["step"], train_seconds=round(train_s, 1),
                            parameters=count_parameters(denoiser.network), dataset=f"{args['dataset']}/test",
                            **{k: config.get(k) for k in DEMO_KEYS if k not in ("minutes", "seed", "dataset")})
    write_outputs(ev, record, out)
    atomic_write(out / "report.md", lambda f: f.write(demo_report(record).encode()))
    best = ev.best_baseline()
    margin = ev.methods["ddo-mean"]["psnr_query"] - ev.methods[best]["psnr_query"]
    print(table(record))
    print(f"ddo-mean ({ev.mean_source}) vs best classical baseline ({best}): {margin:+.2f} dB query PSNR")
    print(f"wrote {out / 'metrics.json'}, {out / 'reconstructions.png'} and {out / 'report.md'}")
    return 0


__all__ = ["add_demo_parser", "run_demo"]

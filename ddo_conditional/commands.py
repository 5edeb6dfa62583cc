"""``ddo reconstruct`` and ``ddo demo``: flag parsing and calls into the library, nothing more."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ddo.checkpoint import atomic_write
from ddo.cli import nonneg_int, positive_float, positive_int, resolve_device
from ddo.config import LR_SCHEDULES
from ddo.errors import UserError

from .conditioning import MASK_DEFAULTS, SparseConditioning
from .datasets import AUGMENTATIONS
from .masks import PATTERNS, MaskError
from .models import RESIDUAL_SCALES
from .precondition import PARAMETERIZATIONS


def add_train_arguments(group) -> None:
    group.add_argument("--context-ratio", type=float, help=f"context fraction (default {MASK_DEFAULTS['context_ratio']})")
    group.add_argument("--query-ratio", type=float, help=f"query fraction (default {MASK_DEFAULTS['query_ratio']})")
    group.add_argument("--mask-seed", type=int, help=f"seed of the fixed masks (default {MASK_DEFAULTS['mask_seed']})")
    group.add_argument("--mask-pattern", choices=PATTERNS, help="random (default), grid, block or lines")
    group.add_argument("--context-feature-dim", type=positive_int, help="sparse-encoder width (default 32)")
    group.add_argument("--parameterization", choices=PARAMETERIZATIONS,
                       help="what the conditional network predicts: eps (default), x0 or v")
    group.add_argument("--refiner-width", type=nonneg_int,
                       help="sparse-interp: width of a local 3x3 refiner beside the spectral trunk (0: none)")
    group.add_argument("--residual-scale", choices=RESIDUAL_SCALES,
                       help="sparse-interp: 'context' scales the network's output per image by the context's "
                       "leave-one-out interpolation error; 'context-input' also feeds the interpolation's detail "
                       "in those units (default none)")
    group.add_argument("--augment", choices=AUGMENTATIONS,
                       help="'dihedral': train on each image and its fixed context under a random rotation or "
                       "reflection of the square, moved together (default none)")


def add_reconstruct_parser(parser) -> None:
    parser.add_argument("--checkpoint", required=True)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of PNG/JPEG images to reconstruct")
    src.add_argument("--dataset", help="dataset key, e.g. natural-patches or cifar10")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-root")
    parser.add_argument("--resolution", type=positive_int, help="default: the training resolution")
    parser.add_argument("--limit", type=positive_int, help="evaluate the first N images only")
    parser.add_argument("--num-samples", type=positive_int, default=8)
    parser.add_argument("--steps", type=positive_int, default=250)
    parser.add_argument("--sampler", default="denoise")
    parser.add_argument("--data-consistency", action="store_true", help="re-impose observed pixels each step")
    parser.add_argument("--no-symmetrize-x0", action="store_true",
                        help="one call for ddo-x0 instead of the average over rotations and flips")
    parser.add_argument("--mask-seed", type=int, help="default: the training mask seed")
    parser.add_argument("--mask-pattern", choices=PATTERNS, help="default: the training pattern")
    parser.add_argument("--context-ratio", type=float)
    parser.add_argument("--query-ratio", type=float)
    parser.add_argument("--calibrate-spread", type=positive_int, metavar="N",
                        help="also report the calibration of the samples' std recalibrated as "
                        "sqrt((a std)^2 + (b r)^2 + c^2), r the context's leave-one-out interpolation error, a, b, c "
                        "fitted by maximum likelihood on the query pixels of N crops of the dataset's train split "
                        "(masks of the training mask seed + 1); needs --dataset")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--seed", type=nonneg_int, default=0)
    parser.add_argument("--device")
    parser.add_argument("--out", required=True, help="output folder (metrics.json, reconstructions.png)")
    parser.add_argument("--no-progress", action="store_true")


def _mask_dataset(wrapper, base, args):
    try:
        return wrapper.mask_dataset(base, context_ratio=args.get("context_ratio"), query_ratio=args.get("query_ratio"),
                                    seed=args.get("mask_seed"), pattern=args.get("mask_pattern"))
    except MaskError as e:
        raise UserError(str(e)) from None


def _fit_spread(gen_sde, wrapper, host, dataset_key: str, data_root, res: int, n: int, args: dict, device) -> dict:
    """The spread recalibration fitted on ``n`` training crops (:func:`fit_spread_on`), with its provenance."""
    from .evaluate import fit_spread_on

    if args["num_samples"] < 2:
        raise UserError("--calibrate-spread needs --num-samples 2 or more")
    base = host.datasets.get(dataset_key)(split="train", data_root=data_root, resolution=res)
    masked = _mask_dataset(wrapper, base, {**args, "mask_seed": wrapper.mask_seed + 1})
    fitted = fit_spread_on(gen_sde, wrapper, masked, num_samples=args["num_samples"], steps=args["steps"],
                           sampler=args["sampler"], limit=n, batch_size=args.get("batch_size", 32),
                           seed=args["seed"] + 1, data_consistency=bool(args.get("data_consistency")),
                           device=device, progress=not args["no_progress"], host=host)
    return {**fitted, "fitted_on": f"{dataset_key}/train", "fitted_images": min(n, len(masked)),
            "fitted_mask_seed": wrapper.mask_seed + 1, "fit": "Gaussian maximum likelihood on query entries"}


def _sampler_note(wrapper, sampler: str) -> None:
    """One line on stderr when the epsilon-form ``ddim`` is asked of an ``x0``/``v`` network."""
    if sampler == "ddim" and getattr(wrapper, "parameterization", "eps") in ("x0", "v"):
        print("note: `ddim` rebuilds the image from an epsilon under blurring, which multiplies rounding error "
              "in high modes by alpha_s/alpha_t (few steps at 32x32 and up can diverge); `--sampler ddim-x0` "
              "is the same map in x0 form, without it", file=sys.stderr)


def run_reconstruct(args: dict) -> int:
    from ddo.data import load_image_folder
    from ddo.train import load_model

    from .evaluate import evaluate, table, write_outputs

    host = args["_host"]
    host.samplers.get(args["sampler"])
    device = resolve_device(args.get("device"))
    gen_sde, wrapper, config = load_model(args["checkpoint"], host, device)
    if not isinstance(wrapper, SparseConditioning):
        raise UserError(f"{args['checkpoint']} is not a sparse-conditional model (conditioning "
                        f"{config.get('conditioning')!r}); train one with --conditioning sparse-lift")
    _sampler_note(wrapper, args["sampler"])
    res = args.get("resolution") or config["resolution"]
    if args.get("images"):
        base = load_image_folder(args["images"], res)
    else:
        base = host.datasets.get(args["dataset"])(split=args["split"], data_root=args.get("data_root"), resolution=res)
    dataset = _mask_dataset(wrapper, base, args)
    spread = None
    if args.get("calibrate_spread"):
        if not args.get("dataset"):
            raise UserError("--calibrate-spread fits on the train split of a --dataset; it cannot be used with --images")
        spread = _fit_spread(gen_sde, wrapper, host, args["dataset"], args.get("data_root"), res,
                             args["calibrate_spread"], args, device)
    result = evaluate(gen_sde, wrapper, dataset, num_samples=args["num_samples"], steps=args["steps"],
                      sampler=args["sampler"], batch_size=args["batch_size"], seed=args["seed"],
                      data_consistency=args["data_consistency"], limit=args.get("limit"), device=device,
                      progress=not args["no_progress"], host=host, symmetrize_x0=not args["no_symmetrize_x0"],
                      spread=spread)
    result["metrics"].update(checkpoint=str(args["checkpoint"]), resolution=res)
    write_outputs(result, args["out"])
    print(table(result["metrics"]))
    print(f"wrote {Path(args['out']) / 'metrics.json'} and reconstructions.png")
    return 0


def add_demo_parser(parser) -> None:
    parser.add_argument("--minutes", type=positive_float, default=10.0, help="training budget (default 10)")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--conditioning", default="sparse-biharmonic")
    parser.add_argument("--parameterization", choices=PARAMETERIZATIONS, default="x0")
    parser.add_argument("--refiner-width", type=nonneg_int, default=32)
    parser.add_argument("--residual-scale", choices=RESIDUAL_SCALES, default="context-input")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant")
    parser.add_argument("--augment", choices=AUGMENTATIONS, default="none")
    parser.add_argument("--loss", default="x0-mse-relative")
    parser.add_argument("--num-samples", type=positive_int, default=4)
    parser.add_argument("--steps", type=positive_int, default=20)
    parser.add_argument("--sampler", default="ddim-x0")
    parser.add_argument("--limit", type=positive_int, help="evaluate the first N test images only")
    parser.add_argument("--calibrate-spread", type=positive_int, default=64, metavar="N",
                        help="training crops on which the samples' std is rescaled (default 64; see reconstruct)")
    parser.add_argument("--seed", type=nonneg_int, default=0)
    parser.add_argument("--device")
    parser.add_argument("--no-progress", action="store_true")


def run_demo(args: dict) -> int:
    from ddo.config import resolve
    from ddo.train import CHECKPOINT, load_model, train

    from .evaluate import best_baseline, evaluate, table, write_outputs

    host = args["_host"]
    device = resolve_device(args.get("device"))
    out = Path(args["out"])
    for key, registry in (("conditioning", host.model_wrappers), ("loss", host.losses), ("sampler", host.samplers)):
        registry.get(args[key])
    if (out / CHECKPOINT).exists():
        raise UserError(f"{out} already holds a run; remove it or pass another --out")
    config = resolve({"conditioning": args["conditioning"], "loss": args["loss"], "minutes": args["minutes"],
                      "parameterization": args["parameterization"], "refiner_width": args["refiner_width"],
                      "residual_scale": args["residual_scale"], "lr_schedule": args["lr_schedule"],
                      "augment": args["augment"], "seed": args["seed"], "num_sample": 0}, "cpu-small")
    t0 = time.monotonic()
    print(f"ddo demo: training {args['conditioning']} on natural-patches for {args['minutes']:g} minutes", file=sys.stderr)
    summary = train(config, host, out, device=device, progress=not args["no_progress"])
    train_s = time.monotonic() - t0
    gen_sde, wrapper, config = load_model(out / CHECKPOINT, host, device)
    _sampler_note(wrapper, args["sampler"])
    test = host.datasets.get("natural-patches")(split="test", resolution=config["resolution"])
    spread = None
    if args["num_samples"] > 1:
        spread = _fit_spread(gen_sde, wrapper, host, "natural-patches", None, config["resolution"],
                             args["calibrate_spread"], args, device)
    result = evaluate(gen_sde, wrapper, wrapper.wrap_dataset(test, "test"), num_samples=args["num_samples"],
                      steps=args["steps"], sampler=args["sampler"], seed=args["seed"], limit=args.get("limit"),
                      device=device, progress=not args["no_progress"], host=host, spread=spread)
    from ddo.models import count_parameters

    m = result["metrics"]
    m.update(train_steps=summary["step"], train_seconds=round(train_s, 1), conditioning=args["conditioning"],
             loss=args["loss"], parameterization=args["parameterization"],
             residual_scale=args["residual_scale"], lr_schedule=args["lr_schedule"], augment=args["augment"],
             parameters=count_parameters(gen_sde.network), dataset="natural-patches/test")
    write_outputs(result, out)
    best = best_baseline(m["methods"])
    margin = m["methods"]["ddo-mean"]["psnr_query"] - m["methods"][best]["psnr_query"]
    source = m["methods"]["ddo-mean"]["source"]
    report = _report(m, table(m), best, margin, source)
    atomic_write(out / "report.md", lambda f: f.write(report.encode()))
    print(table(m))
    print(f"ddo-mean ({source}) vs best classical baseline ({best}): {margin:+.2f} dB query PSNR")
    print(f"wrote {out / 'metrics.json'}, {out / 'reconstructions.png'} and {out / 'report.md'}")
    return 0


def _report(m: dict, tbl: str, best: str, margin: float, source: str) -> str:
    cal = m.get("calibration", {})
    lines = [
        "# ddo demo: conditional sparse reconstruction on natural-patches (held-out photographs)", "",
        f"{m['num_images']} test images; {m['context_ratio']:.0%} context and {m['query_ratio']:.0%} query pixels "
        f"({m['mask_pattern']} masks, seed {m['mask_seed']}). Model: `{m['conditioning']}` wrapper, "
        f"{m['parameters']:,} parameters, `{m['parameterization']}` parameterisation, loss `{m['loss']}`, {m['train_steps']} steps in {m['train_seconds']:.0f} s. "
        f"Sampling: {m['num_samples']} samples x {m['steps']} steps of `{m['sampler']}`.", "",
        tbl, "",
        f"`ddo-mean` is the better of the mean of samples and the direct posterior-mean estimate (`ddo-x0`: the "
        f"network's x0 at t = 1{', averaged over the 8 rotations and flips of the context' if m.get('symmetrize_x0') else ''}): here "
        f"`{source}`. Its margin over the best classical baseline ({best}): {margin:+.2f} dB on query pixels.", "",
    ]
    if cal:
        lines += [f"Calibration of the sample spread on query pixels: {cal['within_1std']:.1%} within 1 std, "
                  f"{cal['within_2std']:.1%} within 2 std, Gaussian log-likelihood {cal['gaussian_loglik']:.3f} "
                  "per entry (a calibrated Gaussian would hold 68% and 95%)."]
        if "within_t95" in cal:
            lines += [f"With {m['num_samples']} samples: {cal['within_t95']:.1%} within the Student-t 95% predictive "
                      f"interval (95% if calibrated), {cal['within_range']:.1%} between the smallest and largest "
                      f"sample ({cal['within_range_expected']:.1%} if the truth were exchangeable with the samples)."]
        rc = m.get("calibration_rescaled")
        if rc:
            lines += [f"Recalibrated spread (sqrt(({rc['spread_scale']:.2f} std)^2 + ({rc.get('spread_roughness', 0):.2f} r)^2 "
                      f"+ {rc['spread_floor']:.4f}^2), r the leave-one-out interpolation error of the context, "
                      f"fitted by maximum likelihood on {rc['fitted_images']} training crops under other masks): "
                      f"{rc['within_1std']:.1%} within 1 std, {rc['within_2std']:.1%} within 2 std, Gaussian "
                      f"log-likelihood {rc['gaussian_loglik']:.3f} per entry on the test images."]
        lines += [""]
    lines += ["![reconstructions](reconstructions.png)", "",
              "Rows: context (grey = unobserved), two samples, posterior mean (ddo-x0 when the model "
              "has one, else the mean of samples), per-pixel std of samples, ground truth, biharmonic.", "", "Full numbers: `metrics.json`.", ""]
    return "\n".join(lines)


__all__ = ["add_train_arguments", "run_reconstruct", "run_demo"]

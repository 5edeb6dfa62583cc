"""``ddo reconstruct`` and ``ddo demo``: flag parsing and calls into the library, nothing more."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from ddo.arguments import BF16_INFERENCE_HELP, nonneg_int, positive_float, positive_int
from ddo.checkpoint import atomic_write
from ddo.commands import inference_dtype, resolve_device, sampling_choice
from ddo.config import DEFAULTS, LR_SCHEDULES, PRESETS, resolve
from ddo.data import load_image_folder
from ddo.diffusion import PARAMETERIZATIONS
from ddo.errors import UserError
from ddo.models import FNOUNet2d, count_parameters
from ddo.train import CHECKPOINT, load_model, set_inference_dtype, train

from .conditioning import PointConditioning, SparseConditioning
from .datasets import augment_list
from .scattered import run_points
from .shrinkage import MIN_GAIN_DB
from .calibration import load_calibration, save_calibration
from .evaluate import best_baseline, evaluate, fit_shrinkage_on, fit_spread_on, table, write_outputs
from .masks import PATTERNS, MaskError
from .models import RESIDUAL_SCALES

MASK_FLAGS = ("context_ratio", "query_ratio", "mask_seed", "mask_pattern")


def add_reconstruct_parser(parser) -> None:
    parser.add_argument("--checkpoint", required=True)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of PNG/JPEG images to reconstruct")
    src.add_argument("--dataset", help="dataset key, e.g. natural-patches or cifar10")
    src.add_argument("--points", metavar="CSV", help="observations at any coordinates: columns x, y (in [0, 1], or "
                     "pixels with --extent) and one value column per channel in [0, 1]; needs a point-set model "
                     "(sparse-setconv, sparse-attention); writes the mean, std and samples at --resolution")
    parser.add_argument("--extent", metavar="W,H", help="with --points: x and y are pixels of a W x H image")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-root")
    parser.add_argument("--download", action="store_true", help="fetch the --dataset into --data-root first (cifar10)")
    parser.add_argument("--resolution", type=positive_int, help="default: the training resolution")
    parser.add_argument("--limit", type=positive_int, help="evaluate the first N images only")
    parser.add_argument("--num-samples", type=positive_int, default=4)
    parser.add_argument("--steps", type=positive_int,
                        help="default: the best measured count for the model's parameterisation (README)")
    parser.add_argument("--sampler", help="default: the best measured sampler for the model's "
                        "parameterisation (README): ddim for x0/v models, denoise for eps models")
    parser.add_argument("--data-consistency", action="store_true", help="re-impose observed pixels each step")
    parser.add_argument("--no-symmetrize-x0", action="store_true",
                        help="one call for ddo-x0 instead of the average over rotations and flips (datasets "
                        "without those symmetries, such as navier-stokes, always use one call)")
    parser.add_argument("--mask-seed", type=nonneg_int, help="default: the checkpoint's mask seed")
    parser.add_argument("--mask-pattern", choices=PATTERNS, help="default: the checkpoint's pattern")
    parser.add_argument("--context-ratio", type=float, help="default: the checkpoint's context ratio")
    parser.add_argument("--query-ratio", type=float, help="default: the checkpoint's query ratio")
    parser.add_argument("--raw-spread", action="store_true",
                        help="report the samples' own std even when the checkpoint has a calibration (`ddo calibrate`)")
    _add_sampling_flags(parser)
    parser.add_argument("--out", required=True, help="output folder (metrics.json, reconstructions.png, *.npy)")


def _add_sampling_flags(parser) -> None:
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="images per network call (default 32; 64 is the fastest measured for the seed model, "
                        "README: Speed; it orders the random draws, so samples differ with it)")
    parser.add_argument("--bf16", action="store_true", help=BF16_INFERENCE_HELP)
    parser.add_argument("--seed", type=nonneg_int, default=0)
    parser.add_argument("--device")
    parser.add_argument("--no-progress", action="store_true")


SHRINKAGE_LIMIT = 512  # validation images the shrinkage is fitted on (one symmetrised x0 estimate each)


def add_calibrate_parser(parser) -> None:
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", help="dataset key; default: the checkpoint's training dataset")
    parser.add_argument("--data-root", help="default: the checkpoint's")
    parser.add_argument("--split", default="train", help="split to fit on (never the test split); default train. On a "
                        "split other than train (a validation split, images the model never saw) the shrinkage of "
                        "an x0 model's correction toward its interpolation is fitted too")
    parser.add_argument("--limit", type=positive_int, default=64, help="images to fit the spread on (default 64)")
    parser.add_argument("--shrinkage-limit", type=positive_int, default=SHRINKAGE_LIMIT,
                        help=f"images to fit the shrinkage on (default {SHRINKAGE_LIMIT})")
    parser.add_argument("--num-samples", type=positive_int, default=4)
    parser.add_argument("--steps", type=positive_int, help="default: as `ddo reconstruct`")
    parser.add_argument("--sampler", help="default: as `ddo reconstruct`")
    _add_sampling_flags(parser)


def _mask_dataset(wrapper, base, args):
    try:
        return wrapper.mask_dataset(base, context_ratio=args.get("context_ratio"), query_ratio=args.get("query_ratio"),
                                    seed=args.get("mask_seed"), pattern=args.get("mask_pattern"))
    except MaskError as e:
        raise UserError(str(e)) from None


def fit_calibration(gen_sde, wrapper, base, *, limit: int, num_samples: int, steps: int, sampler, seed: int,
                    batch_size: int, device, progress: bool, held_out: bool = False,
                    shrinkage_limit: int = SHRINKAGE_LIMIT) -> dict:
    """The spread recalibration fitted on the first ``limit`` images of ``base`` under masks of the
    model's mask seed + 1 (so not the masks it was trained or is scored on). ``held_out`` (``base``
    is a validation split, images the model never saw): also the shrinkage of its ``x0`` estimate
    toward the interpolation it refines (:mod:`~ddo_conditional.shrinkage`), for ``x0``/``v`` models
    whose kwargs hold that interpolation; on training images it would learn the model's over-fit."""
    if num_samples < 2:
        raise UserError("a spread calibration needs --num-samples 2 or more")
    masked = wrapper.mask_dataset(base, seed=wrapper.mask_seed + 1)
    fitted = fit_spread_on(gen_sde, wrapper, masked, num_samples=num_samples, steps=steps, sampler=sampler,
                           limit=limit, batch_size=batch_size, seed=seed + 1, device=device, progress=progress)
    record = {**fitted, "fitted_images": min(limit, len(masked)), "fitted_mask_seed": wrapper.mask_seed + 1,
              "fitted_samples": num_samples, "fitted_steps": steps,
              "fit": "Gaussian maximum likelihood on query entries"}
    if held_out and wrapper.dense_in_kwargs and gen_sde.parameterization in ("x0", "v"):
        record["shrinkage"] = fit_shrinkage_on(gen_sde, wrapper, masked, limit=shrinkage_limit, batch_size=batch_size,
                                               seed=seed + 1, device=device, progress=progress)
    return record


def run_calibrate(args: dict) -> int:
    host = args["_host"]
    device = resolve_device(args.get("device"))
    gen_sde, wrapper, config = _load_conditional(args, host, device)
    if args["split"] == "test":
        raise UserError("the test split is where calibration is checked; fit on --split train (or a validation split)")
    key, step, steps = sampling_choice(host, config, args.get("sampler"), args.get("steps"))
    dataset = args.get("dataset") or config["dataset"]
    data_root = args.get("data_root") or config.get("data_root")
    base = host.datasets.get(dataset)(split=args["split"], data_root=data_root, resolution=config["resolution"])
    fitted = fit_calibration(gen_sde, wrapper, base, limit=args["limit"], num_samples=args["num_samples"],
                             steps=steps, sampler=step, seed=args["seed"], batch_size=args["batch_size"],
                             device=device, progress=not args["no_progress"], held_out=args["split"] != "train",
                             shrinkage_limit=args["shrinkage_limit"])
    path = save_calibration(args["checkpoint"], fitted, {"fitted_on": f"{dataset}/{args['split']}",
                                                         "fitted_sampler": key})
    print(f"spread calibration: std' = sqrt(({fitted['spread_scale']:.3f} std)^2 + ({fitted['spread_roughness']:.3f} r)^2 "
          f"+ {fitted['spread_floor']:.4f}^2), fitted on {fitted['fitted_images']} images of {dataset}/{args['split']}; "
          f"wrote {path}")
    if "shrinkage" in fitted:
        print(f"shrinkage: {shrinkage_line(fitted['shrinkage'])}")
    return 0


def _precision(network: torch.nn.Module) -> str:
    """``"bf16"`` or ``"fp32"``: the inference dtype of the FNO-UNets inside ``network``."""
    dtype = next((m.inference_dtype for m in network.modules() if isinstance(m, FNOUNet2d)), None)
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def _load_conditional(args: dict, host, device):
    """``(gen_sde, wrapper, config)`` of ``--checkpoint``, refused unless it is a sparse-conditional model."""
    gen_sde, wrapper, config = load_model(args["checkpoint"], host, device)
    set_inference_dtype(gen_sde.network, inference_dtype(bool(args.get("bf16")), device))
    if not isinstance(wrapper, SparseConditioning):
        raise UserError(f"{args['checkpoint']} is not a sparse-conditional model (conditioning "
                        f"{config.get('conditioning')!r}); train one with --conditioning sparse-biharmonic")
    return gen_sde, wrapper, config


def _masks_used(dataset, args: dict) -> dict:
    """The masks of an evaluation and where each setting came from (the checkpoint or a flag)."""
    used = {"context_ratio": dataset.context_ratio, "query_ratio": dataset.query_ratio,
            "mask_seed": dataset.seed, "mask_pattern": dataset.pattern}
    return {**used, "from_flags": sorted(k for k in MASK_FLAGS if args.get(k) is not None)}


def run_reconstruct(args: dict) -> int:
    host = args["_host"]
    device = resolve_device(args.get("device"))
    gen_sde, wrapper, config = _load_conditional(args, host, device)
    key, step, args["steps"] = sampling_choice(host, config, args.get("sampler"), args.get("steps"))
    _check_point_flags(args, wrapper, config)
    if args.get("points"):
        return run_points(args, gen_sde, config, step, key, device)
    res = args.get("resolution") or config["resolution"]
    if args.get("images"):
        if args.get("download"):
            raise UserError("--download fetches a --dataset; it does not apply to --images")
        base = load_image_folder(args["images"], res)
    else:
        base = host.datasets.get(args["dataset"])(split=args["split"], data_root=args.get("data_root"), resolution=res,
                                                  download=bool(args.get("download")))
    dataset = _mask_dataset(wrapper, base, args)
    spread = _stored_calibration(args)
    result = evaluate(gen_sde, wrapper, dataset, num_samples=args["num_samples"], steps=args["steps"],
                      sampler=step, batch_size=args["batch_size"], seed=args["seed"],
                      data_consistency=args["data_consistency"], limit=args.get("limit"), device=device,
                      progress=not args["no_progress"], spread=spread,
                      symmetrize_x0=not args["no_symmetrize_x0"] and dihedral_invariant(base))
    if getattr(base, "field", None):
        result["metrics"]["field"] = base.field
    result["metrics"].update(checkpoint=str(args["checkpoint"]), resolution=res, sampler=key,
                             precision=_precision(gen_sde.network),
                             parameterization=config["parameterization"], masks=_masks_used(dataset, args),
                             spread=_spread_note(spread, args))
    write_outputs(result, args["out"])
    print(table(result["metrics"]))
    print(f"masks: {_mask_line(result['metrics'])}")
    print(f"spread: {result['metrics']['spread']}")
    if "calibration" in result["metrics"]:
        print(coverage_table(result["metrics"]))
    print(f"wrote {Path(args['out']) / 'metrics.json'} and reconstructions.png")
    return 0


def shrinkage_line(sh: dict) -> str:
    if "rejected" in sh:
        r = sh["rejected"]
        return (f"none kept (w = 1): the best rule ({r['feature']}) gained {r['gain_db']:+.3f} dB on the "
                f"{sh['fitted_images']} fitting images, below {MIN_GAIN_DB} dB")
    rule = f"w = clip({sh['a']:.2f}" + (f" {sh['b']:+.2f} ({sh['feature']} {-sh['center']:+.3f})" if sh["b"] else "") + ", 0, 1)"
    return (f"ddo-x0 shrunk toward the interpolation by {rule}; on the {sh['fitted_images']} fitting images "
            f"{sh['gain_db']:+.3f} dB query PSNR over ddo-x0")


def _check_point_flags(args: dict, wrapper, config: dict) -> None:
    points_model = isinstance(wrapper, PointConditioning)
    if args.get("points") and not points_model:
        raise UserError(f"--points needs a point-set model (--conditioning sparse-setconv or sparse-attention); "
                        f"{args['checkpoint']} has --conditioning {config.get('conditioning')}")
    if args.get("extent") and not args.get("points"):
        raise UserError("--extent gives the pixel size of a --points CSV; pass --points too or drop it")
    if args.get("points") and args.get("data_consistency"):
        raise UserError("--data-consistency re-imposes observed grid pixels; a --points CSV has none")
    if points_model and args.get("data_consistency") and wrapper.coords == "jitter":
        raise UserError("--data-consistency re-imposes observed grid pixels; this model's context points are "
                        "jittered inside their pixels (--context-coords jitter), so there are none")


def dihedral_invariant(dataset) -> bool:
    """Whether the data's law is invariant to the square's rotations and reflections (so ``ddo-x0`` may
    average over them): natural images are; a field says so in its ``field`` record."""
    return bool((getattr(dataset, "field", None) or {}).get("dihedral_invariant", True))


def _stored_calibration(args: dict) -> dict | None:
    """The checkpoint's calibration unless ``--raw-spread`` (and only with 2 or more samples)."""
    if args.get("raw_spread") or args["num_samples"] < 2:
        return None
    return load_calibration(args["checkpoint"])


def _spread_note(spread: dict | None, args: dict) -> str:
    if spread is not None:
        return f"calibrated ({spread['fitted_on']}, {spread['fitted_images']} images)"
    if args["num_samples"] < 2:
        return "none (one sample)"
    return "raw (--raw-spread)" if args.get("raw_spread") else "raw (no stored calibration: run `ddo calibrate`)"


def coverage_table(m: dict) -> str:
    """A Markdown table of the spread's coverage on query pixels, raw and (if applied) calibrated."""
    rows = [("raw samples' std", m["calibration"])]
    if "calibration_rescaled" in m:
        rows.append(("calibrated std", m["calibration_rescaled"]))
    lines = ["| spread | within 1 std | within 2 std | Student-t 95% | Gaussian log-lik. |", "|---|---|---|---|---|"]
    for name, c in rows:
        t95 = f"{c['within_t95']:.1%}" if "within_t95" in c else "-"
        lines.append(f"| {name} | {c['within_1std']:.1%} | {c['within_2std']:.1%} | {t95} | {c['gaussian_loglik']:.3f} |")
    return "\n".join(lines)


def _mask_line(m: dict) -> str:
    src = m["masks"]["from_flags"]
    return (f"{m['context_ratio']:.0%} context, {m['query_ratio']:.0%} query, {m['mask_pattern']} pattern, seed "
            f"{m['mask_seed']} ({'flags: ' + ', '.join(src) if src else 'all from the checkpoint'})")


def add_demo_parser(parser) -> None:
    parser.add_argument("--minutes", type=positive_float, default=10.0, help="training budget (default 10)")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--dataset", default="natural-patches",
                        help="dataset key: trained on its train split, scored on its test split")
    parser.add_argument("--conditioning", default="sparse-biharmonic")
    parser.add_argument("--parameterization", choices=PARAMETERIZATIONS, default="x0")
    parser.add_argument("--refiner-width", type=nonneg_int, default=32)
    parser.add_argument("--residual-scale", choices=RESIDUAL_SCALES, default="context-input")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant")
    parser.add_argument("--augment", type=augment_list, default="photometric",
                        help="none, dihedral, photometric (default; chosen on the validation split), or both: "
                        "dihedral,photometric")
    parser.add_argument("--loss", default="x0-mse-relative")
    parser.add_argument("--num-samples", type=positive_int, default=4)
    parser.add_argument("--steps", type=positive_int, default=20)
    parser.add_argument("--sampler", default="ddim")
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
                        "was measured faster (a GPU with bf16, a CPU with AMX; the same numbers within 0.002 dB), "
                        "fp32 elsewhere; bf16 or fp32 force one")
    parser.add_argument("--seed", type=nonneg_int, default=0)
    parser.add_argument("--device")
    parser.add_argument("--no-progress", action="store_true")


PRECISIONS = ("auto", "bf16", "fp32")

DEMO_KEYS = ("dataset", "conditioning", "loss", "minutes", "parameterization", "refiner_width", "residual_scale",
             "lr_schedule", "augment", "seed")


def _demo_calibration(gen_sde, wrapper, host, train_split, args, res, key, step, device) -> dict | None:
    """Fit the spread calibration (and, on a validation split, the shrinkage) and store it with the
    demo's checkpoint: on the dataset's validation split when it has one, else on training crops."""
    if args["num_samples"] < 2:
        return None
    val = _split_or_none(host, args["dataset"], "val", res)
    split, base = ("train", train_split) if val is None else ("val", val)
    fitted = fit_calibration(gen_sde, wrapper, base, limit=args["calibrate_spread"], num_samples=args["num_samples"],
                             steps=args["steps"], sampler=step, seed=args["seed"], batch_size=32, device=device,
                             progress=not args["no_progress"], held_out=split == "val",
                             shrinkage_limit=args["calibrate_shrinkage"])
    save_calibration(Path(args["out"]) / CHECKPOINT, fitted, {"fitted_on": f"{args['dataset']}/{split}",
                                                               "fitted_sampler": key})
    return load_calibration(Path(args["out"]) / CHECKPOINT)


def _split_or_none(host, dataset: str, split: str, res: int):
    """The dataset's ``split``, or ``None`` when it has no such split."""
    try:
        return host.datasets.get(dataset)(split=split, resolution=res)
    except UserError:
        return None


def run_demo(args: dict) -> int:
    host = args["_host"]
    device = resolve_device(args.get("device"))
    out = Path(args["out"])
    if (out / CHECKPOINT).exists():
        raise UserError(f"{out} already holds a run; remove it or pass another --out")
    # resolved before training: --precision bf16 on a CPU without bf16 is refused now, not after it
    dtype = inference_dtype({"auto": "auto", "bf16": True, "fp32": False}[args["precision"]], device,
                            fix="--precision bf16: {}; use --precision auto or fp32")
    train_split = host.datasets.get(args["dataset"])(split="train", resolution=PRESETS["cpu-small"].get(
        "resolution", DEFAULTS["resolution"]))
    channels = int(train_split[0]["image"].shape[0])
    config = resolve({**{k: args[k] for k in DEMO_KEYS}, "num_sample": 0, "channels": channels}, "cpu-small", host)
    key, step, _ = sampling_choice(host, config, args["sampler"], args["steps"])
    t0 = time.monotonic()
    print(f"ddo demo: training {args['conditioning']} on {args['dataset']} for {args['minutes']:g} minutes", file=sys.stderr)
    summary = train(config, host, out, device=device, progress=not args["no_progress"])
    train_s = time.monotonic() - t0
    gen_sde, wrapper, config = load_model(out / CHECKPOINT, host, device)
    set_inference_dtype(gen_sde.network, dtype)
    test = host.datasets.get(args["dataset"])(split="test", resolution=config["resolution"])
    spread = _demo_calibration(gen_sde, wrapper, host, train_split, args, config["resolution"], key, step, device)
    result = evaluate(gen_sde, wrapper, wrapper.wrap_dataset(test, "test"), num_samples=args["num_samples"],
                      steps=args["steps"], sampler=step, seed=args["seed"], limit=args.get("limit"),
                      device=device, progress=not args["no_progress"], spread=spread,
                      symmetrize_x0=dihedral_invariant(test))
    m = result["metrics"]
    m.update(train_steps=summary["step"], train_seconds=round(train_s, 1), sampler=key, precision=_precision(gen_sde.network),
             parameters=count_parameters(gen_sde.network),
             **{k: config[k] for k in DEMO_KEYS if k not in ("minutes", "seed", "dataset")})
    m["dataset"] = f"{args['dataset']}/test"
    if getattr(test, "field", None):
        m["field"] = test.field
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
        f"# ddo demo: conditional sparse reconstruction on {m['dataset']}", "",
        f"{m['num_images']} test images; {m['context_ratio']:.0%} context and {m['query_ratio']:.0%} query pixels "
        f"({m['mask_pattern']} masks, seed {m['mask_seed']}). Model: `{m['conditioning']}` wrapper, "
        f"{m['parameters']:,} parameters, `{m['parameterization']}` parameterisation, loss `{m['loss']}`, {m['train_steps']} steps in {m['train_seconds']:.0f} s. "
        f"Sampling: {m['num_samples']} samples x {m['steps']} steps of `{m['sampler']}`, network in {m['precision']}.", "",
        tbl, "",
        f"`ddo-mean` is the model's posterior-mean estimate: `ddo-x0` (the network's x0 at t = 1"
        f"{', averaged over the 8 rotations and flips of the context' if m.get('symmetrize_x0') else ', one call'}) for x0/v "
        f"models, the mean of samples otherwise, shrunk toward the interpolation when a shrinkage was fitted on the "
        f"validation split; here `{source}`. Its margin over the best classical baseline "
        f"({best}): {margin:+.2f} dB on query pixels.", "",
    ]
    fitted = m.get("calibration_rescaled") or {}
    if fitted.get("shrinkage"):
        lines += [f"Shrinkage (fitted on {fitted.get('fitted_on')}): {shrinkage_line(fitted['shrinkage'])}.", ""]
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
                      f"fitted by maximum likelihood on {rc['fitted_images']} crops of {rc.get('fitted_on', 'the training split')} "
                      "under other masks): "
                      f"{rc['within_1std']:.1%} within 1 std, {rc['within_2std']:.1%} within 2 std, Gaussian "
                      f"log-likelihood {rc['gaussian_loglik']:.3f} per entry on the test images."]
        lines += [""]
    lines += ["![reconstructions](reconstructions.png)", "",
              "Rows: context (grey = unobserved), two samples, posterior mean (ddo-x0 when the model "
              "has one, else the mean of samples), per-pixel std of samples, ground truth, biharmonic.", "", "Full numbers: `metrics.json`.", ""]
    return "\n".join(lines)


__all__ = ["add_reconstruct_parser", "run_reconstruct", "add_demo_parser", "run_demo"]

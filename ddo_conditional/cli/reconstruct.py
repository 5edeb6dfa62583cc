"""``ddo reconstruct`` and ``ddo calibrate``: parse flags, resolve objects, call
:func:`~ddo_conditional.inference.evaluate.evaluate` or the calibration fits, hand the result to
:mod:`~ddo_conditional.io.report`. Nothing here computes or formats a result."""
from __future__ import annotations

import argparse
from pathlib import Path

from ddo.api import (UserError, check_out_dir, count_images, dihedral_invariant, load_image_folder, nonneg_int,
                     positive_int, resolve_device)

from ..classical.baselines import BASELINES, EXTRA_BASELINES
from ..data.masks import PATTERNS, MaskError, context_ratio_arg, ratio_range
from ..inference.calibration import SHRINKAGE_LIMIT
from ..inference.evaluate import evaluate
from ..inference.memory import check_kriging, check_reconstruction, check_thin_plate
from ..inference.metrics import SSIM_WINDOW
from ..inference.reconstruct import Reconstructor
from ..io.calibration_file import calibrate_and_save, load_calibration
from ..io.prior_file import PRIOR_IMAGES, fit_and_save_prior, load_prior
from ..io.report import coverage_table, mask_line, metrics_record, shrinkage_line, table, write_outputs
from ..wrappers import PointConditioning, Unconditional
from .flags import (add_guidance_flags, add_run_flags, add_sampler_flags, baseline_list, guidance_backward,
                    load_conditional, resolution_of, sampling_plan, size_of)

MASK_FLAGS = ("context_ratio", "query_ratio", "mask_seed", "mask_pattern")
# flags of the earlier spelling of a command that has its own now: refused in one line that names it
MOVED = {"points": "ddo points --checkpoint {checkpoint} --points CSV ...",
         "extent": "ddo points --checkpoint {checkpoint} --points CSV --extent W,H ...",
         "task": "ddo task --checkpoint {checkpoint} --task forward|inverse|joint ... (installed with the PDE plugin)",
         "points_per_channel": "ddo task --checkpoint {checkpoint} --task ... --points-per-channel N"}


def add_reconstruct_parser(parser, host=None) -> None:
    parser.add_argument("--checkpoint", required=True)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of PNG/JPEG images to reconstruct")
    src.add_argument("--dataset", help="dataset key, e.g. natural-patches or cifar10")
    src.add_argument("--points", help=argparse.SUPPRESS)  # the earlier spelling of `ddo points`, refused naming it
    parser.add_argument("--extent", help=argparse.SUPPRESS)
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-root")
    parser.add_argument("--download", action="store_true", help="fetch the --dataset into --data-root first (cifar10)")
    parser.add_argument("--resolution", type=positive_int, help="default: the training resolution")
    parser.add_argument("--limit", type=positive_int, help="evaluate the first N images only")
    parser.add_argument("--num-samples", type=positive_int, default=4)
    add_sampler_flags(parser, "the best measured for the model's parameterisation (README): ddim with 20 steps for "
                       "x0/v models, denoise with 250 steps for eps models")
    parser.add_argument("--data-consistency", action="store_true", help="re-impose observed pixels each step")
    add_guidance_flags(parser, host)
    parser.add_argument("--no-symmetrize-x0", action="store_true",
                        help="one call for ddo-x0 instead of the average over rotations and flips (datasets "
                        "without those symmetries, such as navier-stokes, always use one call)")
    parser.add_argument("--mask-seed", type=nonneg_int, help="default: the checkpoint's mask seed")
    parser.add_argument("--mask-pattern", choices=PATTERNS, help="default: the checkpoint's pattern")
    parser.add_argument("--context-ratio", type=context_ratio_arg,
                        help="default: the checkpoint's context ratio (a number, or a range LO:HI drawn per image)")
    parser.add_argument("--query-ratio", type=float, help="default: the checkpoint's query ratio")
    parser.add_argument("--baselines", type=baseline_list,
                        help=f"classical methods scored beside the model, comma-separated (default "
                        f"{','.join(BASELINES)}; on request {', '.join(EXTRA_BASELINES)}: a dense solve per image; kriging "
                        "conditions a Gaussian prior fitted on the training split, stored beside the checkpoint, and is "
                        "scored as a distribution too: CRPS and coverage)")
    for moved in ("--task", "--points-per-channel"):  # the earlier spelling, refused with the new command's name
        parser.add_argument(moved, help=argparse.SUPPRESS)
    parser.add_argument("--raw-spread", action="store_true",
                        help="report the samples' own std even when the checkpoint has a calibration (`ddo calibrate`)")
    add_run_flags(parser)
    parser.add_argument("--out", required=True, help="output folder (metrics.json, reconstructions.png, *.npy)")


def add_calibrate_parser(parser, host=None) -> None:
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
    add_sampler_flags(parser, "as `ddo reconstruct`")
    add_run_flags(parser)


def run_reconstruct(args: dict, host) -> int:
    for moved, command in MOVED.items():
        if args.get(moved):
            raise UserError(f"--{moved.replace('_', '-')} moved to its own command: {command.format(**args)}")
    check_out_dir(args["out"])
    device = resolve_device(args.get("device"))
    backward = guidance_backward(args, host)  # an unknown --guidance is refused before anything is loaded
    denoiser, wrapper, config = load_conditional(args, host, device)
    conditional = not isinstance(wrapper, Unconditional)
    if not conditional:
        for flag in ("no_symmetrize_x0", "raw_spread"):
            if args.get(flag):
                raise UserError(f"--{flag.replace('_', '-')} applies to a conditional model's estimates; "
                                f"{args['checkpoint']} is unconditional (guided samples only): leave it out")
    if isinstance(wrapper, PointConditioning) and args.get("data_consistency") and wrapper.coords == "jitter":
        raise UserError("--data-consistency re-imposes observed grid pixels; this model's context points are "
                        "jittered inside their pixels (--context-coords jitter), so there are none")
    res = resolution_of(args, config)
    if res < SSIM_WINDOW // 2:  # the SSIM map mirrors the image by half its window on every side
        raise UserError(f"--resolution {res} is too small to score: SSIM needs images of at least "
                        f"{SSIM_WINDOW // 2}x{SSIM_WINDOW // 2}")
    files = count_images(args["images"]) if args.get("images") else 0  # read whole, whatever --limit says
    kept = min(args.get("limit") or files or 1, files or args.get("limit") or 1)
    check_reconstruction(config, size_of(args, resolution=res, images=kept, loaded=files, backward=backward),
                         device)  # before reading
    base = _base_dataset(args, host, res)
    _check_channels(base, config, args)
    check_reconstruction(config, size_of(args, resolution=res, images=min(args.get("limit") or len(base), len(base)),
                                         loaded=files, backward=backward), device)
    dataset = _mask_dataset(wrapper, base, args)
    baselines = args.get("baselines") or BASELINES
    if "thin-plate" in baselines:
        check_thin_plate(ratio_range(dataset.context_ratio)[1], res)  # host memory: the baselines run on the CPU
    prior = gaussian_prior(args, host, config, res, ratio_range(dataset.context_ratio)[1]) if "kriging" in baselines \
        else None
    # a stored calibration was fitted on unguided samples: guided ones report their own spread
    raw = args.get("raw_spread") or args.get("guidance") or args["num_samples"] < 2
    spread = None if raw else load_calibration(args["checkpoint"])
    plan = sampling_plan(args, host, config, denoiser, not args["no_symmetrize_x0"] and dihedral_invariant(base))
    ev = evaluate(Reconstructor(denoiser, plan, conditional=conditional), wrapper, dataset, spread=spread, limit=args.get("limit"),
                  baselines=baselines, field_record=getattr(base, "field", None), prior=prior)
    record = metrics_record(ev, checkpoint=str(args["checkpoint"]), resolution=res,
                            parameterization=config["parameterization"], spread=_spread_note(spread, args),
                            masks={**ev.masks, "from_flags": sorted(k for k in MASK_FLAGS if args.get(k) is not None)})
    write_outputs(ev, record, args["out"])
    print(table(record))
    print(f"masks: {mask_line(record)}")
    if record.get("guidance"):
        scale = record["guidance_scale"]
        print(f"guidance: {record['guidance']} ({'default scale' if scale is None else f'scale {scale:g}'}, "
              f"{record['steps']} {record['sampler']} steps)")
    print(f"spread: {record['spread']}")
    if "calibration" in record:
        print(coverage_table(record))
    print(f"wrote {Path(args['out']) / 'metrics.json'} and reconstructions.png")
    return 0


def gaussian_prior(args: dict, host, config: dict, res: int, ratio: float):
    """The Gaussian prior the kriging baseline conditions at ``res``: the one stored beside the checkpoint,
    else fitted on the training split of ``--dataset`` (or the checkpoint's data) and stored there."""
    name = args.get("dataset") or config["dataset"]
    root = args.get("data_root") or config.get("data_root")
    fitted_on = f"{name}/train" + (f" of {root}" if root else "")
    found = load_prior(args["checkpoint"], res, name, fitted_on)
    channels = int(config.get("channels") or 3)
    if found is not None:
        check_kriging(ratio, channels, res, 0)
        return found[0]
    train = host.datasets.get(name)(split="train", data_root=root, resolution=res)
    check_kriging(ratio, channels, res, min(len(train), PRIOR_IMAGES))
    return fit_and_save_prior(args["checkpoint"], train, res, name, fitted_on)


def _base_dataset(args: dict, host, res: int):
    if args.get("images"):
        if args.get("download"):
            raise UserError("--download fetches a --dataset; it does not apply to --images")
        return load_image_folder(args["images"], res)
    return host.datasets.get(args["dataset"])(split=args["split"], data_root=args.get("data_root"), resolution=res,
                                              download=bool(args.get("download")))


def _check_channels(base, config: dict, args: dict) -> None:
    """Refuse data whose images have another number of channels than the model was trained on."""
    if len(base) and int(base[0]["image"].shape[0]) != int(config["channels"]):
        source = f"--images {args['images']}" if args.get("images") else f"--dataset {args['dataset']}"
        raise UserError(f"{source} has {int(base[0]['image'].shape[0])}-channel images and {args['checkpoint']} "
                        f"was trained on {config['channels']}-channel ones; use data like its training data")


def _mask_dataset(wrapper, base, args):
    try:
        return wrapper.mask_dataset(base, context_ratio=args.get("context_ratio"), query_ratio=args.get("query_ratio"),
                                    seed=args.get("mask_seed"), pattern=args.get("mask_pattern"))
    except MaskError as e:
        raise UserError(str(e)) from None


def _spread_note(spread: dict | None, args: dict) -> str:
    if spread is not None:
        return f"calibrated ({spread['fitted_on']}, {spread['fitted_images']} images)"
    if args["num_samples"] < 2:
        return "none (one sample)"
    if args.get("guidance"):
        return f"raw (--guidance {args['guidance']}: a stored calibration is of unguided samples)"
    return "raw (--raw-spread)" if args.get("raw_spread") else "raw (no stored calibration: run `ddo calibrate`)"


def run_calibrate(args: dict, host) -> int:
    device = resolve_device(args.get("device"))
    denoiser, wrapper, config = load_conditional(args, host, device)
    if args["split"] == "test":
        raise UserError("the test split is where calibration is checked; fit on --split train (or a validation split)")
    dataset = args.get("dataset") or config["dataset"]
    base = host.datasets.get(dataset)(split=args["split"], data_root=args.get("data_root") or config.get("data_root"),
                                      resolution=config["resolution"])
    _check_channels(base, config, {**args, "dataset": dataset})
    held_out = min(args["shrinkage_limit"], len(base)) if args["split"] != "train" else 0
    check_reconstruction(config, size_of(args, resolution=config["resolution"], images=min(args["limit"], len(base)) + held_out),
                         device, f"calibrating on {min(args['limit'], len(base)):,} images",
                         flags=("batch_size", "num_samples", "images"))
    plan = sampling_plan(args, host, config, denoiser, dihedral_invariant(base))
    fitted, path = calibrate_and_save(args["checkpoint"], Reconstructor(denoiser, plan), wrapper, base,
                                      f"{dataset}/{args['split']}", args["limit"], args["shrinkage_limit"])
    print(f"spread calibration: std' = sqrt(({fitted['spread_scale']:.3f} std)^2 + ({fitted['spread_roughness']:.3f} r)^2 "
          f"+ {fitted['spread_floor']:.4f}^2), fitted on {fitted['fitted_images']} images of {dataset}/{args['split']}; "
          f"wrote {path}")
    if "shrinkage" in fitted:
        print(f"shrinkage: {shrinkage_line(fitted['shrinkage'])}")
    return 0


__all__ = ["add_reconstruct_parser", "run_reconstruct", "add_calibrate_parser", "run_calibrate"]

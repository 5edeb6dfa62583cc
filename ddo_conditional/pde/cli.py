"""``ddo task``: a ``sparse-route`` model (or an unconditional model of the pair, with ``--guidance``) on a
PDE task, beside the classical estimates on the same observations, headed by the best of them; writes
``metrics.json`` and ``reconstructions.png``."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ddo.api import (UserError, atomic_write, check_finite, check_out_dir, nonneg_int, positive_int, resolve_device,
                     save_grid)

from ..cli.flags import (add_guidance_flags, add_run_flags, add_sampler_flags, guidance_backward, load_conditional,
                         resolution_of, sampling_plan, size_of)
from ..data.masks import TASKS, ratio_range
from ..inference.memory import check_reconstruction
from ..inference.reconstruct import Reconstructor
from ..wrappers import Unconditional
from .cache import EstimateCache, RouteCache, default_folder
from .conditioning import RouteConditioning
from .datasets import PAIR_KINDS
from .report import headline, task_figure, task_record, task_table
from .tasks import REFERENCE_DRAWS, TaskSettings, evaluate_task


def add_task_parser(parser, host=None) -> None:
    parser.add_argument("--checkpoint", required=True, help="a field-pair model (--conditioning sparse-route), or an "
                        "unconditional model of a field pair with --guidance")
    parser.add_argument("--task", required=True, choices=TASKS, help="forward (points of the input), inverse (points "
                        "of the solution) or joint (both): relative L2 of the target fields beside co-kriging and "
                        "the classical routes")
    parser.add_argument("--dataset", help="the model's own field pair (the default; any other is refused)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--resolution", type=positive_int, help="default: the training resolution")
    parser.add_argument("--points-per-channel", type=positive_int, help="observed points of each observed channel "
                        "(default: as many as the model was trained with)")
    parser.add_argument("--mask-seed", type=nonneg_int, help="seed of the observed points; default: the checkpoint's")
    parser.add_argument("--limit", type=positive_int, help="evaluate the first N pairs only")
    parser.add_argument("--num-samples", type=positive_int, default=4, help="the model's samples per pair; 2 or more "
                        "are scored as a distribution (CRPS, coverage) beside the reference posterior")
    parser.add_argument("--skip-slow", action="store_true", help="leave out the estimates that take seconds per pair "
                        "(Darcy's inversion and posterior, the reference posterior's draws); the headline is then "
                        "the best of the rest")
    parser.add_argument("--reference-draws", type=nonneg_int, default=REFERENCE_DRAWS,
                        help="draws of the reference posterior per pair (0: none)")
    parser.add_argument("--estimate-cache", type=Path, help="folder of the slow estimates, kept across runs keyed by "
                        "the observations (default: $DDO_CACHE_DIR/pde-estimates, ~/.cache/ddo/pde-estimates)")
    parser.add_argument("--no-estimate-cache", action="store_true", help="compute the slow estimates afresh, keep nothing")
    add_sampler_flags(parser, "as `ddo reconstruct`")
    add_guidance_flags(parser, host)
    add_run_flags(parser)
    parser.add_argument("--out", required=True, help="output folder (metrics.json, reconstructions.png)")


def task_points(args: dict, config: dict, wrapper, res: int) -> int:
    """Observed points per channel: ``--points-per-channel``, else as many as the model was trained with
    (the same sensors at any resolution)."""
    lo, hi = ratio_range(wrapper.context_ratio)
    if args.get("points_per_channel"):
        n = args["points_per_channel"]
    elif isinstance(wrapper, Unconditional):
        raise UserError(f"{args['checkpoint']} is unconditional: it was trained with no points; give "
                        "--points-per-channel N (the field's benchmark observes 500 of 128x128)")
    elif lo != hi:
        raise UserError(f"{args['checkpoint']} was trained with a range of context ratios ({wrapper.context_ratio}); "
                        "give --points-per-channel N")
    else:
        n = math.floor(lo * int(config["resolution"]) ** 2)
    if n > res * res:
        raise UserError(f"--points-per-channel {n} is more than the {res}x{res} grid's {res * res} pixels; lower it")
    return n


def check_task_flags(args: dict, wrapper, config: dict) -> None:
    if isinstance(wrapper, Unconditional):
        if config.get("dataset") not in PAIR_KINDS:
            raise UserError(f"ddo task scores a model of a field pair; {args['checkpoint']} was trained on "
                            f"{config.get('dataset')} (train one with --dataset {' or '.join(PAIR_KINDS)} --channels 2)")
    elif not isinstance(wrapper, RouteConditioning):
        raise UserError(f"--task scores a field-pair model (--conditioning sparse-route); {args['checkpoint']} has "
                        f"--conditioning {config.get('conditioning')}")
    if args.get("dataset") not in (None, config.get("dataset")):
        raise UserError(f"--task evaluates the model's own PDE ({config.get('dataset')}); got --dataset {args['dataset']}")
    if args.get("reference_draws") == 1:
        raise UserError("--reference-draws 1: a distribution is scored from 2 or more draws; give 2 or more, or 0 for none")
    if args.get("estimate_cache") and args.get("no_estimate_cache"):
        raise UserError("--estimate-cache and --no-estimate-cache contradict each other; give one")


def run_task_command(args: dict, host) -> int:
    check_out_dir(args["out"])
    guidance_backward(args, host)  # an unknown --guidance is refused before anything is loaded
    denoiser, wrapper, config = load_conditional(args, host, resolve_device(args.get("device")))
    return run_task(args, host, denoiser, wrapper, config, sampling_plan(args, host, config, denoiser, False))


def run_task(args: dict, host, denoiser, wrapper, config: dict, plan) -> int:
    check_task_flags(args, wrapper, config)
    res = resolution_of(args, config)
    base = host.datasets.get(config["dataset"])(split=args["split"], resolution=res)
    n = task_points(args, config, wrapper, res)
    # x0/v conditional models: the one-call posterior mean; others, and unconditional ones: the mean of samples
    rec = Reconstructor(denoiser, plan, conditional=not isinstance(wrapper, Unconditional))
    images = min(args.get("limit") or len(base), len(base))
    size = size_of(args, resolution=res, images=images, backward=guidance_backward(args, host))
    check_reconstruction(config, size, rec.device)  # one-call models draw the samples too: their distribution is scored
    dataset = wrapper.mask_dataset(base, context_ratio=n / (res * res), query_ratio=0.0, seed=args.get("mask_seed"),
                                   observe=args["task"])
    cache = EstimateCache(None if args.get("no_estimate_cache") else args.get("estimate_cache") or default_folder())
    routes = wrapper.routes if isinstance(wrapper, RouteConditioning) else RouteCache(config["dataset"])
    settings = TaskSettings(samples=not rec.one_call, slow=not args.get("skip_slow"), cache=cache,
                            reference_draws=args.get("reference_draws", REFERENCE_DRAWS), routes=routes)
    ev = evaluate_task(config["dataset"], args["task"], dataset, wrapper, rec, args.get("limit"), settings)
    for name, errors in ev.errors.items():
        check_finite(errors, f"the {name} errors", "the model diverged; check the checkpoint")
    for name, scores in ev.scores.items():
        check_finite(scores["crps"], f"the CRPS of {name}", "the model diverged; check the checkpoint")
    channels = tuple(base.field["channels"])
    record = {"checkpoint": str(args["checkpoint"]), "dataset": config["dataset"], "split": args["split"],
              "mask_seed": dataset.seed, **task_record(ev, channels)}
    out = Path(args["out"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(record, indent=2).encode()))
    save_grid(task_figure(ev), out / "reconstructions.png", nrow=2, value_range=(0.0, 1.0), row_labels=list(ev.figure))
    print(task_table([ev], channels))
    print(headline(ev))
    if cache.folder is not None and cache.hits + cache.misses:
        print(f"slow estimates: {cache.hits} read from {cache.folder}, {cache.misses} computed and kept there")
    print(f"{ev.points} points per observed channel at {res}x{res}; errors: relative L2"
          + (", the coefficient a as its thresholded error rate" if config["dataset"] == "darcy-pair" else ""))
    print(f"wrote {out / 'metrics.json'} and reconstructions.png")
    return 0


__all__ = ["add_task_parser", "run_task_command", "run_task", "check_task_flags", "task_points"]

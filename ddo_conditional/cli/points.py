"""``ddo points``: a reconstruction from observations at any coordinates, a CSV in and any resolution out
(the file's format: :mod:`~ddo_conditional.io.points_csv`)."""
from __future__ import annotations

from pathlib import Path

import torch
from ddo.api import UserError, check_out_dir, positive_int, resolve_device

from ..classical.thin_plate import point_context
from ..inference.guidance import PointObservation
from ..inference.memory import check_reconstruction
from ..inference.reconstruct import Reconstructor
from ..io.points_csv import MIN_POINTS, count_rows, parse_extent, read_points
from ..io.report import write_points
from ..wrappers import PointConditioning, Unconditional
from .flags import (add_guidance_flags, add_run_flags, add_sampler_flags, guidance_of, load_conditional, resolution_of,
                    sampling_plan, size_of)


def add_points_parser(parser, host=None) -> None:
    parser.add_argument("--checkpoint", required=True, help="a point-set model (--conditioning sparse-setconv or "
                        "sparse-attention), or an unconditional one with --guidance dps")
    parser.add_argument("--points", metavar="CSV", required=True, help="observations at any coordinates: columns x, y "
                        "(in [0, 1], or pixels with --extent) and one value column per channel in [0, 1]")
    parser.add_argument("--extent", metavar="W,H", help="x and y are pixels of a W x H image")
    parser.add_argument("--resolution", type=positive_int, help="the grid of the output; default: the training resolution")
    parser.add_argument("--num-samples", type=positive_int, default=4)
    add_sampler_flags(parser, "as `ddo reconstruct`")
    add_guidance_flags(parser, host)
    parser.add_argument("--no-symmetrize-x0", action="store_true",
                        help="one call for the mean instead of the average over rotations and flips")
    add_run_flags(parser)
    parser.add_argument("--out", required=True, help="output folder (mean, std, samples as .npy and .png; points.json)")


def run_points_command(args: dict, host) -> int:
    check_out_dir(args["out"])
    guidance_of(args, host)  # an unknown key is refused before the checkpoint is read
    denoiser, wrapper, config = load_conditional(args, host, resolve_device(args.get("device")))
    conditional = not isinstance(wrapper, Unconditional)
    if conditional and not isinstance(wrapper, PointConditioning):
        raise UserError(f"ddo points needs a point-set model (--conditioning sparse-setconv or sparse-attention) or an "
                        f"unconditional one with --guidance dps; {args['checkpoint']} has --conditioning "
                        f"{config.get('conditioning')}")
    if not conditional and args.get("no_symmetrize_x0"):
        raise UserError(f"--no-symmetrize-x0 applies to a conditional model's estimates; {args['checkpoint']} is "
                        "unconditional (guided samples only): leave it out")
    plan = sampling_plan(args, host, config, denoiser, not args["no_symmetrize_x0"])
    return run_points(args, denoiser, config, plan, conditional)


def run_points(args: dict, denoiser, config: dict, plan, conditional: bool = True) -> int:
    """Reconstruct the ``--points`` CSV at ``--resolution`` and write mean, std and samples
    (:func:`~ddo_conditional.io.report.write_points`): the mean is the symmetrised ``x0`` estimate of
    a conditional ``x0``/``v`` model, else the mean of the samples. With the plan's guidance the
    samples are steered toward the points where they lie (:class:`PointObservation`)."""
    extent = parse_extent(args["extent"]) if args.get("extent") else None
    res = resolution_of(args, config)
    rec = Reconstructor(denoiser, plan, conditional=conditional)
    backward = bool(getattr(plan.guidance, "needs_grad", False))
    if Path(args["points"]).is_file():  # before the file is parsed: its size bounds the spline's
        check_reconstruction(config, size_of(args, resolution=res, points=max(MIN_POINTS, count_rows(args["points"]) - 1),
                                             backward=backward), rec.device, flags=("resolution", "batch_size", "num_samples"))
    coords, values = read_points(args["points"], int(config["channels"]), extent)
    check_reconstruction(config, size_of(args, resolution=res, points=len(coords), backward=backward), rec.device,
                         flags=("resolution", "batch_size", "num_samples"))
    points = (torch.from_numpy(coords)[None].to(rec.device), torch.from_numpy(values * 2 - 1)[None].to(rec.device),
              torch.ones(1, len(coords), dtype=torch.bool, device=rec.device))
    operator = PointObservation(*(p.float() for p in points[:2]), points[2])
    if plan.guidance is not None:
        try:
            plan.guidance(operator, plan.guidance_scale)
        except ValueError as e:  # a method that cannot read these observations
            raise UserError(f"--guidance {plan.guidance_name}: {e}") from None
    kwargs = point_context(*points, res, res) if conditional else {}
    shape, indices = (1, values.shape[1], res, res), [0]
    out = rec.samples(kwargs, shape, indices, operator=operator if plan.guidance is not None else None)
    mean = rec.posterior_mean(kwargs, shape, indices)[0] if rec.one_call else out.mean
    arrays = {"mean": ((mean[0] + 1) / 2).clamp(0, 1), "std": out.std[0] / 2,
              "samples": ((out.samples[:, 0] + 1) / 2).clamp(0, 1)}
    out_dir = Path(args["out"])
    write_points(out_dir, arrays, (coords, values), {
        "checkpoint": str(args["checkpoint"]), "points": str(args["points"]), "num_points": len(coords),
        "resolution": res, **plan.record(),
        "mean": "ddo-x0 (the network's t = 1 estimate, averaged over rotations and flips)" if rec.one_call
        else "mean of the samples", "std": "the samples' own std (the stored calibration applies to grid contexts)",
        "extent": list(extent) if extent else None})
    print(f"reconstructed {len(coords)} points at {res}x{res}: wrote reconstruction.png (points, posterior mean, std), "
          f"mean/std/samples .png and .npy, points.json in {out_dir}")
    return 0

"""Flags and objects every command of the plugin shares: the sampler and run flags, the checkpoint loaded
as a conditional model, the sampling plan the flags ask for, the memory guard's view of a command."""
from __future__ import annotations

import argparse

import torch
from ddo.api import (BF16_INFERENCE_HELP, FNOUNet2d, UserError, check_resolution, inference_dtype, load_model,
                     positive_float, positive_int, sampling_choice, seed_int, set_inference_dtype)

from ..classical.baselines import BASELINES, EXTRA_BASELINES
from ..inference.guidance import DEFAULT_SCALES, GUIDED_STEPS
from ..inference.memory import ReconstructionSize
from ..inference.reconstruct import SamplingPlan
from ..wrappers import SparseConditioning, Unconditional


def baseline_list(text: str) -> tuple[str, ...]:
    """``--baselines``: known classical methods, comma-separated, each once."""
    names = tuple(n for n in text.replace(" ", "").split(",") if n)
    known = BASELINES + EXTRA_BASELINES
    unknown = [n for n in names if n not in known]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct names among {','.join(known)}, got {text!r}")
    return names


def add_sampler_flags(parser, default: str) -> None:
    parser.add_argument("--steps", type=positive_int, help=f"default: {default}")
    parser.add_argument("--sampler", help=f"default: {default}")


def add_run_flags(parser) -> None:
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="images per network call (default 32; 64 is the fastest measured for the seed model, "
                        "README: Speed); samples do not depend on it")
    parser.add_argument("--bf16", action="store_true", help=BF16_INFERENCE_HELP)
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the samples' draws (each image and sample "
                        "number has its own stream)")
    parser.add_argument("--device")
    parser.add_argument("--no-progress", action="store_true")


def add_guidance_flags(parser, host) -> None:
    keys = ", ".join(host.guidance.keys()) if host is not None else "dps, projection"
    parser.add_argument("--guidance", metavar="KEY",
                        help=f"steer the sampler toward the observations at every step ({keys}): reconstructs with an "
                        "unconditional checkpoint, nothing retrained; on a conditional one it adds to its conditioning. "
                        "dps: gradient of the misfit of the network's x0 estimate (a network backward per step); "
                        "projection: the observed values imposed on the x0 estimate (docs/guidance.md). Guided runs "
                        f"take {GUIDED_STEPS} steps unless --steps is given (measured better than 20)")
    parser.add_argument("--guidance-scale", type=positive_float, metavar="S",
                        help="dps: DPS's step size zeta (default "
                        f"{DEFAULT_SCALES['dps']:g}); projection: the share of the correction applied (default "
                        f"{DEFAULT_SCALES['projection']:g})")


def guidance_of(args: dict, host):
    """``(key, factory)`` of ``--guidance`` (``(None, None)`` without it), refused in one line when unknown."""
    key = args.get("guidance")
    if key is None:
        if args.get("guidance_scale") is not None:
            raise UserError("--guidance-scale scales a --guidance method; pass --guidance KEY too")
        return None, None
    if key not in host.guidance:
        raise UserError(f"unknown guidance method {key!r}; known: {', '.join(host.guidance.keys())}")
    return key, host.guidance.get(key)


def guidance_backward(args: dict, host) -> bool:
    """Whether ``--guidance`` differentiates the network at every step (its factory's ``needs_grad``)."""
    return bool(getattr(guidance_of(args, host)[1], "needs_grad", False))


def size_of(args: dict, **sizes) -> ReconstructionSize:
    """The memory guard's view of a command: its ``--num-samples`` and ``--batch-size`` with ``sizes``."""
    return ReconstructionSize(num_samples=args["num_samples"], batch_size=args.get("batch_size") or 32, **sizes)


def resolution_of(args: dict, config: dict) -> int:
    """``--resolution``, else the training resolution; refused (one line) where the network cannot run."""
    res = args.get("resolution") or config["resolution"]
    check_resolution(config, res)
    return res


def precision_name(network) -> str:
    """``"bf16"`` or ``"fp32"``: the inference dtype of the FNO-UNets inside ``network``."""
    dtype = next((m.inference_dtype for m in network.modules() if isinstance(m, FNOUNet2d)), None)
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def load_conditional(args: dict, host, device):
    """``(denoiser, wrapper, config)`` of ``--checkpoint`` with the network in the asked precision,
    refused unless it is a sparse-conditional model or, with ``--guidance``, an unconditional one (then the
    wrapper is :class:`~ddo_conditional.wrappers.Unconditional`: masks on the data, no network inputs)."""
    denoiser, wrapper, config = load_model(args["checkpoint"], host, device)
    set_inference_dtype(denoiser.network, inference_dtype(bool(args.get("bf16")), device))
    if isinstance(wrapper, SparseConditioning):
        return denoiser, wrapper, config
    if config.get("conditioning") not in (None, "none"):
        raise UserError(f"{args['checkpoint']} is conditioned by {config['conditioning']!r}, not on sparse context; "
                        "reconstruct with a sparse-conditional or an unconditional checkpoint")
    if not args.get("guidance"):
        raise UserError(f"{args['checkpoint']} is an unconditional model: reconstruct with --guidance dps (or "
                        "projection), or train a conditional one with --conditioning sparse-biharmonic")
    return denoiser, Unconditional(config), config


def sampling_plan(args: dict, host, config: dict, denoiser, symmetrize: bool = True) -> SamplingPlan:
    """The plan the flags ask for: the sampler and steps measured best for the model unless given."""
    key, step, steps = sampling_choice(host, config, args.get("sampler"), args.get("steps"))
    guide_key, guide = guidance_of(args, host)
    if guide is not None and args.get("steps") is None:
        steps = max(steps, GUIDED_STEPS)
    return SamplingPlan(samples=args["num_samples"], steps=steps, sampler=step, sampler_name=key,
                        rows=args["batch_size"], seed=args["seed"], precision=precision_name(denoiser.network),
                        data_consistency=bool(args.get("data_consistency")), symmetrize=symmetrize,
                        progress=not args["no_progress"], guidance=guide, guidance_name=guide_key,
                        guidance_scale=args.get("guidance_scale"))


__all__ = ["add_guidance_flags", "guidance_of", "guidance_backward", "baseline_list", "add_sampler_flags", "add_run_flags", "size_of", "precision_name", "load_conditional",
           "sampling_plan", "resolution_of"]

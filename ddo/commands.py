"""The host's commands (``train``, ``sample``, ``plugins``): registry keys resolved to objects,
then calls into the library. Flags are parsed in :mod:`ddo.arguments`."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from . import sampling
from .checkpoint import load_checkpoint
from .config import resolve
from .errors import UserError
from .options import validate
from .train import CHECKPOINT, load_model, set_inference_dtype, train
from .visual import save_grid


def resolve_device(name: str | None) -> torch.device:
    name = name or "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was given but no CUDA device is available; use --device cpu")
    return device


RUN_KEYS = ("out", "preset", "resume", "device", "no_progress", "download", "command", "_host")


def _flags(args: dict) -> dict:
    flags = {k: v for k, v in args.items() if k not in RUN_KEYS and v is not None}
    for key in ("norm", "weight_method"):  # the word "none" on the command line means None
        if flags.get(key) in ("none", "None"):
            flags[key] = None
    return flags


def train_config(args: dict, host) -> dict:
    """The configuration of a ``ddo train`` invocation: defaults < declared plugin options < preset
    < flags, or for ``--resume`` the saved configuration < flags. Every value in effect is in it."""
    flags = _flags(args)
    if not args.get("resume"):
        return resolve(flags, args.get("preset"), host)
    ckpt = Path(args["out"]) / CHECKPOINT
    if not ckpt.exists():
        raise UserError(f"--resume given but {ckpt} does not exist")
    return {**load_checkpoint(ckpt)["config"], **flags}


def run_train(args: dict) -> int:
    host = args["_host"]
    device = resolve_device(args.get("device"))
    config = train_config(args, host)
    if args.get("download"):
        host.datasets.get(config["dataset"])(split="train", data_root=config["data_root"],
                                             resolution=config["resolution"], download=True)
    summary = train(config, host, args["out"], resume=bool(args.get("resume")), device=device,
                    progress=not args.get("no_progress"))
    print(f"trained {summary['step']} steps; last loss {summary['last_loss']:.4g}; run in {summary['out_dir']}")
    return 0


def bf16_pays(device: torch.device) -> bool:
    """Whether bf16 inference is the faster path on ``device``: CUDA with bf16, or a CPU with AMX tiles
    (measured there: benchmarks/README.md). A CPU with AVX512-BF16 but no AMX was not measured with the
    current inference path, so it keeps fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        return bool(torch._C._cpu._init_amx())
    except (AttributeError, RuntimeError):
        return False


def inference_dtype(bf16, device: torch.device, fix: str = "--bf16: {}; drop the flag"):
    """``torch.bfloat16`` or ``None`` (fp32) for inference. ``bf16``: ``True`` (asked; refused on a CPU without
    native bf16 arithmetic, where it would be slower, with ``fix`` formatted with the reason), ``False``,
    or ``"auto"``: bf16 where it pays (:func:`bf16_pays`)."""
    if bf16 == "auto":
        return torch.bfloat16 if bf16_pays(device) else None
    if not bf16:
        return None
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise UserError(fix.format("this CPU has no native bf16 arithmetic (AVX512-BF16 or AMX)"))
    return torch.bfloat16


def sampling_choice(host, config: dict, sampler: str | None, steps: int | None):
    """``(key, step function, steps)``: the given sampler and steps, or the best measured ones for the
    model's parameterisation (:data:`ddo.sampling.DEFAULT_SAMPLING`); the sampler's requirements are
    checked against the model's configuration."""
    best_key, best_steps = sampling.DEFAULT_SAMPLING[config.get("parameterization", "eps")]
    key = sampler or best_key
    validate({**config, "sampler": key}, host, keys=("sampler",))
    return key, host.samplers.get(key), steps or best_steps


def run_sample(args: dict) -> int:
    host = args["_host"]
    if not str(args["out"]).lower().endswith(".png"):
        raise UserError(f"--out must name a .png file, got {args['out']}")
    device = resolve_device(args.get("device"))
    gen_sde, wrapper, config = load_model(args["checkpoint"], host, device)
    if wrapper.needs_inputs:
        raise UserError(f"{args['checkpoint']} is a conditional model ({config['conditioning']}); it cannot be "
                        "sampled without its inputs (see `ddo plugins` for the commands that provide them)")
    _, step, steps = sampling_choice(host, config, args.get("sampler"), args.get("steps"))
    set_inference_dtype(gen_sde.network, inference_dtype(bool(args.get("bf16")), device))
    res = args.get("resolution") or config["resolution"]
    g = torch.Generator(device=device).manual_seed(args["seed"])
    x = sampling.sample(gen_sde, (args["num"], config["channels"], res, res), num_steps=steps,
                        sampler=step, generator=g, progress=not args["no_progress"], device=device)
    save_grid(x.clamp(-1, 1), args["out"], nrow=max(1, int(math.sqrt(args["num"]))))
    print(f"wrote {args['num']} samples at {res}x{res} to {args['out']}")
    return 0


def run_plugins(args: dict) -> int:
    host = args["_host"]
    print("plugins:")
    for name in host.plugin_names():
        print(f"  {name}")
    for kind, registry in host.registries.items():
        print(f"{kind}:")
        for key in registry.keys():
            print(f"  {key:<24} {registry.provider(key)}")
    return 0

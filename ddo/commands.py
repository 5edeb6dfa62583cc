"""The host's commands (``train``, ``sample``, ``plugins``): registry keys resolved to objects,
then calls into the library. Flags are parsed in :mod:`ddo.arguments`."""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from . import memory, sampling
from .checkpoint import load_checkpoint
from .config import complete, resolve
from .errors import UserError, check_finite
from .options import flag, options_of, validate
from .paths import check_out_dir, check_out_file
from .train import CHECKPOINT, load_model, set_inference_dtype, train, training_resolutions
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


RUN_KEYS = ("out", "preset", "resume", "device", "no_progress", "download", "command")


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
    return complete({**load_checkpoint(ckpt)["config"], **flags})


def run_train(args: dict, host) -> int:
    check_out_dir(args["out"])
    device = resolve_device(args.get("device"))
    config = train_config(args, host)
    for res in training_resolutions(config):
        check_resolution(config, int(res), "--resolutions" if config.get("resolutions") else "--resolution")
    check_run_shape(config)
    check_training_memory(config, host, device)
    if args.get("download"):
        host.datasets.get(config["dataset"])(split="train", data_root=config["data_root"],
                                             resolution=config["resolution"], download=True)
    summary = train(config, host, args["out"], resume=bool(args.get("resume")), device=device,
                    progress=not args.get("no_progress"))
    print(f"trained {summary['step']} steps; last loss {summary['last_loss']:.4g}; run in {summary['out_dir']}")
    return 0


def check_resolution(config: dict, res: int, flag: str = "--resolution") -> None:
    """Refuse a grid the network cannot run on: an FNO-UNet halves the grid between its levels and
    needs at least 2x2 pixels on the coarsest, so ``res >= 2^len(ch_mult)``."""
    if config.get("model", "fno-unet") != "fno-unet":
        return
    levels = len(config.get("ch_mult") or [1])
    if res < 2 ** levels:
        raise UserError(f"{flag} {res} is too small for a network of {levels} level{'s' if levels > 1 else ''} "
                        f"(--ch-mult {','.join(map(str, config.get('ch_mult') or [1]))}): use {2 ** levels} or more")


def check_run_shape(config: dict) -> None:
    """Refuse, before anything is built or written, what would fail in the first step: a batch that
    does not split over the processes and ``--grad-accum``, and FNO-UNet modes that do not halve
    evenly over its levels."""
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    batch, accum = int(config["batch_size"]), int(config.get("grad_accum") or 1)
    if batch % world or (batch // world) % accum:
        raise UserError(f"--batch-size {batch} does not split into {world} process(es) x --grad-accum {accum} "
                        f"equal shards; use a multiple of {world * accum}")
    levels = len(config.get("ch_mult") or [1])
    modes = int(config.get("modes") or 1)
    if config.get("model", "fno-unet") == "fno-unet" and modes % 2 ** (levels - 1):
        raise UserError(f"--modes {modes} must be divisible by {2 ** (levels - 1)}: the modes halve at each of the "
                        f"{levels} levels of --ch-mult {','.join(map(str, config.get('ch_mult') or [1]))}")


def check_training_memory(config: dict, host, device: torch.device) -> None:
    """Refuse a run that cannot fit in memory, before anything is built: a training step (the
    activations of one shard, ``--batch-size`` over the processes and ``--grad-accum``, at
    ``--resolution`` with autograd; the weights with their EMA, gradients and optimizer moments, set by
    ``--ch``, ``--ch-mult``, ``--modes``, ``--num-res-blocks`` and a plugin's integer architecture
    options, each counted as one dense layer and one feature map of that width), and the preview
    samples drawn at the end (``--num-sample`` rows in one call)."""
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    accum = max(1, int(config.get("grad_accum") or 1))
    res, channels = max(training_resolutions(config)), int(config.get("channels") or 3)
    res_flag = "--resolutions" if config.get("resolutions") else "--resolution"
    widths = {o.name: o.flag for o in options_of(host) if o.kind == "architecture" and o.name in config
              and isinstance(config[o.name], int) and not isinstance(config[o.name], bool)}
    sizes = {"ch": "--ch", "modes": "--modes", "num_res_blocks": "--num-res-blocks"}

    def estimate(batch_size: int, resolution: int, **sized) -> float:
        net = {**config, **{k: v for k, v in sized.items() if k in sizes}}
        rows = max(1, -(-batch_size // (world * accum)))
        extra = sum(4.0 * 6 * w * w + memory.network_bytes({"ch": w, "channels": 1}, rows, resolution, training=True)
                    for k, w in sized.items() if k in widths)
        return (memory.network_bytes(net, rows, resolution, training=True)
                + memory.images_bytes(batch_size // world, channels, resolution, copies=4)
                + 4 * 6 * memory.parameters_at_least(net) + extra)  # weights, EMA, gradients, Adam moments, a copy

    knobs = [memory.Knob("batch_size", "--batch-size", int(config["batch_size"]), hint=" (or raise --grad-accum)"),
             memory.Knob("resolution", res_flag, res)]
    knobs += [memory.Knob(k, f, int(config.get(k) or 1)) for k, f in sizes.items()]
    knobs += [memory.Knob(k, f, int(config[k])) for k, f in widths.items()]
    memory.guard(f"a training step of {config['batch_size']} images at {res}x{res}", estimate, knobs, device,
                 others=("--ch-mult",))
    if config.get("num_sample"):
        res = int(config["resolution"])  # the preview's
        memory.guard(f"the {config['num_sample']} preview samples at {res}x{res}",
                     lambda num_sample: (memory.network_bytes(config, num_sample, res)
                                         + memory.images_bytes(num_sample, channels, res, copies=8)),
                     [memory.Knob("num_sample", "--num-sample", int(config["num_sample"]))], device)


# ``--precision auto`` on a CPU with native bf16: bf16 only when the probe below runs at least this much
# faster in it (the probe's own noise is a few percent; a tie keeps fp32, whose numbers are exact).
BF16_MIN_SPEEDUP = 1.1
_BF16_PAYS: dict[str, bool] = {}


def native_bf16_cpu() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX); without it bf16 is emulated and slower."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_pays(device: torch.device, probe=None) -> bool:
    """Whether bf16 inference is the faster path on ``device``: CUDA with bf16; on a CPU with native bf16
    arithmetic (AVX512-BF16 or AMX), what :func:`bf16_probe` measures (once per process; ``probe``
    replaces it in tests); never on a CPU without, where bf16 is emulated."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not native_bf16_cpu():
        return False
    if "cpu" not in _BF16_PAYS:
        _BF16_PAYS["cpu"] = (probe or bf16_probe)() >= BF16_MIN_SPEEDUP
    return _BF16_PAYS["cpu"]


def bf16_probe(rows: int = 32, repeat: int = 3) -> float:
    """fp32 time over bf16 time of a residual block of the inference path at the seed model's widths
    (64 channels, 32x32, spectral layers with 16 modes): its spectral transforms, mode mixing, 1x1
    convolutions and SiLU, ``rows`` images per call, the median of ``repeat`` calls after one."""
    import statistics
    import time

    from .models.fno_unet import ResBlock

    block = ResBlock(64, 128, 256, 16, 0.0, None, False).eval()
    x, temb = torch.randn(rows, 64, 32, 32), torch.randn(rows, 256)
    seconds = {}
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            set_inference_dtype(block, dtype)  # the spectral layers' transforms and mixing
            block.to(dtype)
            times = []
            for _ in range(repeat + 1):
                t0 = time.perf_counter()
                block(x.to(dtype), temb.to(dtype))
                times.append(time.perf_counter() - t0)
            seconds[dtype] = statistics.median(times[1:])
    return seconds[torch.float32] / seconds[torch.bfloat16]


def inference_dtype(bf16, device: torch.device, fix: str = "--bf16: {}; drop the flag"):
    """``torch.bfloat16`` or ``None`` (fp32) for inference. ``bf16``: ``True`` (asked; refused on a CPU without
    native bf16 arithmetic, where it would be slower, with ``fix`` formatted with the reason), ``False``,
    or ``"auto"``: bf16 where it pays (:func:`bf16_pays`)."""
    if bf16 == "auto":
        return torch.bfloat16 if bf16_pays(device) else None
    if not bf16:
        return None
    if device.type == "cpu" and not native_bf16_cpu():
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


def run_sample(args: dict, host) -> int:
    if not str(args["out"]).lower().endswith(".png"):
        raise UserError(f"--out must name a .png file, got {args['out']}")
    check_out_file(args["out"], suffix=".png")
    device = resolve_device(args.get("device"))
    gen_sde, wrapper, config = load_model(args["checkpoint"], host, device, x0_clip=args.get("x0_clip"))
    if wrapper.needs_inputs:
        raise UserError(f"{args['checkpoint']} is a conditional model ({config['conditioning']}); it cannot be "
                        "sampled without its inputs (see `ddo plugins` for the commands that provide them)")
    key, step, steps = sampling_choice(host, config, args.get("sampler"), args.get("steps"))
    res = args.get("resolution") or config["resolution"]
    check_resolution(config, res)
    check_sampling_memory(config, args["num"], res, device)
    set_inference_dtype(gen_sde.network, inference_dtype(bool(args.get("bf16")), device))
    g = torch.Generator(device=device).manual_seed(args["seed"])
    x = sampling.sample(gen_sde, (args["num"], config["channels"], res, res), num_steps=steps,
                        sampler=step, generator=g, progress=not args["no_progress"], device=device)
    fix = ("nothing was written; train the model longer" if config["parameterization"] != "eps" else
           "nothing was written; train longer, sample with --x0-clip floor, or train with --parameterization x0")
    check_finite(x, f"the {args['num']} samples at {res}x{res} ({steps} {key} steps, --x0-clip {config['x0_clip']})",
                 fix)
    save_grid(x.clamp(-1, 1), args["out"], nrow=max(1, int(math.sqrt(args["num"]))))
    print(f"wrote {args['num']} samples at {res}x{res} to {args['out']}")
    return 0


def check_sampling_memory(config: dict, num: int, res: int, device: torch.device) -> None:
    """Refuse ``ddo sample`` requests that cannot fit: every sample is drawn in one network call, so
    the activations of ``--num`` rows at ``--resolution``, the samples and the sampler's per-mode
    arithmetic, and the PNG grid."""
    channels = int(config.get("channels") or 3)

    def estimate(num: int, resolution: int) -> int:
        return (memory.network_bytes(config, num, resolution)
                + memory.images_bytes(num, channels, resolution, copies=8))

    memory.guard(f"{num} samples at {res}x{res}", estimate,
                 [memory.Knob("num", "--num", num), memory.Knob("resolution", "--resolution", res)], device)


def run_plugins(args: dict, host) -> int:
    print("plugins:")
    for name in host.plugin_names():
        print(f"  {name}")
    for kind, registry in host.registries.items():
        print(f"{kind}:")
        for key in registry.keys():
            defaults = registry.defaults(key)
            note = f"  (defaults: {' '.join(f'{flag(k)} {v}' for k, v in defaults.items())})" if defaults else ""
            print(f"  {key:<24} {registry.provider(key)}{note}")
    return 0

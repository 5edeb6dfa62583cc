"""The ``ddo`` command. Parses flags, then calls library functions; it computes nothing itself.

Sub-commands come from the command registry (``train``, ``sample``, ``plugins`` and whatever
plugins add). Bad input is reported as one line on stderr with exit code 2.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch

from .config import LR_SCHEDULES
from .errors import UserError
from .registry import DuplicateKeyError, UnknownKeyError


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``ddo train: error: ...``), exit code 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,2, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,2, got {text!r}")
    return values


def _int_at_least(lowest: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {value}")
        return value

    parse.__name__ = f"{what} integer"
    return parse


positive_int = _int_at_least(1, "positive")
nonneg_int = _int_at_least(0, "non-negative")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def bool_flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def norm_type(text: str):
    if text.lower() in ("none", "identity"):
        return "none"
    if text == "group":
        return text
    raise argparse.ArgumentTypeError(f"unknown norm {text!r}; known: none, group")


def resolve_device(name: str | None) -> torch.device:
    name = name or "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was given but no CUDA device is available; use --device cpu")
    return device


def add_train_parser(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--out", required=True, help="run directory (config, checkpoint, logs, samples)")
    g.add_argument("--preset", help="seed (the spec's CIFAR-10 model) or cpu-small; explicit flags override it")
    g.add_argument("--iterations", type=positive_int, help="number of optimisation steps")
    g.add_argument("--minutes", type=positive_float, help="wall-clock budget in minutes")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    g.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", help="dataset key (see `ddo plugins`); default natural-patches")
    g.add_argument("--data-root", help="folder of the dataset (cifar10, image-folder)")
    g.add_argument("--resolution", type=positive_int)
    g.add_argument("--num-workers", type=nonneg_int)
    g = parser.add_argument_group("network")
    g.add_argument("--model", help="network key; default fno-unet")
    g.add_argument("--ch", type=positive_int)
    g.add_argument("--ch-mult", type=int_list)
    g.add_argument("--num-res-blocks", type=positive_int)
    g.add_argument("--modes", type=positive_int)
    g.add_argument("--use-pos", type=bool_flag, nargs="?", const=True)
    g.add_argument("--use-pointwise-op", type=bool_flag, nargs="?", const=True)
    g.add_argument("--norm", type=norm_type)
    g.add_argument("--dropout", type=float)
    g = parser.add_argument_group("diffusion")
    g.add_argument("--ns-method", help="noise schedule: vp_cosine")
    g.add_argument("--disp-method", help="blur schedule: linear, sine or log")
    g.add_argument("--sigma-blur-min", type=float)
    g.add_argument("--sigma-blur-max", type=float, help="0 gives the non-blurring LinearDiffusion")
    g.add_argument("--gp-type", help="noise field: independent or exponential")
    g.add_argument("--gp-exponent", type=positive_float)
    g.add_argument("--gp-length-scale", type=positive_float)
    g.add_argument("--gp-sigma", type=positive_float)
    g.add_argument("--timestep-sampler", help="uniform or low_discrepancy")
    g.add_argument("--weight-method", help="none or min-snr")
    g.add_argument("--loss", help="loss key (see `ddo plugins`); default dsm")
    g.add_argument("--conditioning", help="model wrapper key (see `ddo plugins`); default none")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=positive_int, help="global batch (all processes together)")
    g.add_argument("--grad-accum", type=positive_int, help="split each process's batch into N shards "
                   "(the same gradient with less memory: the seed model at batch 128 peaks at 2.8 GB in parts of 32, "
                   "about 5 GB at once)")
    g.add_argument("--bf16", action="store_true", default=None,
                   help="run the network under bf16 autocast (its spectral transforms and mode mixing stay fp32)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    g.add_argument("--lr", type=positive_float)
    g.add_argument("--grad-clip", type=float)
    g.add_argument("--ema-decay", type=float)
    g.add_argument("--warmup", type=nonneg_int)
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="constant (default) or cosine decay to 0 over --iterations or the --minutes budget")
    g.add_argument("--seed", type=nonneg_int)
    g.add_argument("--ckpt-every", type=positive_int)
    g.add_argument("--log-every", type=positive_int)
    g.add_argument("--sample-every", type=positive_int)
    g.add_argument("--num-sample", type=nonneg_int, help="samples drawn at the end (0: none)")
    g.add_argument("--sample-steps", type=positive_int)
    g.add_argument("--sampler", help="sampler key for previews")
    host = parser.get_default("_host")
    if host is not None:
        host.pm.hook.add_train_arguments(parser=parser.add_argument_group("plugins"))


RUN_KEYS = ("out", "preset", "resume", "device", "no_progress", "command", "_host")


def train_config(args: dict, host) -> dict:
    """The configuration of a ``ddo train`` invocation (defaults < preset < flags)."""
    from .config import resolve

    flags = {k: v for k, v in args.items() if k not in RUN_KEYS}
    config = resolve(flags, args.get("preset"))
    for key in ("norm", "weight_method"):  # the word "none" on the command line means None
        if config.get(key) in ("none", "None"):
            config[key] = None
    for key in ("loss", "conditioning", "dataset", "model", "sampler"):
        registry = {"loss": host.losses, "conditioning": host.model_wrappers, "dataset": host.datasets,
                    "model": host.models, "sampler": host.samplers}[key]
        registry.get(config[key])
    return config


def run_train(args: dict) -> int:
    from .train import train

    host = args["_host"]
    device = resolve_device(args.get("device"))
    if args.get("resume"):
        from pathlib import Path

        from .checkpoint import load_checkpoint
        from .train import CHECKPOINT

        ckpt = Path(args["out"]) / CHECKPOINT
        if not ckpt.exists():
            raise UserError(f"--resume given but {ckpt} does not exist")
        saved = load_checkpoint(ckpt)["config"]
        given = {k: v for k, v in args.items() if k not in RUN_KEYS and v is not None}
        config = {**saved, **given}
    else:
        config = train_config(args, host)
    summary = train(config, host, args["out"], resume=bool(args.get("resume")), device=device,
                    progress=not args.get("no_progress"))
    print(f"trained {summary['step']} steps; last loss {summary['last_loss']:.4g}; run in {summary['out_dir']}")
    return 0


def add_sample_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="RUN_DIR/checkpoint.pt")
    parser.add_argument("--num", type=positive_int, default=16, help="number of samples")
    parser.add_argument("--resolution", type=positive_int, help="default: the training resolution")
    parser.add_argument("--steps", type=positive_int, default=250)
    parser.add_argument("--sampler", default="denoise", help="denoise, euler-maruyama, ddim, ...")
    parser.add_argument("--seed", type=nonneg_int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", required=True, help="PNG file for the grid")
    parser.add_argument("--no-progress", action="store_true")


def run_sample(args: dict) -> int:
    from . import sampling
    from .train import load_model
    from .visual import save_grid

    host = args["_host"]
    if not str(args["out"]).lower().endswith(".png"):
        raise UserError(f"--out must name a .png file, got {args['out']}")
    sampler = host.samplers.get(args["sampler"])
    device = resolve_device(args.get("device"))
    gen_sde, wrapper, config = load_model(args["checkpoint"], host, device)
    if config.get("conditioning", "none") != "none":
        raise UserError(f"{args['checkpoint']} is a conditional model ({config['conditioning']}); "
                        "use `ddo reconstruct` to sample it from context")
    res = args.get("resolution") or config["resolution"]
    g = torch.Generator(device=device).manual_seed(args["seed"])
    x = sampling.sample(gen_sde, (args["num"], config["channels"], res, res), num_steps=args["steps"],
                        sampler=sampler, generator=g, progress=not args["no_progress"], device=device)
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


def build_parser(host) -> Parser:
    parser = Parser(prog="ddo", description="Denoising diffusion operators: train, sample, and plugins.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in host.commands.keys():
        add_arguments, run, help_text = host.commands.get(name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_run=run, _host=host)
        add_arguments(p)
    return parser


def main(argv=None) -> int:
    from .allocator import tune_malloc
    from .plugins import load_host

    try:
        tune_malloc()
        host = load_host()
        parser = build_parser(host)
        try:
            args = vars(parser.parse_args(argv))
        except SystemExit as e:  # --help (0) or a usage error (2), already printed
            return int(e.code or 0)
        run = args.pop("_run")
        return run(args)
    except (UserError, UnknownKeyError, DuplicateKeyError) as e:
        print(f"ddo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddo: interrupted", file=sys.stderr)
        return 130

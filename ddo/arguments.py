"""Argument parsing for the host's commands: flag types and the flags of ``train`` and ``sample``.

Parsing only: the commands themselves are in :mod:`ddo.commands`. Flags default to ``None`` so
that an unset flag never overrides a preset, a saved configuration or a declared default.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from .config import CROP_SCALES, LR_SCHEDULES
from .diffusion import PARAMETERIZATIONS, X0_CLIPS
from .errors import one_line
from .options import options_of

X0_CLIP_CHOICES = ("auto",) + X0_CLIPS
X0_CLIP_HELP = ("how every sampler step bounds the network's x0 estimate: auto (clip for eps networks, none for "
                "x0 and v), none, clip (to the data range [-1, 1]), dynamic (Imagen's dynamic thresholding) or floor "
                "(the blur factor of alpha_t floored where an eps network's estimate divides by it; see README)")

BF16_INFERENCE_HELP = ("network in bf16 (its trunk, spectral transforms and mode mixing; the lifting layer, the "
                       "conditioning wrapper and the sampler's arithmetic stay fp32), where the hardware computes "
                       "bf16 natively")


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``ddo train: error: ...``), exit code 2."""

    def error(self, message):
        print(one_line(f"{self.prog}: error: {message}"), file=sys.stderr)
        raise SystemExit(2)


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,2, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,2, got {text!r}")
    return values


def resolution_list(text: str) -> list[int]:
    """``--resolutions``: distinct positive integers, comma-separated (``32,64``)."""
    values = int_list(text)
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct resolutions like 32,64, got {text!r}")
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

SEED_LIMIT = 2 ** 63  # torch's generators take a signed 64-bit seed


def seed_int(text: str) -> int:
    """A seed: an integer in ``[0, 2^63)``."""
    value = nonneg_int(text)
    if value >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a seed below 2^63, got {value}")
    return value


def workers_int(text: str) -> int:
    """Data loader worker processes: 0 to twice the CPU count (each is a copy of this process)."""
    value = nonneg_int(text)
    most = 2 * (os.cpu_count() or 1)
    if value > most:
        raise argparse.ArgumentTypeError(f"expected at most {most} worker processes (twice the {os.cpu_count()} "
                                         f"CPUs), got {value}")
    return value


def _float_in(lowest: float, highest: float, what: str, below_highest: bool = False):
    """A flag type: a finite number in ``[lowest, highest]`` (``highest`` excluded with ``below_highest``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and lowest <= value <= highest) or (below_highest and value == highest):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = what
    return parse


nonneg_float = _float_in(0.0, math.inf, "a finite number of at least 0")
probability = _float_in(0.0, 1.0, "a number in [0, 1)", below_highest=True)
unit_interval = _float_in(0.0, 1.0, "a number in [0, 1]")


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


def add_train_parser(parser: argparse.ArgumentParser, host=None) -> None:
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
    g.add_argument("--download", action="store_true", default=None,
                   help="fetch the dataset into --data-root first (cifar10; checksum verified)")
    g.add_argument("--resolution", type=positive_int,
                   help="training resolution (default 32); with --resolutions, the one of them that commands "
                   "reading the checkpoint use by default")
    g.add_argument("--resolutions", type=resolution_list,
                   help="train at several resolutions in one run, e.g. 32,64: every batch holds one size and the "
                   "sizes take turns step by step (natural-patches, navier-stokes, darcy, image-folder); default: "
                   "--resolution only, or the first listed when --resolution is not given")
    g.add_argument("--channels", type=positive_int, help="image channels (default 3; 1 for navier-stokes and darcy)")
    g.add_argument("--num-workers", type=workers_int)
    g.add_argument("--crop-scales", choices=CROP_SCALES,
                   help="natural-patches training crops: 'fixed' (three sizes, the default) or 'continuous' "
                   "(random scales, area-resampled, new crops every epoch)")
    _add_model_flags(parser)
    _add_optimisation_flags(parser)
    if host is not None:
        add_option_flags(parser.add_argument_group("plugin options"), options_of(host))


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("network")
    g.add_argument("--model", help="network key; default fno-unet")
    g.add_argument("--ch", type=positive_int)
    g.add_argument("--ch-mult", type=int_list)
    g.add_argument("--num-res-blocks", type=positive_int)
    g.add_argument("--modes", type=positive_int)
    g.add_argument("--use-pos", type=bool_flag, nargs="?", const=True)
    g.add_argument("--use-pointwise-op", type=bool_flag, nargs="?", const=True)
    g.add_argument("--norm", type=norm_type)
    g.add_argument("--dropout", type=probability)
    g = parser.add_argument_group("diffusion")
    g.add_argument("--ns-method", help="noise schedule: vp_cosine")
    g.add_argument("--disp-method", help="blur schedule: linear, sine or log")
    g.add_argument("--sigma-blur-min", type=nonneg_float)
    g.add_argument("--sigma-blur-max", type=nonneg_float, help="0 gives the non-blurring LinearDiffusion")
    g.add_argument("--gp-type", help="noise field: independent or exponential")
    g.add_argument("--gp-exponent", type=positive_float)
    g.add_argument("--gp-length-scale", type=positive_float)
    g.add_argument("--gp-sigma", type=positive_float)
    g.add_argument("--timestep-sampler", help="uniform or low_discrepancy")
    g.add_argument("--weight-method", help="none or min-snr")
    g.add_argument("--parameterization", choices=PARAMETERIZATIONS,
                   help="what the network predicts: eps, x0 or v (see DenoisingDiffusion); default eps, or the "
                   "one the conditioning key declares (see `ddo plugins`)")
    g.add_argument("--x0-clip", choices=X0_CLIP_CHOICES, help=X0_CLIP_HELP)
    g.add_argument("--loss", help="loss key (see `ddo plugins`); default dsm, or the one the conditioning key "
                   "declares")
    g.add_argument("--conditioning", help="model wrapper key (see `ddo plugins`); default none")


def _add_optimisation_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=positive_int, help="global batch (all processes together)")
    g.add_argument("--grad-accum", type=positive_int, help="split each process's batch into N shards "
                   "(the same gradient with less peak memory)")
    g.add_argument("--bf16", action="store_true", default=None,
                   help="run the network under bf16 autocast (its spectral transforms and mode mixing stay fp32)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    g.add_argument("--lr", type=positive_float)
    g.add_argument("--grad-clip", type=nonneg_float, help="largest gradient norm (0: no clipping)")
    g.add_argument("--ema-decay", type=unit_interval)
    g.add_argument("--warmup", type=nonneg_int)
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="constant (default) or cosine decay to 0 over --iterations or the --minutes budget")
    g.add_argument("--seed", type=seed_int)
    g.add_argument("--ckpt-every", type=positive_int)
    g.add_argument("--log-every", type=positive_int)
    g.add_argument("--sample-every", type=positive_int)
    g.add_argument("--num-sample", type=nonneg_int, help="samples drawn at the end (0: none)")
    g.add_argument("--sample-steps", type=positive_int)
    g.add_argument("--sampler", help="sampler key for previews")


def add_option_flags(group, options) -> None:
    """One flag per declared :class:`~ddo.options.Option` (default ``None``: the host applies the
    declared default, so an unset flag never overrides a saved or preset value)."""
    for opt in options:
        scope = f"; for --conditioning {', '.join(opt.conditioning)}" if opt.conditioning else ""
        group.add_argument(opt.flag, type=opt.type, choices=opt.choices, dest=opt.name,
                           help=f"{opt.help} (default {opt.default}{scope})")


def add_sample_parser(parser: argparse.ArgumentParser, host=None) -> None:
    parser.add_argument("--checkpoint", required=True, help="RUN_DIR/checkpoint.pt")
    parser.add_argument("--num", type=positive_int, default=16, help="number of samples")
    parser.add_argument("--resolution", type=positive_int, help="default: the training resolution")
    parser.add_argument("--steps", type=positive_int,
                        help="default: the best measured count for the model's parameterisation (README)")
    parser.add_argument("--sampler", help="denoise, euler-maruyama, ddim, ...; default: the best measured "
                        "sampler for the model's parameterisation (README)")
    parser.add_argument("--x0-clip", choices=X0_CLIP_CHOICES, help=X0_CLIP_HELP + "; default: the checkpoint's")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--bf16", action="store_true", help=BF16_INFERENCE_HELP)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", required=True, help="PNG file for the grid")
    parser.add_argument("--no-progress", action="store_true")

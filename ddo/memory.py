"""Memory guards: what a request will need, estimated before anything is allocated, against what the
machine has.

A request whose size the flags set (resolution, rows per network call, samples, point counts) is
refused in one line when its estimate exceeds the available memory, with the estimate, what is
available and the flag to change (and how far), instead of being killed by the kernel halfway
through. The estimates are deliberately simple formulas calibrated on measured peaks (README:
"Combinations that cannot work"); they guard against requests that cannot fit, not against every
last byte.

Available memory: ``DDO_MEMORY_LIMIT`` when set (bytes, or a number with ``K``, ``M``, ``G`` or
``T``: what a request may use, for tests and shared machines); else the smallest of the kernel's
``MemAvailable``, the container's cgroup limit minus its usage and ``os.sysconf``'s available pages;
on a CUDA device, the device's free memory. When nothing can be read, nothing is refused.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import UserError

ENV = "DDO_MEMORY_LIMIT"
UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

# float32 values held per pixel of one row, per unit of the network's base width, at the peak of a call
# (measured for FNO-UNets of width 8 to 64 at 128x128 and 256x256 on CPU: 13-25 without autograd,
# 61-95 for a training step's forward and backward); the factors below leave a margin over them
INFERENCE_FLOATS_PER_WIDTH = 32
TRAINING_FLOATS_PER_WIDTH = 128
SAFETY = 1.25  # on the total, for what the formulas leave out (allocator slack, small temporaries)


def parse_size(text: str) -> int:
    """``"2G"`` -> 2147483648; a plain number is bytes."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
    if not m:
        raise UserError(f"{ENV}={text!r} is not a size; use bytes or a number with K, M, G or T, like 2G")
    return int(float(m.group(1)) * UNITS[m.group(2)])


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    """The cgroup's limit minus its usage (v2, then v1), or ``None`` without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 1 << 60:
                return None
            return max(0, int(limit) - int(Path(usage_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes(device=None) -> tuple[int | None, str]:
    """``(bytes, where the number comes from)``; ``(None, ...)`` when it cannot be known."""
    if os.environ.get(ENV):
        return parse_size(os.environ[ENV]), ENV
    if device is not None and getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info(device)[0]), f"free on {device}"
        except (RuntimeError, AssertionError):
            return None, "unknown"
    values = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    if not values:
        values = [v for v in (_sysconf_available(),) if v is not None]
    return (min(values), "available") if values else (None, "unknown")


def size_text(n: float) -> str:
    """Bytes as ``"1.5 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}" if n >= 1000 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"


@dataclass(frozen=True)
class Knob:
    """A flag that sets the size of a request: its name in the estimate, its text (``--resolution``,
    or ``"points in the CSV"``), its value, the smallest value it takes, and what else would do
    (``hint``, shown after the value to lower it to)."""

    name: str
    flag: str
    value: int
    smallest: int = 1
    hint: str = ""


def _largest_fitting(estimate: Callable[..., float], values: dict, knob: Knob, budget: int) -> int | None:
    """The largest value of ``knob`` (others as in ``values``) whose estimate fits ``budget``, or ``None``."""
    lo, hi = knob.smallest, knob.value
    if estimate(**{**values, knob.name: lo}) > budget:
        return None
    while hi - lo > 1:  # estimates grow with every knob
        mid = (lo + hi) // 2
        if estimate(**{**values, knob.name: mid}) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def guard(what: str, estimate: Callable[..., float], knobs: list[Knob], device=None, others: tuple = ()) -> int:
    """Refuse (:class:`UserError`, one line) a request whose ``estimate(**knob values)`` in bytes,
    times :data:`SAFETY`, exceeds the available memory, naming the estimate, what is available and, for
    each knob that alone would make it fit, the value to lower it to (or, when none alone would, the
    flags to lower together, with ``others``: flags that set sizes but are not knobs). Returns the
    estimate."""
    values = {k.name: int(k.value) for k in knobs}

    def total(**kw) -> float:
        return SAFETY * float(estimate(**kw))

    need = total(**values)
    avail, source = available_bytes(device)
    if avail is None or need <= avail:
        return int(need) if math.isfinite(need) else 0
    fixes = []
    for knob in knobs:
        if knob.value <= knob.smallest:
            continue
        best = _largest_fitting(total, values, knob, avail)
        if best is not None:
            fixes.append(f"{knob.flag} to {best:,} or less{knob.hint}")
    flags = [k.flag for k in knobs if k.value > k.smallest] + list(others)
    if fixes:
        fix = "lower " + " or ".join(fixes)
    elif flags:
        fix = f"no one flag is enough: lower several of {', '.join(flags)}"
    else:
        fix = "use a machine with more memory"
    where = f"{size_text(avail)} {source}" if source != ENV else f"the {size_text(avail)} that {ENV} allows"
    raise UserError(f"{what} needs about {size_text(need)} of memory, more than {where}; {fix}")


# --- estimates (bytes) ---------------------------------------------------------------------------
def _sizes(config: dict) -> tuple[int, list[int], int, int] | None:
    """``(ch, ch_mult, num_res_blocks, modes)`` of a configuration, or ``None`` when unreadable."""
    try:
        mult = [max(1, int(m)) for m in (config.get("ch_mult") or [1])]
        return (max(1, int(config.get("ch") or 64)), mult or [1], max(1, int(config.get("num_res_blocks") or 1)),
                max(1, int(config.get("modes") or 1)))
    except (TypeError, ValueError, OverflowError):
        return None


def _width(config: dict) -> float:
    """Channels of the network's activations per pixel of the input grid: level ``l`` holds
    ``ch * ch_mult[l]`` channels on a grid ``4^l`` times smaller."""
    sizes = _sizes(config)
    if sizes is None:
        return 64.0
    ch, mult = sizes[0], sizes[1]
    return sum(ch * m / 4.0 ** level for level, m in enumerate(mult))


def parameters_at_least(config: dict) -> float:
    """A lower bound on the parameters of the FNO-UNet a configuration describes, from its sizes
    alone (nothing is built): the time embedding's ``20 ch^2``, the lifting and output convolutions'
    ``channels x ch`` each and, per level and block, one spectral convolution (``modes x (modes // 2 +
    1)`` complex weights per channel pair on the first level, at least one on the others). 0 for other
    models or unreadable sizes."""
    sizes = _sizes(config)
    if config.get("model", "fno-unet") != "fno-unet" or sizes is None:
        return 0.0
    ch, mult, nrb, modes = sizes
    channels = config.get("channels")
    channels = channels if isinstance(channels, int) and not isinstance(channels, bool) and channels > 0 else 1
    first = float(ch * mult[0]) ** 2 * modes * (modes // 2 + 1) * 2
    rest = sum(float(ch * m) ** 2 * 2 for m in mult[1:])
    return 20.0 * ch * ch + 2.0 * channels * ch + nrb * (first + rest)


def network_bytes(config: dict, rows: int, res: int, training: bool = False) -> float:
    """Peak activations of one network call on ``rows`` images of ``res x res`` (with autograd when
    ``training``): :data:`INFERENCE_FLOATS_PER_WIDTH` (or the training figure) float32 values per
    pixel and unit of width, and the inputs, conditioning features and outputs beside them."""
    per_width = TRAINING_FLOATS_PER_WIDTH if training else INFERENCE_FLOATS_PER_WIDTH
    channels = max(1, int(config.get("channels") or 3))
    floats = _width(config) * per_width + 16 * (channels + 8)
    return 4.0 * rows * res * res * floats


def images_bytes(images: int, channels: int, res: int, copies: int = 1) -> int:
    """``copies`` float32 arrays of ``images`` images."""
    return 4 * copies * images * channels * res * res


def sampling_rows(images: int, rows: int, samples: int) -> tuple[int, int]:
    """``(images per batch, rows per network call)`` when ``samples`` samples of each of ``images`` images
    are drawn ``rows`` rows at a time: a batch holds up to ``rows`` images, and a call as many samples
    of each as fit in ``rows``."""
    batch = max(1, min(rows, images))
    return batch, batch * max(1, min(samples, rows // batch))


__all__ = ["available_bytes", "guard", "parameters_at_least", "Knob", "network_bytes", "images_bytes", "sampling_rows", "parse_size",
           "size_text", "ENV"]

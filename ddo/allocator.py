"""Process-wide tuning of glibc's malloc for CPU training and sampling.

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold (at most
32 MiB on 64-bit Linux) with fresh ``mmap`` calls and unmaps them on ``free``, so every large
activation, gradient or FFT work buffer of every step is page-faulted in again, and the heap is
trimmed back to the system whenever its free top exceeds 128 KiB. For networks whose activations
pass that size (the seed FNO-UNet's spectra at batch 32) this is a large share of a training step
(benchmarks/README.md has the measurement). With mmap disabled and trimming off, freed
blocks stay in the heap and are reused: resident memory stays at the peak of one step, which is
what a training process holds anyway.

The ``ddo`` command calls :func:`tune_malloc` on start (``ddo.cli.main(tune_allocator=True)``);
``DDO_MALLOC=default`` leaves malloc alone. Importing ``ddo`` or calling ``ddo.cli.main`` from
Python changes nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1   # mallopt parameters (malloc.h)
M_MMAP_MAX = -4
ENV = "DDO_MALLOC"

_state = {"tuned": False}


def tune_malloc(env: dict | None = None) -> bool:
    """Turn off glibc's mmap for large blocks and heap trimming. Returns whether it did: ``False``
    off Linux/glibc or when ``DDO_MALLOC=default``. Idempotent; affects later allocations only."""
    env = os.environ if env is None else env
    choice = env.get(ENV, "tuned").strip().lower()
    if choice == "default" or not sys.platform.startswith("linux"):
        return False
    if choice != "tuned":
        from .errors import UserError

        raise UserError(f"{ENV}={env.get(ENV)!r} is not understood; use {ENV}=tuned or {ENV}=default")
    if _state["tuned"]:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # -1 disables trimming (mallopt(3)); both calls return 1 on success
    _state["tuned"] = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))
    return _state["tuned"]

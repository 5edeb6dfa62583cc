"""PDE datasets whose samples are the two fields of one solution: the input and the solution.

- ``navier-stokes-pair``: channel 0 the initial vorticity ``w0``, channel 1 the vorticity ``w1`` at
  ``T = 1`` (:func:`navier_stokes_pair`), 400 train and 50 test pairs;
- ``darcy-pair``: channel 0 the coefficient ``a`` (12 or 3), channel 1 the pressure ``u``
  (:func:`ddo.api.darcy_fields`), 1,000 train and 50 test pairs.

Both are generated at 128x128, the grid of the published PDE reconstruction benchmarks (500 observed
points per field), cached on disk, and area-downsampled to 64 or 32. In the model's units each
channel is ``(field - offset) / scale`` (:data:`PAIR_UNITS`); ``field`` records how to undo it, so
errors are measured on the physical fields.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch
from ddo.api import (DARCY_DEFAULTS, FieldImages, NavierStokes2d, UserError, area_downsample, cache_dir, darcy_fields,
                     ns_forcing, periodic_grf, progress_bar, sample_generator)

PAIR_KINDS = ("navier-stokes-pair", "darcy-pair")
PAIR_SIZES = {"navier-stokes-pair": (400, 50), "darcy-pair": (1000, 50)}  # (train, test) pairs
PAIR_NATIVE = 128
PAIR_SEED = 1
# (offset, scale) per channel: model units = (field - offset) / scale, chosen so that the generated
# fields stay inside [-1, 1] (Darcy's coefficient maps to exactly -1 and 1)
PAIR_UNITS = {"navier-stokes-pair": ((0.0, 1.2), (0.0, 1.2)),
              "darcy-pair": ((7.5, 4.5), (0.0075, 0.009))}
NS_PAIR_DEFAULTS = {"visc": 1e-3, "t_end": 1.0, "dt": 1e-3, "resolution": 128, "alpha": 2.5, "tau": 7.0,
                    "sigma": 7.0**1.5}
PAIR_CHANNELS = {"navier-stokes-pair": ("w0", "w1"), "darcy-pair": ("a", "u")}


def navier_stokes_pair(seed: int, indices, **params) -> tuple[np.ndarray, np.ndarray]:
    """``(w0, w1)``, each ``(len(indices), resolution, resolution)`` float32: the initial vorticity and the
    vorticity at ``t_end`` (the setting of the published PDE benchmarks: ``T = 1``); the initial field in
    float64, the time stepping in float32 (relative difference from float64 stepping about 4e-5).
    ``params``: any of :data:`NS_PAIR_DEFAULTS`, which gives the others."""
    unknown = set(params) - set(NS_PAIR_DEFAULTS)
    if unknown:
        raise TypeError(f"navier_stokes_pair got unknown parameters {sorted(unknown)}")
    p = {**NS_PAIR_DEFAULTS, **params}
    n = p["resolution"]
    gens = [sample_generator(seed, int(i)) for i in indices]
    w0 = periodic_grf(gens, n, p["alpha"], p["tau"], p["sigma"])
    w1 = NavierStokes2d(n, p["visc"], p["dt"], ns_forcing(n), dtype=torch.float32).solve(w0, p["t_end"])
    return w0.float().numpy(), w1.float().numpy()


def _generate(kind: str, indices) -> np.ndarray:
    if kind == "navier-stokes-pair":
        w0, w1 = navier_stokes_pair(PAIR_SEED, indices, **NS_PAIR_DEFAULTS)
        return np.stack([w0, w1], 1)
    u, a = darcy_fields(PAIR_SEED, indices, **{**DARCY_DEFAULTS, "resolution": PAIR_NATIVE})
    return np.stack([a, u], 1)


def generate_pairs(kind: str, count: int, start: int = 0, progress: bool = False) -> np.ndarray:
    """``count`` raw pairs ``(count, 2, 128, 128)`` float32 of ``kind``, indices ``start..``; cached on
    disk keyed by the kind, the solver's parameters and the index range."""
    params = NS_PAIR_DEFAULTS if kind == "navier-stokes-pair" else DARCY_DEFAULTS
    key = hashlib.sha256(json.dumps([kind, PAIR_SEED, PAIR_NATIVE, params, start, count],
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "fields" / f"{kind}_{start}_{count}_{key}.npy"
    if path.exists():
        return np.load(path)
    chunks, chunk = [], 8
    for lo in progress_bar(range(start, start + count, chunk), desc=f"generate {kind}", enabled=progress):
        chunks.append(_generate(kind, range(lo, min(lo + chunk, start + count))))
    out = np.concatenate(chunks).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return out


def _affine(kind: str, x):
    """``(offset, scale)`` of each channel of ``kind``, shaped ``(2, 1, 1)`` like ``x`` (array or tensor)."""
    off, sc = np.array(PAIR_UNITS[kind], dtype=np.float32).T.reshape(2, 2, 1, 1)
    if torch.is_tensor(x):
        return (torch.as_tensor(off, dtype=x.dtype, device=x.device), torch.as_tensor(sc, dtype=x.dtype, device=x.device))
    return off, sc


def to_units(kind: str, x: np.ndarray | torch.Tensor):
    """Physical fields ``(..., 2, H, W)`` in the model's units."""
    off, sc = _affine(kind, x)
    return (x - off) / sc


def to_physical(kind: str, x: np.ndarray | torch.Tensor):
    """Fields ``(..., 2, H, W)`` in the model's units back in physical units."""
    off, sc = _affine(kind, x)
    return x * sc + off


def load_pairs(kind: str, split: str, resolution: int = 64, progress: bool = True, limit: int | None = None) -> FieldImages:
    """The ``split`` of ``kind`` (train indices ``0..n_train``, test after them) at ``resolution``
    (128, 64 or 32; area averages of the 128x128 fields), in the model's units. ``limit``: only the
    first pairs of the split (generated and cached on their own)."""
    if kind not in PAIR_KINDS:
        raise UserError(f"unknown field pair {kind!r}; known: {', '.join(PAIR_KINDS)}")
    if split not in ("train", "test"):
        raise UserError(f"{kind} has splits 'train' and 'test', not {split!r}")
    if resolution not in (32, 64, 128):
        raise UserError(f"{kind} is generated at 128x128; --resolution must be 32, 64 or 128, got {resolution}")
    n_train, n_test = PAIR_SIZES[kind]
    start, count = (0, n_train) if split == "train" else (n_train, n_test)
    if limit is not None:
        count = min(count, limit)
    raw = area_downsample(generate_pairs(kind, count, start, progress), resolution)
    field = {"name": kind, "channels": list(PAIR_CHANNELS[kind]), "units": [list(u) for u in PAIR_UNITS[kind]],
             "signed": kind == "navier-stokes-pair", "quantity": "/".join(PAIR_CHANNELS[kind]),
             "dihedral_invariant": kind == "darcy-pair", "pair": True,
             "periodic": kind == "navier-stokes-pair"}
    return FieldImages(to_units(kind, raw).astype(np.float32), start, field)


__all__ = ["PAIR_KINDS", "PAIR_SIZES", "PAIR_UNITS", "PAIR_CHANNELS", "NS_PAIR_DEFAULTS", "navier_stokes_pair",
           "generate_pairs", "load_pairs", "to_units", "to_physical"]

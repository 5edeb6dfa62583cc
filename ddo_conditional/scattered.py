"""``ddo reconstruct --points obs.csv``: a reconstruction from observations at any coordinates.

The CSV has a header with columns ``x`` and ``y`` and one column per image channel (any other
names, in order). Coordinates are in ``[0, 1]`` (``x`` along the width, ``y`` down the height),
or in pixels of a ``W x H`` extent (``--extent W,H``, pixel centres at ``i + 0.5``); values are
intensities in ``[0, 1]``, as in an image file.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch

from ddo.checkpoint import atomic_write
from ddo.errors import UserError
from ddo.visual import save_grid

from .evaluate import posterior_mean_one_call
from .points import point_context
from .reconstruct import reconstruct

MIN_POINTS = 4  # the thin-plate spline's affine part needs three points in general position, and one more


def parse_extent(text: str) -> tuple[float, float]:
    try:
        w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--extent takes W,H in pixels, like 640,480; got {text!r}") from None
    if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
        raise UserError(f"--extent needs a positive width and height, got {text!r}")
    return w, h


def read_points(path, channels: int, extent: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``coords (K, 2)`` in ``[0, 1]^2`` and ``values (K, channels)`` in ``[0, 1]`` from a CSV (module
    docstring); anything malformed is a :class:`UserError` naming the file, the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--points {path}: no such file")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = [c.strip() for c in rows[0]] if rows else []
    if "x" not in header or "y" not in header:
        raise UserError(f"{path}: the header needs columns x and y and one value column per channel; got {header}")
    value_cols = [i for i, name in enumerate(header) if name not in ("x", "y")]
    if len(value_cols) != channels:
        raise UserError(f"{path}: {len(value_cols)} value columns ({', '.join(header[i] for i in value_cols) or 'none'}) "
                        f"for a {channels}-channel model; give one column per channel")
    order = [header.index("x"), header.index("y")] + value_cols
    data = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            data.append([float(row[i]) for i in order])
        except (ValueError, IndexError):
            raise UserError(f"{path}, line {line}: expected {len(header)} numbers, got {row}") from None
    table = np.asarray(data, dtype=np.float64).reshape(-1, 2 + channels)
    return _checked(path, table, extent)


def _checked(path, table: np.ndarray, extent) -> tuple[np.ndarray, np.ndarray]:
    bad = ~np.isfinite(table).all(1)
    if bad.any():
        raise UserError(f"{path}: line {int(np.argmax(bad)) + 2} holds NaN or infinity; remove or fill it")
    if len(table) < MIN_POINTS:
        raise UserError(f"{path}: {len(table)} points; a reconstruction needs at least {MIN_POINTS}")
    coords = table[:, :2] / (np.asarray(extent) if extent else 1.0)
    outside = ((coords < 0) | (coords > 1)).any(1)
    if outside.any():
        i = int(np.argmax(outside))
        where = f"the extent {extent[0]:g}x{extent[1]:g}" if extent else "[0, 1] (or give --extent W,H for pixels)"
        raise UserError(f"{path}, line {i + 2}: point ({table[i, 0]:g}, {table[i, 1]:g}) lies outside {where}")
    values = table[:, 2:]
    if values.min() < 0 or values.max() > 1:
        raise UserError(f"{path}: values must be intensities in [0, 1]; found {values.min():g} to {values.max():g}")
    if len(np.unique(coords, axis=0)) < len(coords):
        raise UserError(f"{path}: two points share coordinates; keep one value per position")
    return coords.astype(np.float32), values.astype(np.float32)


def points_image(coords: np.ndarray, values: np.ndarray, res: int) -> torch.Tensor:
    """The observations drawn on a grey ``res x res`` canvas (each point a square of ~1/64 of the side),
    ``(C, res, res)`` in ``[0, 1]``."""
    c = values.shape[1]
    canvas = torch.full((c, res, res), 0.5)
    r = max(1, res // 128)
    for (x, y), v in zip(coords, values):
        col, row = min(res - 1, int(x * res)), min(res - 1, int(y * res))
        canvas[:, max(0, row - r):row + r + 1, max(0, col - r):col + r + 1] = torch.from_numpy(v)[:, None, None]
    return canvas


def run_points(args: dict, gen_sde, config: dict, step, key: str, device) -> int:
    """Reconstruct the ``--points`` CSV at ``--resolution`` and write mean, std and samples."""
    extent = parse_extent(args["extent"]) if args.get("extent") else None
    coords, values = read_points(args["points"], int(config["channels"]), extent)
    res = args.get("resolution") or config["resolution"]
    c = values.shape[1]
    pts = torch.from_numpy(coords)[None].to(device)
    kwargs = point_context(pts, torch.from_numpy(values * 2 - 1)[None].to(device),
                           torch.ones(1, len(coords), dtype=torch.bool, device=device), res, res)
    g = torch.Generator(device=device).manual_seed(args["seed"])
    shape = (1, c, res, res)
    out = reconstruct(gen_sde, kwargs, shape, num_steps=args["steps"], num_samples=args["num_samples"], generator=g,
                      sampler=step, progress=not args["no_progress"])
    one_call = gen_sde.parameterization in ("x0", "v")
    mean = posterior_mean_one_call(gen_sde, kwargs, shape, g, symmetrize=True) if one_call else out["mean"]
    arrays = {"mean": (mean[0] + 1) / 2, "std": out["std"][0] / 2, "samples": (out["samples"][:, 0] + 1) / 2}
    arrays = {k: v.clamp(0, 1) if k != "std" else v for k, v in arrays.items()}
    return _write_points(Path(args["out"]), arrays, coords, values, {
        "checkpoint": str(args["checkpoint"]), "points": str(args["points"]), "num_points": len(coords),
        "resolution": res, "sampler": key, "steps": args["steps"], "num_samples": args["num_samples"],
        "mean": "ddo-x0 (the network's t = 1 estimate, averaged over rotations and flips)" if one_call
        else "mean of the samples", "std": "the samples' own std (the stored calibration applies to grid contexts)",
        "extent": list(extent) if extent else None})


def _write_points(out: Path, arrays: dict, coords, values, record: dict) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        atomic_write(out / f"{name}.npy", lambda f, v=value: np.save(f, v.cpu().numpy().astype(np.float32)))
    res = arrays["mean"].shape[-1]
    std = arrays["std"].mean(0, keepdim=True)
    std = (std / std.max().clamp_min(1e-6)).expand_as(arrays["mean"])
    panels = torch.stack([points_image(coords, values, res), arrays["mean"].cpu(), std.cpu()])
    save_grid(panels, out / "reconstruction.png", nrow=3, value_range=(0.0, 1.0))
    save_grid(arrays["samples"].cpu(), out / "samples.png", nrow=len(arrays["samples"]), value_range=(0.0, 1.0))
    for name in ("mean", "std"):
        save_grid(panels[1 if name == "mean" else 2][None], out / f"{name}.png", nrow=1, value_range=(0.0, 1.0))
    atomic_write(out / "points.json", lambda f: f.write(json.dumps(record, indent=2).encode()))
    print(f"reconstructed {record['num_points']} points at {res}x{res}: wrote reconstruction.png (points, "
          f"posterior mean, std), mean/std/samples .png and .npy, points.json in {out}")
    return 0

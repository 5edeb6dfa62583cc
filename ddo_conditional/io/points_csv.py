"""The points CSV of ``ddo reconstruct --points``: a header with columns ``x`` and ``y`` and one column per
image channel (any other names, in order). Coordinates are in ``[0, 1]`` (``x`` along the width, ``y``
down the height), or in pixels of a ``W x H`` extent (``--extent W,H``, pixel centres at ``i + 0.5``);
values are intensities in ``[0, 1]``, as in an image file. Read, checked, refused in one line."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from ddo.api import UserError

MIN_POINTS = 4  # the thin-plate spline's affine part needs three points in general position, and one more
MIN_SEPARATION = 1e-6  # closest allowed pair, in units of the extent (float32 coordinates resolve ~6e-8)


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
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save the CSV as UTF-8") from None
    except csv.Error as e:
        raise UserError(f"{path} is not a readable CSV ({e}); write plain comma-separated numbers") from None
    except OSError as e:
        raise UserError(f"--points {path} cannot be read ({e.strerror})") from None
    header = [c.strip() for c in rows[0]] if rows else []
    if "x" not in header or "y" not in header:
        raise UserError(f"{path}: the header needs columns x and y and one value column per channel, separated by "
                        f"commas; got {_shown(header)}")
    if len(set(header)) < len(header):
        raise UserError(f"{path}: the header repeats a column name ({_shown(header)}); name each column once")
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
            raise UserError(f"{path}, line {line}: expected {len(header)} numbers, got {_shown(row)}") from None
    table = np.asarray(data, dtype=np.float64).reshape(-1, 2 + channels)
    return _checked(path, table, extent)


def _checked(path, table: np.ndarray, extent) -> tuple[np.ndarray, np.ndarray]:
    bad = ~np.isfinite(table).all(1)
    if bad.any():
        raise UserError(f"{path}: line {int(np.argmax(bad)) + 2} holds NaN or infinity; remove or fill it")
    if len(table) < MIN_POINTS:
        raise UserError(f"{path}: {len(table)} points; a reconstruction needs at least {MIN_POINTS}")
    with np.errstate(over="ignore"):  # a tiny extent sends points to infinity: refused below as outside it
        coords = table[:, :2] / (np.asarray(extent) if extent else 1.0)
    outside = ((coords < 0) | (coords > 1)).any(1)
    if outside.any():
        i = int(np.argmax(outside))
        where = f"the extent {extent[0]:g}x{extent[1]:g}" if extent else "[0, 1] (or give --extent W,H for pixels)"
        raise UserError(f"{path}, line {i + 2}: point ({table[i, 0]:g}, {table[i, 1]:g}) lies outside {where}")
    values = table[:, 2:]
    if values.min() < 0 or values.max() > 1:
        raise UserError(f"{path}: values must be intensities in [0, 1]; found {values.min():g} to {values.max():g}")
    coords32 = coords.astype(np.float32)  # the precision the model computes in
    if len(np.unique(coords32, axis=0)) < len(coords32):
        raise UserError(f"{path}: two points share coordinates; keep one value per position")
    gap = _closest_pair(coords)
    if gap < MIN_SEPARATION:
        raise UserError(f"{path}: two points are {gap:.2g} apart (in units of the extent), closer than "
                        f"{MIN_SEPARATION:g}: the spline through them is not defined in float precision; merge them")
    centred = coords - coords.mean(0)
    singular = np.linalg.svd(centred, compute_uv=False)
    if singular[-1] <= 1e-6 * max(singular[0], 1e-12):
        raise UserError(f"{path}: the points lie on one line; the spline needs points that span both directions")
    return coords32, values.astype(np.float32)


def _closest_pair(coords: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    d, _ = cKDTree(coords).query(coords, k=2)
    return float(d[:, 1].min())


def _shown(cells, limit: int = 80) -> str:
    """Cells of a CSV line for a message, cut to ``limit`` characters."""
    text = ",".join(str(c) for c in cells)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def count_rows(path) -> int:
    """The number of lines of a file (an upper bound on its points, with the header), counted
    without parsing it."""
    try:
        lines, last = 0, b"\n"
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                lines, last = lines + chunk.count(b"\n"), chunk[-1:]
        return lines + (last != b"\n")
    except OSError as e:
        raise UserError(f"--points {path} cannot be read ({e.strerror})") from None


__all__ = ["read_points", "parse_extent", "count_rows", "MIN_POINTS", "MIN_SEPARATION"]

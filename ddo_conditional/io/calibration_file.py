"""The file ``<checkpoint>.calibration.json`` that keeps a fitted spread and shrinkage with their model:
the parameters, where and how they were fitted, and the SHA-256 of the checkpoint they were fitted for, so a
calibration never silently applies to other weights. Written atomically; a file that is unreadable or
malformed is refused in one line."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ddo.api import UserError, atomic_write

from ..inference.calibration import PARAMETERS, fit_calibration
from ..inference.shrinkage import FEATURES

SUFFIX = ".calibration.json"
PARAMETER_LIMIT = 1e6  # largest stored parameter: a spread in [0, 1] units scaled further means a broken file


def calibration_path(checkpoint) -> Path:
    """The calibration file of ``checkpoint``: ``RUN_DIR/checkpoint.pt.calibration.json``."""
    return Path(str(checkpoint) + SUFFIX)


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_calibration(checkpoint, fitted: dict, provenance: dict) -> Path:
    """Write ``fitted`` (the three parameters and how they were fitted) and ``provenance`` beside
    ``checkpoint``; returns the path."""
    record = {**fitted, **{k: float(fitted[k]) for k in PARAMETERS}, **provenance,
              "checkpoint_sha256": file_sha256(checkpoint)}
    _check(record, "the fitted calibration")
    path = calibration_path(checkpoint)
    atomic_write(path, lambda f: f.write((json.dumps(record, indent=2) + "\n").encode()))
    return path


def load_calibration(checkpoint) -> dict | None:
    """The calibration stored for ``checkpoint``, or ``None`` when there is none. Refused (one line) when
    the file is malformed or was fitted for other weights."""
    path = calibration_path(checkpoint)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable calibration ({e}); run `ddo calibrate` again or delete it") from None
    _check(record, str(path))
    if record.get("checkpoint_sha256") != file_sha256(checkpoint):
        raise UserError(f"{path} was fitted for other weights than {checkpoint}; run `ddo calibrate` again "
                        "or delete it")
    return record


def _check(record, where: str) -> None:
    if not isinstance(record, dict):
        raise UserError(f"{where} is malformed: expected a JSON object; run `ddo calibrate` again or delete it")
    sh = record.get("shrinkage")
    if sh is not None and not (isinstance(sh, dict) and isinstance(sh.get("feature"), str) and sh["feature"] in FEATURES
                               and all(_number_within(sh.get(k), -PARAMETER_LIMIT) for k in ("a", "b", "center"))):
        raise UserError(f"{where} is malformed: its shrinkage needs a known feature and finite a, b, center; "
                        "run `ddo calibrate` again or delete it")
    for key in PARAMETERS:
        value = record.get(key)
        if not _number_within(record.get(key), 0.0):
            raise UserError(f"{where} is malformed: {key} must be a number from 0 to {PARAMETER_LIMIT:g}, got "
                            f"{str(value)[:40]}; run `ddo calibrate` again or delete it")


def _number_within(value, lowest: float) -> bool:
    """A JSON number in ``[lowest, PARAMETER_LIMIT]`` (comparisons only: NaN fails them, and an integer
    too large for a float does not overflow)."""
    return isinstance(value, (int, float)) and lowest <= value <= PARAMETER_LIMIT


def calibrate_and_save(checkpoint, reconstructor, wrapper, base, fitted_on: str, limit: int, shrinkage_limit: int) -> tuple:
    """Fit the spread calibration of ``reconstructor`` on ``limit`` images of ``base`` (and, when
    ``fitted_on`` names a split other than train, the shrinkage on ``shrinkage_limit`` of them) and store
    it beside ``checkpoint`` with where and how it was fitted; returns ``(fitted, path)``."""
    held_out = not fitted_on.endswith("/train")
    fitted = fit_calibration(reconstructor, wrapper, base, limit, held_out=held_out, shrinkage_limit=shrinkage_limit)
    path = save_calibration(checkpoint, fitted, {"fitted_on": fitted_on, "fitted_sampler": reconstructor.plan.sampler_name})
    return fitted, path


__all__ = ["calibration_path", "file_sha256", "save_calibration", "load_calibration", "calibrate_and_save"]

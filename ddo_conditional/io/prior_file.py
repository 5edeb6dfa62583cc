"""The file ``<checkpoint>.prior-<dataset>-<resolution>.pt`` that keeps a Gaussian prior of training fields
beside its model: the prior (:func:`~ddo_conditional.classical.gaussian_prior.prior_state`), the data and resolution it was
fitted on, and the SHA-256 of the checkpoint it belongs to, so a prior never silently serves other
weights. Written atomically; read with ``weights_only``; a file that is unreadable, malformed or fitted
for another checkpoint is refused in one line."""
from __future__ import annotations

import io
from pathlib import Path

import torch
from ddo.api import UserError, atomic_write

from ..classical.gaussian_prior import PRIOR_IMAGES, fit_prior, prior_from_state, prior_state
from ..data.datasets import training_fields
from .calibration_file import file_sha256


def prior_path(checkpoint, resolution: int, dataset: str) -> Path:
    return Path(f"{checkpoint}.prior-{dataset}-{int(resolution)}.pt")


def save_prior(checkpoint, resolution: int, prior, provenance: dict) -> Path:
    """Store ``prior`` (fitted at ``resolution``) beside ``checkpoint`` with ``provenance`` (its ``dataset`` and
    ``fitted_on``: the data it was fitted on); returns the path."""
    record = {**prior_state(prior), **provenance, "resolution": int(resolution),
              "checkpoint_sha256": file_sha256(checkpoint)}
    buf = io.BytesIO()
    torch.save(record, buf)
    path = prior_path(checkpoint, resolution, provenance["dataset"])
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def load_prior(checkpoint, resolution: int, dataset: str, fitted_on: str):
    """``(prior, record)`` stored for ``checkpoint`` at ``resolution`` from ``dataset``, or ``None`` when there is
    none; refused (one line) when it was fitted on other data (``fitted_on``) or for other weights."""
    path = prior_path(checkpoint, resolution, dataset)
    if not path.exists():
        return None
    fix = "delete it to fit the prior again"
    try:
        record = torch.load(path, weights_only=True)
        prior = prior_from_state(record)
    except Exception as e:  # unpickling refuses anything but tensors and plain values
        raise UserError(f"{path} is not a readable Gaussian prior ({str(e).splitlines()[0][:80]}); {fix}") from None
    if record.get("checkpoint_sha256") != file_sha256(checkpoint):
        raise UserError(f"{path} was fitted for other weights than {checkpoint}; {fix}")
    if record.get("fitted_on") != fitted_on:
        raise UserError(f"{path} was fitted on {record.get('fitted_on')}, not {fitted_on}; {fix}")
    if (prior.h, prior.w) != (resolution, resolution):
        raise UserError(f"{path} holds a {prior.h}x{prior.w} prior, not {resolution}x{resolution}; {fix}")
    return prior, record


def fit_and_save_prior(checkpoint, train, resolution: int, dataset: str, fitted_on: str):
    """Fit the Gaussian prior of the training dataset ``train`` (its first :data:`PRIOR_IMAGES` images at
    ``resolution``; stationary on the torus where its field record says ``periodic``) and store it beside
    ``checkpoint`` as ``dataset``'s, ``fitted_on`` naming the data; returns it."""
    images = min(len(train), PRIOR_IMAGES)
    periodic = bool((getattr(train, "field", None) or {}).get("periodic"))
    prior = fit_prior(training_fields(train, images), periodic)
    save_prior(checkpoint, resolution, prior, {"dataset": dataset, "fitted_on": fitted_on, "images": images})
    return prior


__all__ = ["prior_path", "save_prior", "load_prior", "fit_and_save_prior", "PRIOR_IMAGES"]

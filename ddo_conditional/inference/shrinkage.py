"""Do no harm: a per-image shrinkage of the model's correction toward the interpolation it refines.

``shrunk = dense + w (x0 - dense)`` with ``w = clip(a + b (f - center), 0, 1)`` per image, where
``dense`` is the interpolation the network refines (``context_dense``, e.g. biharmonic), ``x0`` the
model's posterior-mean estimate and ``f`` a feature known at test time:

- ``"none"``: ``f = 0`` (one global weight ``a``);
- ``"roughness"``: ``log r``, ``r`` the leave-one-out interpolation error of the context;
- ``"disagreement"``: ``log(d / c)``, ``d`` the RMS spread of the 8 rotated/flipped estimates and
  ``c`` the RMS size of the correction ``x0 - dense``: how much of the correction the network
  cannot agree on with itself.

:func:`fit_shrinkage` chooses the feature and ``(a, b)`` by grid search of mean query PSNR on
held-out images (a validation split), never on the images it is scored on. A rule that gains less
than :data:`MIN_GAIN_DB` there is not kept (``w = 1``): a smaller gain is within what one validation
photograph resolves, and fitted noise costs on other photographs (benchmarks/README.md).
"""
from __future__ import annotations

import numpy as np
import torch

from .metrics import psnr

FEATURES = ("none", "roughness", "disagreement")
MIN_GAIN_DB = 0.02
A_GRID = np.round(np.linspace(0.0, 1.5, 31), 3)
B_GRID = np.round(np.linspace(-1.0, 1.0, 21), 3)


def features(x0: torch.Tensor, spread: torch.Tensor, dense: torch.Tensor, roughness: torch.Tensor) -> dict:
    """Per-image features ``(B,)`` of :data:`FEATURES` from ``x0``, the estimates' ``spread`` and
    ``dense`` (``(B, C, H, W)``, one value scale) and the context ``roughness (B,)``."""
    def rms(t):
        return t.flatten(1).pow(2).mean(1).sqrt()

    return {"none": torch.zeros_like(roughness), "roughness": roughness.clamp_min(1e-6).log(),
            "disagreement": (rms(spread).clamp_min(1e-6) / rms(x0 - dense).clamp_min(1e-6)).log()}


def kept(fitted: dict | None) -> dict | None:
    """The fitted rule when :func:`fit_shrinkage` kept one, else ``None`` (nothing to apply)."""
    return None if not fitted or "rejected" in fitted else fitted


def weights(feature: torch.Tensor, params: dict) -> torch.Tensor:
    """``w = clip(a + b (f - center), 0, 1)``, ``(B,)``."""
    return (params["a"] + params["b"] * (feature - params["center"])).clamp(0.0, 1.0)


def shrink(x0: torch.Tensor, dense: torch.Tensor, feats: dict, params: dict) -> torch.Tensor:
    w = weights(feats[params["feature"]], params).to(x0.dtype)
    return dense + w.view(-1, *([1] * (x0.dim() - 1))) * (x0 - dense)


def fit_shrinkage(x0, dense, truth, qmask, feats: dict) -> dict:
    """The feature and ``(a, b)`` that maximise the mean query PSNR of :func:`shrink` on these images
    (``[0, 1]`` units), with ``center`` the feature's median there; ``gain_db``: that mean minus the
    unshrunk estimate's. Below :data:`MIN_GAIN_DB` the identity (``feature "none", a = 1``) is
    returned, with the rejected rule under ``"rejected"``."""
    base = float(psnr(x0, truth, qmask).mean())
    best = {"feature": "none", "a": 1.0, "b": 0.0, "center": 0.0, "mean_psnr": base}
    for name in FEATURES:
        f = feats[name]
        center = float(f.median())
        for a in A_GRID:
            for b in (B_GRID if name != "none" else (0.0,)):
                params = {"feature": name, "a": float(a), "b": float(b), "center": center}
                score = float(psnr(shrink(x0, dense, feats, params), truth, qmask).mean())
                if score > best["mean_psnr"] + 1e-9:
                    best = {**params, "mean_psnr": score}
    fitted = {**best, "gain_db": best["mean_psnr"] - base, "fitted_images": int(x0.shape[0])}
    if fitted["gain_db"] < MIN_GAIN_DB:
        return {"feature": "none", "a": 1.0, "b": 0.0, "center": 0.0, "mean_psnr": base, "gain_db": 0.0,
                "fitted_images": fitted["fitted_images"], "rejected": fitted}
    return fitted

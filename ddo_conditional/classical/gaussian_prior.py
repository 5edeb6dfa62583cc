"""Gaussian priors of training fields, as the product uses them: fitted (stationary on the torus for periodic
fields, else the sample covariance), stored as plain tensors or as buffers of a network (saved with its
checkpoint), and conditioned on images as the ``kriging`` baseline (posterior mean and pointwise std)."""
from __future__ import annotations

import torch

from .kriging import EmpiricalGaussian, TorusGaussian, krige_with_std

PRIOR_IMAGES = 4096  # training images a Gaussian prior is fitted on, at most (the first of the split)
PRIOR_JITTER = 1e-6  # kriging's relative nugget in the baseline (benchmarks/gaussian_prior.py's measured setting)


def fit_prior(fields: torch.Tensor, periodic: bool):
    """The Gaussian prior of training ``fields (n, C, H, W)``: stationary on the torus for ``periodic``
    fields (:class:`TorusGaussian`, its mean kept to wavenumbers up to 4), else their mean and sample
    covariance (:class:`EmpiricalGaussian`)."""
    return TorusGaussian.fit(fields, mean_modes=4) if periodic else EmpiricalGaussian.fit(fields)


def prior_state(model) -> dict:
    """A prior as plain tensors and a kind, for ``torch.save`` (and ``torch.load(weights_only=True)``)."""
    if isinstance(model, TorusGaussian):
        return {"kind": "torus", "mean": model.mean, "cov": model.cov}
    return {"kind": "empirical", "mean": model.mean_, "centred": model.centred}


def prior_from_state(state: dict):
    """The prior :func:`prior_state` wrote; ``ValueError`` for anything else."""
    kinds = {"torus": (TorusGaussian, "cov"), "empirical": (EmpiricalGaussian, "centred")}
    if not isinstance(state, dict) or state.get("kind") not in kinds:
        raise ValueError("not a Gaussian prior (expected kind 'torus' or 'empirical')")
    cls, second = kinds[state["kind"]]
    mean, other = state.get("mean"), state.get(second)
    if not (torch.is_tensor(mean) and torch.is_tensor(other) and mean.dim() == 3):
        raise ValueError(f"a {state['kind']} prior needs tensors mean (C, H, W) and {second}")
    return cls(mean, other)


class PriorModule(torch.nn.Module):
    """A Gaussian prior held as buffers of a network (float64), so that it is saved in its checkpoint and
    restored with its weights bit for bit. Empty until :meth:`set`; loading a state dict takes the stored
    prior whatever its kind and size. :meth:`at` gives it on any grid (resampled once per size)."""

    KINDS = ("none", "torus", "empirical")

    def __init__(self):
        super().__init__()
        self.register_buffer("kind", torch.zeros((), dtype=torch.long))
        self.register_buffer("mean", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("second", torch.zeros(0, dtype=torch.float64))
        self._grids: dict = {}

    @property
    def empty(self) -> bool:
        return int(self.kind) == 0

    def set(self, prior) -> None:
        state = prior_state(prior)
        self.kind = torch.tensor(self.KINDS.index(state["kind"]), device=self.kind.device)
        self.mean = state["mean"].to(self.kind.device)
        self.second = state["cov" if state["kind"] == "torus" else "centred"].to(self.kind.device)
        self._grids = {}

    def at(self, h: int, w: int):
        """The prior on an ``h x w`` grid (CPU, float64)."""
        if self.empty:
            raise ValueError("the network's Gaussian prior was never fitted (train the model, or load its checkpoint)")
        if (h, w) not in self._grids:
            kind = self.KINDS[int(self.kind)]
            second = "cov" if kind == "torus" else "centred"
            state = {"kind": kind, "mean": self.mean.cpu(), second: self.second.cpu()}
            self._grids[(h, w)] = prior_from_state(state).resampled(h, w)
        return self._grids[(h, w)]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("kind", "mean", "second"):  # the stored prior's sizes, whatever this module held
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        self._grids = {}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def krige_contexts(model, contexts, jitter: float = PRIOR_JITTER) -> tuple[torch.Tensor, torch.Tensor]:
    """Every channel of each image conditioned on all its channels at its context pixels: ``contexts`` holds
    per image ``(pixels (K,), values (K, C))`` in the prior's units (a repeated pixel is used once); the
    posterior means and pointwise stds, each ``(B, C, H, W)`` float64 on the CPU."""
    means, stds = [], []
    for pixels, values in contexts:
        pixels, values = pixels.long().cpu(), values.double().cpu()
        c = values.shape[1]
        mean, std = krige_with_std(model, torch.arange(c).repeat_interleave(len(pixels)), pixels.repeat(c),
                                   values.T.flatten(), jitter=jitter)
        means.append(mean)
        stds.append(std)
    return torch.stack(means), torch.stack(stds)


def krige_images(model, images01: torch.Tensor, context_indices: torch.Tensor,
                 jitter: float = PRIOR_JITTER) -> tuple[torch.Tensor, torch.Tensor]:
    """The kriging baseline: :func:`krige_contexts` of images ``(B, C, H, W)`` in ``[0, 1]`` at their context
    pixels, under a prior of fields in ``[-1, 1]``; the posterior mean (clamped to ``[0, 1]``) and its
    pointwise std, in ``[0, 1]`` units."""
    fields = 2 * images01.double().cpu() - 1
    contexts = [(idx, img.flatten(1)[:, idx.long()].T) for img, idx in zip(fields, context_indices.cpu())]
    mean, std = krige_contexts(model, contexts, jitter)
    back = {"device": images01.device, "dtype": images01.dtype}
    return ((mean + 1) / 2).clamp(0, 1).to(**back), (std / 2).to(**back)


__all__ = ["PRIOR_IMAGES", "PRIOR_JITTER", "fit_prior", "prior_state", "prior_from_state", "PriorModule",
           "krige_contexts", "krige_images"]

"""Batches of a masked dataset with the model's estimates computed once, on first use.

:func:`batches` is the one loop over a :class:`~ddo_conditional.data.datasets.FixedSparseMaskDataset`
that evaluation and calibration share: each :class:`Batch` holds the truth and masks, the network
kwargs, and (lazily, timed) the :class:`~ddo_conditional.inference.reconstruct.Reconstructor`'s samples and
posterior-mean estimate, so that every method reading them shares one computation.
"""
from __future__ import annotations

import time
from functools import cached_property

import torch
from ddo.api import progress_bar
from torch.utils.data import DataLoader, Subset

from ..data.datasets import context_tensors, create_query_mask_batched
from ..nn.refiners import NormalizedConvolution
from .reconstruct import Reconstructor, Samples


class Batch:
    """One collated batch: ``truth (B, C, H, W)`` in ``[0, 1]``, ``query_mask (B, 1, H, W)``,
    ``context`` (``context_image``, ``observation_mask``), the network ``kwargs`` and the images'
    global ``indices``; :attr:`samples` and :attr:`x0` (in ``[0, 1]``) are computed on first use,
    their seconds added to :attr:`model_seconds`."""

    def __init__(self, items: dict, wrapper, reconstructor: Reconstructor):
        device = reconstructor.device
        x = items["image"].to(device)
        self.items, self.reconstructor = items, reconstructor
        self.truth = (x + 1) / 2
        self.query_mask = create_query_mask_batched(items["query_indices"].to(device), *x.shape[-2:], x.dtype)
        self.context = context_tensors(items, device)
        self.indices = [int(i) for i in items["index"]]
        self.model_seconds = 0.0
        t0 = time.perf_counter()
        self.kwargs = wrapper.model_kwargs(items, device)
        self.model_seconds += time.perf_counter() - t0

    @property
    def shape(self):
        return self.truth.shape

    @cached_property
    def samples(self) -> Samples:
        """The plan's samples in ``[0, 1]`` (std in the same units)."""
        t0 = time.perf_counter()
        observation = (self.context["context_image"], self.context["observation_mask"])
        out = self.reconstructor.samples(self.kwargs, self.shape, self.indices, observation)
        self.model_seconds += time.perf_counter() - t0
        return Samples((out.samples + 1) / 2, (out.mean + 1) / 2, out.std / 2)

    @cached_property
    def x0(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior-mean estimate ``ddo-x0`` in ``[0, 1]`` and the spread of the estimates it averages."""
        t0 = time.perf_counter()
        mean, spread = self.reconstructor.posterior_mean(self.kwargs, self.shape, self.indices)
        self.model_seconds += time.perf_counter() - t0
        return (mean + 1) / 2, spread / 2

    @cached_property
    def roughness(self) -> torch.Tensor:
        """Per-image ``(B,)`` leave-one-out interpolation error of the context in ``[0, 1]`` units
        (:meth:`NormalizedConvolution.loo_rms`): how hard the image is to know from its context."""
        loo = NormalizedConvolution().to(self.truth.device)
        return loo.loo_rms(self.context["context_image"], self.context["observation_mask"]) / 2

    @cached_property
    def dense(self) -> torch.Tensor:
        """The interpolation the network refines (``context_dense``), in ``[0, 1]``."""
        if self.kwargs.get("context_dense") is None:
            raise ValueError("a shrinkage toward the interpolation needs a model that refines one (context_dense)")
        return ((self.kwargs["context_dense"] + 1) / 2).clamp(0, 1)


def batches(dataset, wrapper, reconstructor: Reconstructor, limit: int | None = None, desc: str = "evaluate"):
    """:class:`Batch` es of the first ``limit`` images of ``dataset``, ``reconstructor.plan.rows``
    images at a time, with a progress bar when the plan asks for one."""
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    if len(dataset) == 0:
        raise ValueError("no images to evaluate")
    bar = progress_bar(total=len(dataset), desc=desc, enabled=reconstructor.plan.progress)
    # at most the dataset's length per batch: a DataLoader refuses batch sizes beyond sys.maxsize
    for items in DataLoader(dataset, batch_size=min(reconstructor.plan.rows, len(dataset)), shuffle=False):
        yield Batch(items, wrapper, reconstructor)
        bar.update(items["image"].shape[0])
    bar.close()


__all__ = ["Batch", "batches"]

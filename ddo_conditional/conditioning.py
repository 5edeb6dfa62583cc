"""The ``--conditioning`` registry entries: dataset wrapping, model wrapping, per-batch kwargs."""
from __future__ import annotations

import logging

from ddo.builtins import ModelWrapper
from ddo.config import DEFAULTS as _DIFFUSION_DEFAULTS

from .datasets import AUGMENTATIONS, BiharmonicContext, DihedralAugment, FixedSparseMaskDataset, context_tensors
from .masks import PATTERNS, MaskError, mask_counts
from .models import (RESIDUAL_SCALES, ConditionalDDOModel, ConditionalDDOModelSimple, ConditionalLiftModel,
                     SparseInterpModel)
from .precondition import PARAMETERIZATIONS, Preconditioned

log = logging.getLogger("ddo_conditional")

MASK_DEFAULTS = {"context_ratio": 0.1, "query_ratio": 0.1, "mask_seed": 42, "mask_pattern": "random",
                 "context_feature_dim": 32, "parameterization": "eps", "refiner_width": 0,
                 "residual_scale": "none", "augment": "none"}


class SparseConditioning(ModelWrapper):
    """Fixed sparse masks on the data and the context image as a network input."""

    needs = ("context_image",)
    needs_inputs = True

    def __init__(self, config: dict | None = None):
        super().__init__(config)
        cfg = {k: (self.config_.get(k) if self.config_.get(k) is not None else v) for k, v in MASK_DEFAULTS.items()}
        self.context_ratio, self.query_ratio = float(cfg["context_ratio"]), float(cfg["query_ratio"])
        self.mask_seed, self.mask_pattern = int(cfg["mask_seed"]), cfg["mask_pattern"]
        self.context_feature_dim = int(cfg["context_feature_dim"])
        self.refiner_width = int(cfg["refiner_width"])
        self.residual_scale = cfg["residual_scale"]
        if self.residual_scale not in RESIDUAL_SCALES:
            raise ValueError(f"unknown residual scale {self.residual_scale!r}; known: {', '.join(RESIDUAL_SCALES)}")
        self.augment = cfg["augment"]
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augment!r}; known: {', '.join(AUGMENTATIONS)}")
        self.seed = int(self.config_.get("seed", 0))
        self.channels = int(self.config_.get("channels", 3))
        self.parameterization = cfg["parameterization"]
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {self.parameterization!r}; known: {', '.join(PARAMETERIZATIONS)}")
        if self.mask_pattern not in PATTERNS:
            raise MaskError(f"unknown mask pattern {self.mask_pattern!r}; known: {', '.join(PATTERNS)}")
        if self.mask_seed < 0:
            raise MaskError(f"mask seed must be non-negative, got {self.mask_seed}")
        res = int(self.config_.get("resolution", 32))
        mask_counts(res, res, self.context_ratio, self.query_ratio)

    def mask_dataset(self, dataset, **overrides) -> FixedSparseMaskDataset:
        kw = {"context_ratio": self.context_ratio, "query_ratio": self.query_ratio, "seed": self.mask_seed,
              "pattern": self.mask_pattern}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return self.decorate(FixedSparseMaskDataset(dataset, **kw))

    def decorate(self, dataset):
        """Hook for subclasses that add per-item inputs computed from the context."""
        return dataset

    def wrap_dataset(self, dataset, split: str):
        masked = self.mask_dataset(dataset)
        if split == "train" and self.augment == "dihedral":
            return DihedralAugment(masked, self.seed)
        return masked

    def model_kwargs(self, batch: dict, device) -> dict:
        ctx = context_tensors(batch, device)
        if "context_dense" in batch:
            ctx["context_dense"] = batch["context_dense"].to(device)
        if log.isEnabledFor(logging.DEBUG):
            b, c = ctx["context_image"].shape[:2]
            observed = int(ctx["observation_mask"].sum().item()) * c
            log.debug("context: %d observed entries in the batch (%d images x %d pixels x %d channels)",
                      observed, b, batch["context_indices"].shape[1], c)
        return {k: ctx[k] for k in self.needs}

    def config(self) -> dict:
        return {"context_ratio": self.context_ratio, "query_ratio": self.query_ratio, "mask_seed": self.mask_seed,
                "mask_pattern": self.mask_pattern, "context_feature_dim": self.context_feature_dim,
                "parameterization": self.parameterization, "refiner_width": self.refiner_width,
                "residual_scale": self.residual_scale, "augment": self.augment}

    def build_model(self, make_base):
        from ddo.train import make_forward_diffusion

        inner = self.build_inner(make_base)
        if self.parameterization == "eps":
            return inner
        return Preconditioned(inner, make_forward_diffusion({**_DIFFUSION_DEFAULTS, **self.config_}),
                              self.parameterization)

    def build_inner(self, make_base):
        raise NotImplementedError


class EncoderConditioning(SparseConditioning):
    """``sparse-encoder``: :class:`ConditionalDDOModel`."""

    def build_inner(self, make_base):
        return ConditionalDDOModel(make_base(), input_dim=self.channels, context_feature_dim=self.context_feature_dim)


class ConcatConditioning(SparseConditioning):
    """``sparse-concat``: :class:`ConditionalDDOModelSimple`."""

    def build_inner(self, make_base):
        return ConditionalDDOModelSimple(make_base(), input_dim=self.channels)


class LiftConditioning(SparseConditioning):
    """``sparse-lift``: :class:`ConditionalLiftModel` (context and mask into the lifting layer)."""

    needs = ("context_image", "observation_mask")

    def build_inner(self, make_base):
        return ConditionalLiftModel(make_base(), input_dim=self.channels)


class InterpConditioning(SparseConditioning):
    """``sparse-interp``: :class:`SparseInterpModel` (interpolated context; residual with ``x0``)."""

    needs = ("context_image", "observation_mask")

    def build_inner(self, make_base):
        return SparseInterpModel(make_base(), input_dim=self.channels, refiner_width=self.refiner_width,
                                 residual_scale=self.residual_scale)


class BiharmonicInterpConditioning(InterpConditioning):
    """``sparse-biharmonic``: :class:`SparseInterpModel` refining the biharmonic inpainting of the
    context (computed once per image by the dataset) instead of the normalised convolution."""

    needs = ("context_image", "observation_mask", "context_dense")

    def decorate(self, dataset):
        return BiharmonicContext(dataset)


WRAPPERS = {"sparse-encoder": EncoderConditioning, "sparse-concat": ConcatConditioning,
            "sparse-lift": LiftConditioning, "sparse-interp": InterpConditioning,
            "sparse-biharmonic": BiharmonicInterpConditioning}

"""Conditional sparse reconstruction for DDO: a plugin found through the ``ddo`` entry point.

Importing this package registers nothing; ``ddo`` loads :mod:`ddo_conditional.plugin` through its
entry point. The public API:
"""
from .data.datasets import (FixedSparseMaskDataset, create_context_image_batched, create_observation_mask_batched,
                            create_query_mask_batched)
from .data.masks import PATTERNS, fixed_mask
from .inference.reconstruct import Reconstructor, SamplingPlan, reconstruct
from .nn.conditional_model import ConditionalDDOModel, ConditionalDDOModelSimple, ConditionalLiftModel

__all__ = ["FixedSparseMaskDataset", "create_context_image_batched", "create_query_mask_batched",
           "create_observation_mask_batched", "fixed_mask", "PATTERNS", "ConditionalDDOModel",
           "ConditionalDDOModelSimple", "ConditionalLiftModel", "reconstruct", "Reconstructor", "SamplingPlan"]

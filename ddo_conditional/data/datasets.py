"""The fixed-mask dataset and the batched scatters that turn sparse points into images."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .masks import (OBSERVE_RULES, PATTERNS, MaskError, fixed_mask, image_ratio, mask_counts, observed_channels,
                    ratio_range)
from .points import bilinear, cell_coords

VALUE_RANGES = ("auto", "0,1", "-1,1")
POINT_COORDS = ("none", "grid", "jitter")


def as_item(item, position: int, value_range: str = "auto") -> dict:
    """One dataset item as ``{"image": (C, H, W) float in [-1, 1], "index": int, ...}``.

    Accepted items: dicts with ``image`` (and ``index``), ``(image, label, ...)`` tuples as torchvision
    datasets return them, bare tensors, and PIL images (converted as ``ToTensor`` does). The index is
    the item's own ``index``, else ``position``. Pixel values, one rule: dicts follow ddo's convention
    (``[-1, 1]``); tuples, tensors and PIL images follow torchvision's (``[0, 1]``, mapped to ``[-1, 1]``
    by ``2 x - 1``). ``value_range="0,1"`` or ``"-1,1"`` says it for every item instead.
    """
    if isinstance(item, dict):
        out, native = dict(item), "-1,1"
    elif isinstance(item, (tuple, list)):
        out, native = {"image": item[0], "label": item[1]} if len(item) > 1 else {"image": item[0]}, "0,1"
    else:
        out, native = {"image": item}, "0,1"
    image = out["image"]
    if not torch.is_tensor(image):
        image = _pil_to_tensor(image)
    image = image.float()
    if image.ndim == 2:
        image = image[None]
    if (native if value_range == "auto" else value_range) == "0,1":
        image = image * 2 - 1
    out["image"] = image
    out["index"] = int(out.get("index", position))
    return out


def _pil_to_tensor(image) -> torch.Tensor:
    """A PIL image as ``ToTensor`` gives it: ``(C, H, W)`` float in ``[0, 1]``."""
    try:
        array = np.array(image)
    except Exception:
        array = None
    if array is None or array.dtype == object or array.ndim not in (2, 3):
        raise TypeError(f"dataset items must hold an image tensor or a PIL image, got {type(image).__name__}")
    array = array[..., None] if array.ndim == 2 else array
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / scale


class FixedSparseMaskDataset(Dataset):
    """Adds a fixed context/query mask to every item of a map-style ``dataset``.

    Items may be dicts, ``(image, label)`` tuples (torchvision datasets), tensors or PIL images
    (:func:`as_item` states the pixel-range rule). The mask of an item is
    :func:`~ddo_conditional.data.masks.fixed_mask` of its global index, so it is the same in every epoch
    and process. Items become dicts with ``image (C, H, W)`` in ``[-1, 1]``, ``index``,
    ``context_indices (K,)``, ``context_values (K, C)``, ``context_count`` (the number of distinct context
    pixels), ``query_indices (Q,)`` and ``query_values (Q, C)``.

    ``context_ratio`` may be a range ``"lo:hi"`` (:func:`~ddo_conditional.data.masks.ratio_range`): each image
    then has its own ratio (:func:`~ddo_conditional.data.masks.image_ratio`), and its ``context_count`` real
    context pixels come first in arrays of the range's largest count ``K``, padded by repeating the first
    pixel (index and value), so that batches collate and scatters into an image are unchanged; whatever
    needs distinct points reads ``context_count`` (or ``context_valid``, ``False`` on the padding).

    ``coords`` adds the context as a point set (:mod:`ddo_conditional.data.points`): ``context_coords (K, 2)``,
    ``context_point_values (K, C)`` and ``context_valid (K,)``. ``"grid"``: the centres of the context
    pixels (the values are the pixels'); ``"jitter"``: each point moved to a fixed random position
    inside its pixel's cell (a function of seed and index, like the mask), its value read from the
    image there by bilinear interpolation.

    ``observe`` (field pairs; :mod:`~ddo_conditional.data.masks`): which channels the context pixels observe.
    Other than ``"all"``, items gain ``context_channels (C,)`` (1 on the observed channels) and the
    unobserved channels' context values are zero.
    """

    def __init__(self, dataset, context_ratio: float = 0.1, query_ratio: float = 0.1, seed: int = 42,
                 pattern: str = "random", value_range: str = "auto", coords: str = "none", observe: str = "all"):
        if pattern not in PATTERNS:
            raise MaskError(f"unknown mask pattern {pattern!r}; known: {', '.join(PATTERNS)}")
        if seed < 0:
            raise MaskError(f"mask seed must be non-negative, got {seed}")
        if value_range not in VALUE_RANGES:
            raise ValueError(f"unknown value range {value_range!r}; known: {', '.join(VALUE_RANGES)}")
        if coords not in POINT_COORDS:
            raise ValueError(f"unknown context coordinates {coords!r}; known: {', '.join(POINT_COORDS)}")
        if observe not in OBSERVE_RULES:
            raise ValueError(f"unknown observation rule {observe!r}; known: {', '.join(OBSERVE_RULES)}")
        self.dataset, self.value_range, self.coords, self.observe = dataset, value_range, coords, observe
        self.context_ratio, self.query_ratio, self.seed, self.pattern = context_ratio, query_ratio, seed, pattern
        self.ratio_range = ratio_range(context_ratio)
        self._masks: dict = {}  # (index, h, w) -> (context, query) int32 indices: computed once per image
        if len(dataset):
            self[0]  # validates the ratios against the image size once, early

    def __len__(self) -> int:
        return len(self.dataset)

    def mask(self, index: int, h: int, w: int):
        """``(context indices (K,), query indices (Q,), count)``: the first ``count`` context indices are
        the image's own, the rest repeat the first (a ratio range; see the class docstring)."""
        key = (index, h, w)
        if key not in self._masks:
            lo, hi = self.ratio_range
            k_max, _ = mask_counts(h, w, hi, self.query_ratio)
            ratio = max(image_ratio(self.seed, index, lo, hi), 1.0 / (h * w))  # at least one context pixel
            ctx, qry = fixed_mask(self.seed, index, h, w, ratio, self.query_ratio, self.pattern)
            count = len(ctx)
            ctx = np.concatenate([ctx, np.full(k_max - count, ctx[0])])
            self._masks[key] = (ctx.astype(np.int32), qry.astype(np.int32), count)
        ctx, qry, count = self._masks[key]
        return torch.from_numpy(ctx).long(), torch.from_numpy(qry).long(), count

    def point_coords(self, index: int, h: int, w: int, context: torch.Tensor) -> torch.Tensor:
        """``(K, 2)`` coordinates of the context points of image ``index`` (see the class docstring)."""
        offsets = None
        if self.coords == "jitter":
            offsets = np.random.default_rng([self.seed, index, h, w, 0x1177]).random((len(context), 2))
        return torch.from_numpy(cell_coords(context.numpy(), h, w, offsets)).float()

    def __getitem__(self, i: int) -> dict:
        item = as_item(self.dataset[i], i, self.value_range)
        image = item["image"]
        c, h, w = image.shape
        ctx, qry, count = self.mask(item["index"], h, w)
        flat = image.reshape(c, h * w)
        item.update(context_indices=ctx, context_values=flat[:, ctx].T.contiguous(), context_count=count,
                    query_indices=qry, query_values=flat[:, qry].T.contiguous())
        if self.observe != "all":
            observed = observed_channels(self.observe, self.seed, item["index"], c)
            item.update(context_channels=observed, context_values=item["context_values"] * observed)
        if self.coords != "none":
            coords = self.point_coords(item["index"], h, w, ctx)
            values = item["context_values"] if self.coords == "grid" else bilinear(image, coords)
            item.update(context_coords=coords, context_point_values=values,
                        context_valid=torch.arange(len(ctx)) < count)
        return item


def create_context_image_batched(values: torch.Tensor, indices: torch.Tensor, h: int, w: int, c: int) -> torch.Tensor:
    """Dense context image ``(B, C, H, W)``: ``values (B, K, C)`` at flat ``indices (B, K)``, zeros elsewhere."""
    b = indices.shape[0]
    out = values.new_zeros(b, c, h * w)
    out.scatter_(2, indices.unsqueeze(1).expand(b, c, -1), values.transpose(1, 2))
    return out.reshape(b, c, h, w)


def create_query_mask_batched(indices: torch.Tensor, h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """Binary mask ``(B, 1, H, W)`` with ones at flat ``indices (B, Q)``."""
    b = indices.shape[0]
    out = torch.zeros(b, 1, h * w, device=indices.device, dtype=dtype)
    out.scatter_(2, indices.unsqueeze(1), 1.0)
    return out.reshape(b, 1, h, w)


def create_observation_mask_batched(indices: torch.Tensor, h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """Binary mask ``(B, 1, H, W)`` of the observed (context) pixels; tells an observed zero from a gap."""
    return create_query_mask_batched(indices, h, w, dtype)


def context_tensors(batch: dict, device=None) -> dict:
    """``context_image (B, C, H, W)`` and ``observation_mask (B, 1, H, W)`` of a collated batch; with
    ``context_channels (B, C)`` (field pairs observed channel by channel) the mask is ``(B, C, H, W)``."""
    image = batch["image"]
    _, c, h, w = image.shape
    idx = batch["context_indices"].to(device)
    vals = batch["context_values"].to(device=device, dtype=image.dtype)
    mask = create_observation_mask_batched(idx, h, w, image.dtype)
    if "context_channels" in batch:
        mask = mask * batch["context_channels"].to(device=device, dtype=image.dtype)[:, :, None, None]
    return {"context_image": create_context_image_batched(vals, idx, h, w, c), "observation_mask": mask}


def context_validity(batch: dict) -> torch.Tensor:
    """``(B, K)``: ``True`` on each image's own context pixels, ``False`` on the padding of a ratio range."""
    idx = batch["context_indices"]
    count = batch.get("context_count")
    if count is None:
        return torch.ones(idx.shape, dtype=torch.bool, device=idx.device)
    return torch.arange(idx.shape[1], device=idx.device) < torch.as_tensor(count, device=idx.device).view(-1, 1)


def training_fields(dataset, limit: int) -> torch.Tensor:
    """The first ``limit`` images of ``dataset`` stacked, ``(n, C, H, W)`` float64 in ``[-1, 1]`` (a Gaussian
    prior's training fields)."""
    n = min(limit, len(dataset))
    return torch.stack([as_item(dataset[i], i)["image"] for i in range(n)]).double()


def own_context(batch: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each image's own context, the padding of a ratio range dropped: ``(indices (K_b,), values (K_b, C))``."""
    idx, vals = batch["context_indices"], batch["context_values"]
    counts = batch.get("context_count", torch.full((len(idx),), idx.shape[1]))
    return [(idx[b, :int(counts[b])], vals[b, :int(counts[b])]) for b in range(len(idx))]
